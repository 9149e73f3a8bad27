"""The exported SAE is a SAELens SAE: SAELens loads it and computes what this project computes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from saeatlas.errors import StoreError
from saeatlas.sae.io import export_sae, load_sae
from saeatlas.sae.train import TensorSource, TrainConfig, train_sae

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_activations(lm, tokenizer) -> tuple[torch.Tensor, float]:
    """Layer-15 residuals of real text (BOS and massive-activation rows left out), and the scale
    that makes E||x||² = d, as the store would record it."""
    text = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. def parse(line):\n    return "
            "line.split(',')\nROMEO: But soft, what light through yonder window breaks? ") * 6
    ids = torch.tensor([[tokenizer.bos_token_id or 1] + tokenizer(text)["input_ids"][:255]])
    x = lm.residual(ids, 15)[0, 1:].float()
    norms = x.norm(dim=1)
    x = x[norms <= 10 * norms.median()]
    return x, float((x.shape[1] / x.pow(2).sum(1).mean()) ** 0.5)


@pytest.mark.parametrize("architecture", ["topk", "relu", "batchtopk", "matryoshka"])
def test_sae_lens_loads_the_export_and_agrees(real_activations, tmp_path: Path, architecture: str) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    x, scale = real_activations
    cfg = TrainConfig(architecture=architecture, n_latents=256, k=16, batch_size=64, epochs=3,
                      warmup_steps=2, checkpoint_every=10**9, exclude_outliers=False, l1_coefficient=0.5)
    ours = train_sae(cfg, TensorSource(x * scale), progress=False).sae.eval()
    export_sae(ours, tmp_path, scale, {"model_name": "smollm2-135m-instruct",
                                       "hook_name": "blocks.15.hook_resid_post", "context_size": 128})
    saved = json.loads((tmp_path / "cfg.json").read_text())
    assert saved["architecture"] == {"topk": "topk", "relu": "standard", "batchtopk": "jumprelu",
                                     "matryoshka": "jumprelu"}[architecture]
    assert saved["metadata"]["hook_name"] == "blocks.15.hook_resid_post"

    theirs = sae_lens.SAE.load_from_disk(str(tmp_path), device="cpu")
    with torch.no_grad():
        code = ours.encode(x * scale)
        acts_ours = code.dense(256)
        recon_ours = ours.decode(code) / scale  # our model works on normalised inputs
        acts_theirs = theirs.encode(x)
        recon_theirs = theirs.decode(acts_theirs)
    assert (acts_ours > 0).sum() > 0
    torch.testing.assert_close(acts_theirs, acts_ours, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(recon_theirs, recon_ours, rtol=1e-4, atol=1e-3 * float(x.abs().mean()))
    # FVU on these (real) eval activations: SAELens' reconstruction scores what ours scores.
    fvu = lambda recon: float((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum())  # noqa: E731
    assert fvu(recon_theirs) == pytest.approx(fvu(recon_ours), rel=1e-4, abs=1e-6)
    if architecture in ("batchtopk", "matryoshka"):  # SAELens reads it as its JumpReLU, with our threshold
        assert type(theirs).__name__ == "JumpReLUSAE"
        torch.testing.assert_close(theirs.threshold.detach(), ours.threshold)

    # Our importer reads it back as a raw-space SAE that computes the same.
    imported, _ = load_sae(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), recon_ours, rtol=1e-4, atol=1e-3 * float(x.abs().mean()))
    assert imported.architecture == architecture
    if architecture == "matryoshka":  # 1/16 .. 1/2 of 256, read back from the metadata
        assert saved["metadata"]["matryoshka_prefixes"] == [16, 32, 64, 128] == list(imported.prefixes)


def test_importer_refuses_what_it_cannot_represent(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cfg.json is missing"):
        load_sae(tmp_path)
    from saeatlas.sae.model import build

    export_sae(build("topk", 8, 64, k=4), tmp_path, 1.0, {})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(StoreError, match="architecture: 'gated' is not supported"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(StoreError, match="normalize_activations: 'layer_norm'"):
        load_sae(tmp_path)

    # a Matryoshka export whose prefixes were damaged: named, not guessed
    export_sae(build("matryoshka", 8, 64, k=4, prefixes=[8, 16]), tmp_path, 1.0, {})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert load_sae(tmp_path)[0].prefixes == (8, 16)
    for bad in ([16, 8], [0, 8], [8, 64], "8,16", None):
        cfg["metadata"]["matryoshka_prefixes"] = bad
        (tmp_path / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(StoreError, match="metadata.matryoshka_prefixes: must be a strictly increasing"):
            load_sae(tmp_path)


def _without(cfg: dict, key: str) -> dict:
    return {k: v for k, v in cfg.items() if k != key}


# (what is done to cfg.json, what is done to the weights, the file and field the error must name)
DAMAGED = {
    "cfg not JSON": (lambda c: "{d_in: 8", None, "cfg.json: not valid JSON"),
    "cfg a list": (lambda c: [c], None, "cfg.json: must be a JSON object, got list"),
    "no architecture": (lambda c: _without(c, "architecture"), None, "cfg.json: architecture: required key"),
    "no d_in": (lambda c: _without(c, "d_in"), None, "cfg.json: d_in: required key is missing"),
    "no k": (lambda c: _without(c, "k"), None, "cfg.json: k: required key is missing"),
    "k > d_sae": (lambda c: {**c, "k": 65}, None, "cfg.json: k: 65 is larger than d_sae 64"),
    "d_sae a string": (lambda c: {**c, "d_sae": "64"}, None, "cfg.json: d_sae: must be a positive integer"),
    "truncated weights": (None, lambda p: p.write_bytes(p.read_bytes()[:-40]), "sae_weights.safetensors: not a readable"),
    "not safetensors": (None, lambda p: p.write_bytes(b"\x80\x04pickle"), "sae_weights.safetensors: not a readable"),
    "NaN weights": (None, {"W_dec": lambda t: t.index_fill(0, torch.tensor([3]), float("nan"))},
                    "W_dec holds 8 non-finite value"),
    "int64 bias": (None, {"b_enc": lambda t: t.long()}, "b_enc has dtype torch.int64"),
    "wrong shape": (None, {"W_enc": lambda t: t[:, :32].contiguous()}, "W_enc has shape (8, 32), cfg.json implies (8, 64)"),
    "extra tensor": (None, {"threshold": lambda t: torch.zeros(64)}, "unexpected ['threshold']"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_sae_folder_is_an_error_naming_the_file_and_field(tmp_path: Path, case: str) -> None:
    """Each of these used to load silently (a TopK SAE as ReLU without k, NaN or int weights) or
    crash with a raw SafetensorError/KeyError that named no file; the CLI exits 2 on StoreError."""
    from safetensors.torch import load_file, save_file

    from saeatlas.sae.model import build

    export_sae(build("topk", 8, 64, k=4), tmp_path, 1.0, {})
    edit_cfg, edit_weights, message = DAMAGED[case]
    if edit_cfg is not None:
        cfg = json.loads((tmp_path / "cfg.json").read_text())
        edited = edit_cfg(cfg)
        (tmp_path / "cfg.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    weights = tmp_path / "sae_weights.safetensors"
    if callable(edit_weights):
        edit_weights(weights)
    elif edit_weights is not None:
        tensors = load_file(str(weights))
        for name, change in edit_weights.items():
            tensors[name] = change(tensors.get(name, torch.zeros(1)))
        save_file(tensors, str(weights))
    with pytest.raises(StoreError, match=re.escape(message)) as err:
        load_sae(tmp_path)
    assert str(tmp_path) in str(err.value)
