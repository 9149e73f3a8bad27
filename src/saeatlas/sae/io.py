"""SAELens 6.x-compatible export and import.

Layout (what ``sae_lens.SAE.load_from_disk`` reads): a folder with ``sae_weights.safetensors``
(``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``) and
``cfg.json`` (``architecture``, ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations``, ``reshape_activations``, ``metadata``, plus ``k`` for TopK).

The trainer works on activations multiplied by the store's scale ``s`` (E||x||² = d). The export
folds ``s`` into the weights so the file maps *raw* residual vectors, as SAELens users expect:
``(s·x - b_dec) @ E^T = (x - b_dec/s) @ (s·E^T)`` and ``(a @ D + b_dec)/s = a @ (D/s) + b_dec/s``;
hence ``W_enc = s·E^T``, ``W_dec = D/s``, ``b_dec' = b_dec/s`` and ``normalize_activations = "none"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from saeatlas.artifacts import write_json_atomic
from saeatlas.errors import StoreError
from saeatlas.sae.model import SAE, build

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
SAE_LENS_FORMAT_VERSION = "6.54.12"  # the SAELens release whose layout this follows (tested against it)

# our architecture name -> SAELens' (and back)
_TO_SAELENS = {"topk": "topk", "relu": "standard"}
_FROM_SAELENS = {v: k for k, v in _TO_SAELENS.items()}


def export_sae(sae: SAE, directory: Path, scale: float, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``sae`` (trained on ``scale``-normalised inputs) as a raw-space SAELens folder."""
    directory.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        tensors = {
            "W_enc": (sae.encoder * scale).t().contiguous().cpu(),
            "b_enc": sae.b_enc.detach().clone().cpu(),
            "W_dec": (sae.decoder / scale).contiguous().cpu(),
            "b_dec": (sae.b_dec / scale).contiguous().cpu(),
        }
    cfg: dict[str, Any] = {
        "architecture": _TO_SAELENS[sae.architecture],
        "d_in": sae.d_in,
        "d_sae": sae.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAE_LENS_FORMAT_VERSION,
                     "sae_lens_training_version": SAE_LENS_FORMAT_VERSION,
                     "folded_normalisation_scale": scale, **metadata},
    }
    if sae.architecture == "topk":
        cfg["k"] = sae.k
        cfg["rescale_acts_by_decoder_norm"] = False
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(directory / WEIGHTS_FILE)
    write_json_atomic(directory / CONFIG_FILE, cfg)
    return cfg


def load_sae(directory: str | Path, device: str | torch.device = "cpu") -> tuple[SAE, dict[str, Any]]:
    """Read a SAELens-format folder (ours or a published one) into this project's model.

    The result maps raw activations (scale 1). Architectures other than TopK and standard
    (ReLU), and input normalisations other than ``none``, are refused with the key named.
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise StoreError(f"{directory}: not a SAELens SAE folder ({path.name} is missing)")
    cfg = json.loads(cfg_path.read_text())
    arch = cfg.get("architecture", "standard")
    if arch not in _FROM_SAELENS:
        raise StoreError(f"{cfg_path}: architecture {arch!r} is not supported "
                         f"(supported: {sorted(_FROM_SAELENS)})")
    if cfg.get("normalize_activations", "none") != "none":
        raise StoreError(f"{cfg_path}: normalize_activations={cfg['normalize_activations']!r} is not "
                         "supported; fold the normalisation into the weights first")
    tensors = load_file(str(weights_path))
    missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(tensors)
    if missing:
        raise StoreError(f"{weights_path}: missing tensors {sorted(missing)}")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    options: dict[str, Any] = {"apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True))}
    if arch == "topk":
        options["k"] = int(cfg["k"])
    sae = build(_FROM_SAELENS[arch], d_in, d_sae, **options)
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise StoreError(f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, cfg.json says {shape}")
    with torch.no_grad():
        sae.encoder.copy_(tensors["W_enc"].t().float())
        sae.b_enc.copy_(tensors["b_enc"].float())
        sae.decoder.copy_(tensors["W_dec"].float())
        sae.b_dec.copy_(tensors["b_dec"].float())
    return sae.to(device).eval(), cfg
