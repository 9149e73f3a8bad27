"""BatchTopK: the batch-wide selection in training, the learned JumpReLU threshold at inference,
the SAELens JumpReLU export and import, the config key. (The planted dictionary against TopK
is ``test_architectures.py``'s.)
(SAELens itself loading the export is in ``test_sae_io.py``; kill-and-resume in ``test_sae.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from saeatlas.config import validate
from saeatlas.errors import ParamsError
from saeatlas.sae.io import export_sae, load_sae
from saeatlas.sae.model import build
from saeatlas.sae.train import TensorSource, TrainConfig, make_optimizer, train_sae, training_step

from conftest import REPO
from test_sae import PLANTED_CFG, planted


@pytest.fixture(scope="module")
def planted_data() -> tuple[torch.Tensor, torch.Tensor]:
    return planted()


@pytest.fixture(scope="module")
def trained(planted_data) -> dict[str, torch.nn.Module]:
    """A BatchTopK trained briefly on the planted tokens (its threshold and export are tested
    here; how well each architecture recovers the atoms is ``test_architectures.py``'s)."""
    _, x = planted_data
    cfg = TrainConfig(architecture="batchtopk", n_latents=128, **PLANTED_CFG)
    return {"batchtopk": train_sae(cfg, TensorSource(x), progress=False).sae.eval()}


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("with_dead", [False, True])
def test_batchtopk_sparse_path_equals_dense_reference(apply_b_dec: bool, with_dead: bool) -> None:
    torch.manual_seed(0)
    sae = build("batchtopk", 16, 96, k=5, auxk_k=7, apply_b_dec_to_input=apply_b_dec)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(64, 16) + 2.0
    dead = (torch.arange(96) % 3 == 0) if with_dead else None
    grads, losses, codes = [], [], []
    for fn in (sae.loss, sae.reference_loss):
        sae.zero_grad()
        out = fn(x, dead)
        out.loss.backward()
        losses.append((out.loss.detach(), out.aux))
        codes.append(out.code.dense(96).detach())
        grads.append([p.grad.clone() for p in sae.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(codes[0], codes[1])
    assert (losses[0][1] > 0) == with_dead
    for (name, _), g_sparse, g_dense in zip(sae.named_parameters(), grads[0], grads[1]):
        torch.testing.assert_close(g_sparse, g_dense, rtol=1e-4, atol=1e-5, msg=name)


def test_training_keeps_exactly_k_times_batch_per_batch_with_varying_per_token_l0(planted_data) -> None:
    """(a) Every training step's code has k·B nonzeros over the batch, not k per token."""
    _, x = planted_data
    torch.manual_seed(0)
    k, batch = 4, 256
    sae = build("batchtopk", 32, 128, k=k, auxk_k=16)
    opt = make_optimizer(sae, 2e-3)
    per_token_spread = []
    for step in range(20):
        out = training_step(sae, opt, x[step * batch:(step + 1) * batch])
        active = out.code.active()
        assert int(active.sum()) == k * batch, f"step {step}"
        per_token = active.sum(dim=1)
        per_token_spread.append(int(per_token.max() - per_token.min()))
        # no latent is counted twice for one token
        idx = torch.where(active, out.code.indices, -1 - torch.arange(active.shape[1]))
        assert all(len(set(row.tolist())) == len(row) for row in idx)
    assert max(per_token_spread) > 0  # per-token L0 does vary: this is not TopK in disguise


def test_inference_threshold_gives_mean_l0_close_to_k(planted_data, trained) -> None:
    """(b) The JumpReLU threshold learned in training gives, on the training distribution, a mean
    L0 within 5% of k, one global value for all latents, and a per-token L0 that varies."""
    _, x = planted_data
    sae = trained["batchtopk"]
    assert sae.threshold.min() == sae.threshold.max() > 0
    with torch.no_grad():
        code = sae.encode(x)
    l0 = code.active().sum(dim=1).float()
    assert abs(float(l0.mean()) - 4) < 0.2, float(l0.mean())
    assert float(l0.std()) > 0.1
    # the code is z·1[z > θ]: exactly the dense JumpReLU of the pre-activations
    pre = (x - sae.b_dec) @ sae.encoder.t() + sae.b_enc
    torch.testing.assert_close(code.dense(128), pre * (pre > sae.threshold), rtol=1e-5, atol=1e-5)


def test_export_and_import_round_trip_exactly(planted_data, trained, tmp_path: Path) -> None:
    """The export is SAELens' saved BatchTopK: architecture jumprelu, a threshold vector filled
    with our global threshold, no top-level k; our import gives back a batchtopk model with the
    same k and threshold that encodes raw inputs exactly as ours encodes scaled ones."""
    from safetensors.torch import load_file

    _, x = planted_data
    sae, scale = trained["batchtopk"], 2.5
    cfg = export_sae(sae, tmp_path, scale, {"hook_name": "blocks.15.hook_resid_post"})
    assert cfg["architecture"] == "jumprelu" and "k" not in cfg
    assert cfg["metadata"]["batchtopk_k"] == 4 and cfg["metadata"]["saeatlas_architecture"] == "batchtopk"
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert torch.equal(tensors["threshold"], sae.threshold)
    imported, _ = load_sae(tmp_path)
    assert imported.architecture == "batchtopk" and imported.batch_k == 4
    assert torch.equal(imported.threshold, sae.threshold)
    raw = x[:500] / scale
    with torch.no_grad():
        ours, theirs = sae.encode(x[:500]), imported.encode(raw)
        torch.testing.assert_close(theirs.dense(128), ours.dense(128), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(imported.decode(theirs) * scale, sae.decode(ours), rtol=1e-5, atol=1e-5)


def test_a_foreign_jumprelu_sae_imports_for_inference_only(tmp_path: Path) -> None:
    """A JumpReLU folder without our metadata (e.g. a published one) has no k: it encodes with its
    per-latent thresholds, and training it is a clear error."""
    import json

    from safetensors.torch import load_file, save_file

    export_sae(build("batchtopk", 8, 64, k=4), tmp_path, 1.0, {})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["metadata"] = {}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    tensors["threshold"] = torch.linspace(0, 1, 64)
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    sae, _ = load_sae(tmp_path)
    assert sae.batch_k is None and torch.equal(sae.threshold, torch.linspace(0, 1, 64))
    x = torch.randn(10, 8)
    pre = x @ sae.encoder.t() + sae.b_enc - sae.b_dec @ sae.encoder.t()
    torch.testing.assert_close(sae.encode(x).dense(64), torch.relu(pre) * (pre > sae.threshold),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="imported without k"):
        sae.loss(x)


def test_config_accepts_batchtopk_and_names_unknown_architectures() -> None:
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw["sae"]["architectures"] = ["topk", "batchtopk"]
    assert validate(raw)["sae"]["architectures"] == ["topk", "batchtopk"]
    assert TrainConfig(architecture="batchtopk").sae_options()["k"] == TrainConfig().k
    raw["sae"]["architectures"] = ["matryoshka-ish"]
    with pytest.raises(ParamsError, match=r"sae.architectures\[0\]"):
        validate(raw)
    with pytest.raises(ValueError, match="unknown SAE architecture 'matryoshka-ish'"):
        build("matryoshka-ish", 4, 8)


@pytest.mark.parametrize("edit,message", [
    ("no threshold", "missing ['threshold']"),
    ("k too large", "metadata.batchtopk_k: 65 is larger than d_sae 64"),
    ("k not an int", "batchtopk_k: must be a positive integer"),
])
def test_a_damaged_jumprelu_folder_is_an_error_naming_the_field(tmp_path: Path, edit: str, message: str) -> None:
    import json
    import re

    from safetensors.torch import load_file, save_file

    from saeatlas.errors import StoreError

    export_sae(build("batchtopk", 8, 64, k=4), tmp_path, 1.0, {})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    if edit == "no threshold":
        tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
        del tensors["threshold"]
        save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    else:
        cfg["metadata"]["batchtopk_k"] = 65 if edit == "k too large" else "4"
        (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(StoreError, match=re.escape(message)):
        load_sae(tmp_path)


@pytest.mark.parametrize("case", ["plain", "doubled", "full"])
def test_batch_topk_candidate_search_is_exact(case: str) -> None:
    """The per-row candidate search returns the same entries as a top-k over the whole matrix:
    when every row's 4k candidates suffice, when one row needs the candidates doubled (40 > 16
    winners), and when one row wins everything (the full search)."""
    from saeatlas.sae.batchtopk import batch_topk

    g = torch.Generator().manual_seed(0)
    b, n, k = 64, 512, 4
    pre = torch.randn(b, n, generator=g)
    if case == "doubled":
        pre[5, :40] += 10.0
    if case == "full":
        pre[3] += 10.0
    rows, cols, values = batch_topk(pre, k * b, k)
    ref_values, ref_flat = pre.view(-1).topk(k * b)
    assert torch.equal((rows * n + cols).sort().values, ref_flat.sort().values)
    torch.testing.assert_close(values.sort().values, ref_values.sort().values)
    assert torch.equal(pre[rows, cols], values)
    busiest = int(torch.bincount(rows, minlength=b).max())
    assert {"plain": busiest <= 4 * k, "doubled": 40 <= busiest < 16 * k, "full": busiest == k * b}[case]


def test_ragged_kernels_match_dense_products_including_empty_rows() -> None:
    """The CSR kernels BatchTopK's training step uses (a token may have no latent at all)."""
    from saeatlas.sae.sparse import RaggedSelectedPreacts, ragged_bag_sum, ragged_gather_dot, ragged_scatter_outer

    g = torch.Generator().manual_seed(0)
    b, n, d = 9, 30, 7
    counts = torch.tensor([3, 0, 5, 1, 0, 8, 2, 2, 4])
    rows = torch.repeat_interleave(torch.arange(b), counts)
    cols = torch.cat([torch.randperm(n, generator=g)[:int(c)] for c in counts])
    crow = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    w, table, u = torch.randn(len(rows), generator=g), torch.randn(n, d, generator=g), torch.randn(b, d, generator=g)
    dense = torch.zeros(b, n).index_put_((rows, cols), w)
    torch.testing.assert_close(ragged_bag_sum(w, cols, crow, table), dense @ table)
    torch.testing.assert_close(ragged_gather_dot(u, table, cols, crow), (u @ table.t())[rows, cols])
    torch.testing.assert_close(ragged_scatter_outer(w, u, rows, cols, n), dense.t() @ u)
    # the gradient into the input x too (the trainer never asks for it; a probe might)
    x = u.clone().requires_grad_(True)
    b_dec, enc, b_enc = torch.randn(d, generator=g), table.clone().requires_grad_(True), torch.zeros(n)
    pre = ((x - b_dec) @ enc.t() + b_enc)[rows, cols]
    RaggedSelectedPreacts.apply(x, b_dec, enc, b_enc, rows, cols, crow, pre.detach()).mul(w).sum().backward()
    g_x, g_enc = x.grad.clone(), enc.grad.clone()
    x.grad, enc.grad = None, None
    pre.mul(w).sum().backward()
    torch.testing.assert_close(g_x, x.grad)
    torch.testing.assert_close(g_enc, enc.grad)
