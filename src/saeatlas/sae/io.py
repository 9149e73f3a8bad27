"""SAELens 6.x-compatible export and import.

Layout (what ``sae_lens.SAE.load_from_disk`` reads): a folder with ``sae_weights.safetensors``
(``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``) and
``cfg.json`` (``architecture``, ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations``, ``reshape_activations``, ``metadata``, plus ``k`` for TopK).

BatchTopK is saved as SAELens 6 saves it: architecture ``jumprelu``, with a fifth tensor
``threshold [d_sae]`` (our global threshold repeated per latent) and no ``k`` in the config
(SAELens' JumpReLU config has none); ``k`` travels in ``metadata.batchtopk_k`` beside
``metadata.saeatlas_architecture = "batchtopk"``. The import maps every ``jumprelu`` folder to our
``batchtopk`` model (JumpReLU is its inference form), with ``k`` from that metadata when present and
``None`` (encode/decode only) for a foreign JumpReLU SAE. Matryoshka is saved the same way (its
inference form is BatchTopK's JumpReLU; SAELens 6 saves its Matryoshka BatchTopK SAEs as
``jumprelu`` too), with ``metadata.saeatlas_architecture = "matryoshka"`` and the inner prefix ends in
``metadata.matryoshka_prefixes``, which the import reads back (checked) into a ``matryoshka`` model. The threshold compares pre-activations,
which the scale fold below leaves unchanged, so it is written as it is.

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
from saeatlas.config import valid_prefix_ends
from saeatlas.errors import StoreError
from saeatlas.sae.model import SAE, build

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
SAE_LENS_FORMAT_VERSION = "6.54.12"  # the SAELens release whose layout this follows (tested against it)

# our architecture name -> SAELens' (and back)
_TO_SAELENS = {"topk": "topk", "relu": "standard", "batchtopk": "jumprelu", "matryoshka": "jumprelu"}
_FROM_SAELENS = {"topk": "topk", "standard": "relu", "jumprelu": "batchtopk"}
_JUMPRELU = ("batchtopk", "matryoshka")  # trained with a batch-wide top k, saved with thresholds


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
        if sae.architecture in _JUMPRELU:
            tensors["threshold"] = sae.threshold.detach().float().contiguous().cpu()
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
    if sae.architecture in _JUMPRELU:
        cfg["metadata"]["saeatlas_architecture"] = sae.architecture
        if sae.batch_k is not None:
            cfg["metadata"]["batchtopk_k"] = sae.batch_k
    if sae.architecture == "matryoshka":
        cfg["metadata"]["matryoshka_prefixes"] = list(sae.prefixes)
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(directory / WEIGHTS_FILE)
    write_json_atomic(directory / CONFIG_FILE, cfg)
    return cfg


def _read_cfg(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise StoreError(f"{path}: must be a JSON object, got {type(cfg).__name__}")
    return cfg


def _positive_int(cfg: dict[str, Any], key: str, path: Path) -> int:
    if key not in cfg:
        raise StoreError(f"{path}: {key}: required key is missing")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StoreError(f"{path}: {key}: must be a positive integer, got {value!r}")
    return value


def _matryoshka_prefixes(metadata: dict[str, Any], d_sae: int, path: Path) -> list[int]:
    prefixes = metadata.get("matryoshka_prefixes")
    if (not isinstance(prefixes, list) or any(isinstance(m, bool) or not isinstance(m, int) for m in prefixes)
            or not valid_prefix_ends(prefixes, d_sae)):
        raise StoreError(f"{path}: metadata.matryoshka_prefixes: must be a strictly increasing list of "
                         f"integers in 1..{d_sae - 1}, got {prefixes!r}")
    return prefixes


def _read_tensors(path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The four weight tensors, each checked: present, no others, the shape ``cfg.json`` implies,
    a floating dtype, finite values. safetensors never unpickles; a damaged file is an error
    naming it."""
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean a bad file
        raise StoreError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or extra:
        raise StoreError(f"{path}: tensors must be exactly {sorted(expected)}; "
                         f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            raise StoreError(f"{path}: {name} has shape {tuple(tensor.shape)}, cfg.json implies {shape}")
        if not tensor.is_floating_point():
            raise StoreError(f"{path}: {name} has dtype {tensor.dtype}; weights must be floating point")
        if not torch.isfinite(tensor).all():
            raise StoreError(f"{path}: {name} holds {int((~torch.isfinite(tensor)).sum())} non-finite value(s)")
    return tensors


def load_sae(directory: str | Path, device: str | torch.device = "cpu") -> tuple[SAE, dict[str, Any]]:
    """Read a SAELens-format folder (ours or a published one) into this project's model.

    The result maps raw activations (scale 1). Every problem is a StoreError naming the file and
    the field: ``architecture`` is required (a missing one must not silently turn a TopK SAE into
    a ReLU one), as are ``d_in``, ``d_sae`` and, for TopK, ``k`` (1 <= k <= d_sae); a JumpReLU
    folder becomes a ``batchtopk`` model, or a ``matryoshka`` one when its metadata says so (see the module docstring; its ``metadata.batchtopk_k``, if
    any, is checked like ``k``); other architectures and input normalisations other than ``none``
    are refused.
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise StoreError(f"{directory}: not a SAELens SAE folder ({path.name} is missing)")
    cfg = _read_cfg(cfg_path)
    if "architecture" not in cfg:
        raise StoreError(f"{cfg_path}: architecture: required key is missing (one of {sorted(_FROM_SAELENS)})")
    arch = cfg["architecture"]
    if arch not in _FROM_SAELENS:
        raise StoreError(f"{cfg_path}: architecture: {arch!r} is not supported "
                         f"(supported: {sorted(_FROM_SAELENS)})")
    if cfg.get("normalize_activations", "none") != "none":
        raise StoreError(f"{cfg_path}: normalize_activations: {cfg['normalize_activations']!r} is not "
                         "supported; fold the normalisation into the weights first")
    d_in, d_sae = _positive_int(cfg, "d_in", cfg_path), _positive_int(cfg, "d_sae", cfg_path)
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise StoreError(f"{cfg_path}: apply_b_dec_to_input: must be true or false, got {apply_b_dec!r}")
    options: dict[str, Any] = {"apply_b_dec_to_input": apply_b_dec}
    if arch == "topk":
        options["k"] = _positive_int(cfg, "k", cfg_path)
        if options["k"] > d_sae:
            raise StoreError(f"{cfg_path}: k: {options['k']} is larger than d_sae {d_sae}")
    ours = _FROM_SAELENS[arch]
    if arch == "jumprelu":
        metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
        options["k"] = None
        if "batchtopk_k" in metadata:
            options["k"] = _positive_int(metadata, "batchtopk_k", cfg_path)
            if options["k"] > d_sae:
                raise StoreError(f"{cfg_path}: metadata.batchtopk_k: {options['k']} is larger than d_sae {d_sae}")
        if metadata.get("saeatlas_architecture") == "matryoshka":
            ours = "matryoshka"
            options["prefixes"] = _matryoshka_prefixes(metadata, d_sae, cfg_path)
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch == "jumprelu":
        expected["threshold"] = (d_sae,)
    tensors = _read_tensors(weights_path, expected)
    sae = build(ours, d_in, d_sae, **options)
    with torch.no_grad():
        sae.encoder.copy_(tensors["W_enc"].t().float())
        sae.b_enc.copy_(tensors["b_enc"].float())
        sae.decoder.copy_(tensors["W_dec"].float())
        sae.b_dec.copy_(tensors["b_dec"].float())
        if arch == "jumprelu":
            sae.threshold.copy_(tensors["threshold"].float())
            sae.threshold_updates.fill_(1)
    return sae.to(device).eval(), cfg
