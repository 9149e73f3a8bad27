"""Matryoshka BatchTopK: the nested-prefix loss against a dense oracle, its prefixes as a
parameter (validated, rounded per size), and its export and import. (SAELens loading the export is
in ``test_sae_io.py``; the planted dictionary and hierarchy in ``test_architectures.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from saeatlas.config import matryoshka_prefixes, validate
from saeatlas.errors import ParamsError
from saeatlas.sae.io import export_sae, load_sae
from saeatlas.sae.model import batch_fvu, build
from saeatlas.sae.train import TensorSource, TrainConfig, make_optimizer, train_sae, training_step

from conftest import REPO
from test_sae import PLANTED_CFG, planted


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_path_equals_dense_reference(apply_b_dec: bool, with_dead: bool) -> None:
    """Loss, code and every parameter's gradient of the ragged, group-by-group path equal plain
    dense autograd of Σ_prefix FVU + AuxK."""
    torch.manual_seed(0)
    sae = build("matryoshka", 16, 96, k=5, prefixes=[6, 24, 48], auxk_k=7, apply_b_dec_to_input=apply_b_dec)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(64, 16) + 2.0
    dead = (torch.arange(96) % 3 == 0) if with_dead else None
    results = []
    for fn in (sae.loss, sae.reference_loss):
        sae.zero_grad()
        out = fn(x, dead)
        out.loss.backward()
        results.append((out.loss.detach(), out.fvu, out.aux, out.code.dense(96).detach(),
                        [p.grad.clone() for p in sae.parameters()]))
    (loss, fvu, aux, code, grads), (r_loss, r_fvu, r_aux, r_code, r_grads) = results
    torch.testing.assert_close((loss, fvu, aux), (r_loss, r_fvu, r_aux))
    torch.testing.assert_close(code, r_code)
    for (name, _), g, r in zip(sae.named_parameters(), grads, r_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5, msg=name)


def test_inner_prefixes_are_what_the_loss_sums() -> None:
    """Recomputed by hand: the loss is Σ over prefix ends m of FVU(x, b_dec + Σ_{i<m} a_i d_i)."""
    torch.manual_seed(1)
    sae = build("matryoshka", 8, 32, k=3, prefixes=[4, 16], auxk_alpha=0.0)
    x = torch.randn(40, 8)
    out = sae.loss(x)
    dense = out.code.dense(32).detach()
    by_hand = sum(batch_fvu(x, x - (dense[:, :m] @ sae.decoder[:m].detach() + sae.b_dec.detach()))
                  for m in (4, 16, 32))
    torch.testing.assert_close(out.loss.detach(), by_hand)


def test_prefixes_follow_the_fractions_and_bad_ones_are_refused() -> None:
    assert matryoshka_prefixes([0.0625, 0.125, 0.25, 0.5], 1152) == [72, 144, 288, 576]
    assert TrainConfig(architecture="matryoshka", n_latents=2304).sae_options()["prefixes"] == [144, 288, 576, 1152]
    with pytest.raises(ValueError, match="strictly increasing"):
        build("matryoshka", 8, 32, k=3, prefixes=[16, 4])
    with pytest.raises(ValueError, match="each in 1..31"):
        build("matryoshka", 8, 32, k=3, prefixes=[4, 32])
    with pytest.raises(ValueError, match="at n=64 the fractions"):
        matryoshka_prefixes([0.001, 0.5], 64)  # rounds to an empty first prefix


def test_params_validate_the_fractions_naming_the_key() -> None:
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw["sae"]["architectures"] = ["topk", "matryoshka"]
    assert validate(raw)["sae"]["matryoshka_fractions"] == [0.0625, 0.125, 0.25, 0.5]
    for bad, message in (([0.5, 0.25], "sae.matryoshka_fractions: at n="),
                         ([0.25, 1.0], "sae.matryoshka_fractions"),
                         ([0.25, 0.2501], "sae.matryoshka_fractions: at n=")):
        raw["sae"]["matryoshka_fractions"] = bad
        with pytest.raises(ParamsError, match=message):
            validate(raw)
    raw["sae"]["architectures"] = ["topk", "batchtopk"]  # only a study with Matryoshka reads them
    raw["sae"]["matryoshka_fractions"] = [0.5, 0.25]
    validate(raw)


def test_training_keeps_k_times_batch_and_export_round_trips(tmp_path: Path) -> None:
    """A training step keeps k·B codes over the batch (BatchTopK's selection, unchanged by the
    prefixes); the trained SAE exports as SAELens jumprelu with its prefixes in the metadata, and
    the import encodes raw inputs exactly as ours encodes scaled ones."""
    _, x = planted()
    sae = build("matryoshka", 32, 128, k=4, prefixes=[8, 32], auxk_k=16)
    opt = make_optimizer(sae, 2e-3)
    for step in range(5):
        out = training_step(sae, opt, x[step * 256:(step + 1) * 256])
        assert int(out.code.active().sum()) == 4 * 256
    cfg = TrainConfig(architecture="matryoshka", n_latents=128, matryoshka_fractions=(0.0625, 0.25), **PLANTED_CFG)
    trained = train_sae(cfg, TensorSource(x), progress=False).sae.eval()
    assert trained.prefixes == (8, 32) and float(trained.threshold[0]) > 0
    saved = export_sae(trained, tmp_path, 2.0, {})
    assert saved["architecture"] == "jumprelu"
    assert saved["metadata"]["saeatlas_architecture"] == "matryoshka"
    assert saved["metadata"]["matryoshka_prefixes"] == [8, 32] and saved["metadata"]["batchtopk_k"] == 4
    imported, _ = load_sae(tmp_path)
    assert imported.architecture == "matryoshka" and imported.prefixes == (8, 32)
    with torch.no_grad():
        ours, theirs = trained.encode(x[:300]), imported.encode(x[:300] / 2.0)
        torch.testing.assert_close(theirs.dense(128), ours.dense(128), rtol=1e-5, atol=1e-5)
