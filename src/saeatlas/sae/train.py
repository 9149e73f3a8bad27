"""The SAE training loop: streamed minibatches, Adam with warm-up and decay, width-scaled
learning rate, unit-norm decoder, data-initialised ``b_dec``, AuxK for dead latents, and
checkpoints that let a killed run resume to the same result.

The loop only needs a *batch source*: anything with ``batches_per_epoch`` and ``minibatches``
like ``activations.ActivationStore`` (memmapped shards, never loaded whole) or the in-memory
``TensorSource`` the planted-dictionary tests use.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch

from saeatlas.artifacts import write_bytes_atomic
from saeatlas.config import matryoshka_prefixes, schema_defaults
from saeatlas.errors import SaeAtlasError
from saeatlas.sae.model import SAE, Losses, build
from saeatlas.progress import bar as progress_bar

log = logging.getLogger(__name__)


class TrainingDiverged(SaeAtlasError):
    """The loss became NaN or infinite: every later step would be garbage, so none is taken."""


# The defaults of the params.yaml keys are the schema's (``sae:`` section): one home for them.
_SAE = schema_defaults("sae")


@dataclass(frozen=True)
class TrainConfig:
    """One SAE's training settings: the ``sae:`` section of params.yaml (``from_params``) plus the
    dictionary size. Defaults (for tests and benchmarks) are the schema's documented ones."""

    architecture: str = _SAE["architectures"][0]
    n_latents: int = _SAE["sizes"][0]
    k: int = _SAE["k"]
    lr: float = _SAE["lr"]
    lr_reference_size: int = _SAE["lr_reference_size"]
    batch_size: int = _SAE["batch_size"]
    epochs: int = _SAE["epochs"]
    warmup_steps: int = _SAE["warmup_steps"]
    decay_fraction: float = _SAE["decay_fraction"]
    auxk_k: int = _SAE["auxk_k"]
    auxk_alpha: float = _SAE["auxk_alpha"]
    dead_after_tokens: int = _SAE["dead_after_tokens"]
    l1_coefficient: float = _SAE["l1_coefficient"]
    matryoshka_fractions: tuple[float, ...] = tuple(_SAE["matryoshka_fractions"])
    b_dec_init: str = _SAE["b_dec_init"]
    checkpoint_every: int = _SAE["checkpoint_every"]
    exclude_outliers: bool = _SAE["exclude_outliers"]
    seed: int = _SAE["seed"]
    log_every: int = 10  # rows of the training curve: not a study parameter
    renormalise_decoder: bool = True  # switched off only by the ablation tests

    @classmethod
    def from_params(cls, sae: Any, n_latents: int) -> "TrainConfig":
        """From the validated ``sae`` section of params.yaml (``config.SAEParams``)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in asdict(sae).items() if k in names}
        return cls(**values, n_latents=n_latents)

    def scaled_lr(self) -> float:
        """Learning rate for this width: ``lr × (lr_reference_size / n_latents)^(1/2)``.

        The n^(-1/2) rule is the fit of Gao et al. (2024, "Scaling and evaluating sparse
        autoencoders", §3 and Fig. 12) that EleutherAI's sparsify adopts with 2e-4 at n = 2^14;
        wider dictionaries need smaller steps, because each latent sees fewer tokens per step.
        """
        return self.lr * math.sqrt(self.lr_reference_size / self.n_latents)

    def sae_options(self) -> dict[str, Any]:
        if self.architecture in ("topk", "batchtopk", "matryoshka"):
            options: dict[str, Any] = {"k": self.k, "auxk_k": self.auxk_k, "auxk_alpha": self.auxk_alpha}
            if self.architecture == "matryoshka":
                options["prefixes"] = matryoshka_prefixes(self.matryoshka_fractions, self.n_latents)
            return options
        if self.architecture == "relu":
            return {"l1_coefficient": self.l1_coefficient}
        return {}


def lr_multiplier(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    """Linear warm-up over ``warmup`` steps, constant, then linear decay to 0 over the last
    ``decay_fraction`` of the steps (the schedule of Anthropic's April 2024 update)."""
    if step < warmup:
        return (step + 1) / warmup
    decay_start = total * (1 - decay_fraction)
    if decay_fraction > 0 and step >= decay_start:
        return max(0.0, (total - step) / (total - decay_start))
    return 1.0


def geometric_median(x: torch.Tensor, iterations: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising Σ||x_i - m||; robust to the long tail of
    activation norms, which is why Bricken et al. (2023) initialise ``b_dec`` with it."""
    m = x.mean(0)
    for _ in range(iterations):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-8)
        new = (w[:, None] * x).sum(0) / w.sum()
        moved = float((new - m).norm())
        m = new
        if moved <= tol * max(float(m.norm()), 1.0):
            break
    return m


class BatchSource(Protocol):
    d_model: int

    def batches_per_epoch(self, batch_size: int, exclude_outliers: bool = False) -> int: ...

    def minibatches(self, batch_size: int, seed: int, epoch: int = 0, buffer_shards: int = 4,
                    normalise: bool = True, device: str | torch.device = "cpu",
                    exclude_outliers: bool = False, skip: int = 0) -> Iterator[torch.Tensor]: ...


class TensorSource:
    """An in-memory batch source (synthetic data in tests); same contract as the store."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.d_model = x.shape[1]

    def batches_per_epoch(self, batch_size: int, exclude_outliers: bool = False) -> int:
        return self.x.shape[0] // batch_size

    def minibatches(self, batch_size: int, seed: int, epoch: int = 0, buffer_shards: int = 4,
                    normalise: bool = True, device: str | torch.device = "cpu",
                    exclude_outliers: bool = False, skip: int = 0) -> Iterator[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(self.x.shape[0], generator=gen)
        for b in range(skip, self.batches_per_epoch(batch_size)):
            yield self.x[order[b * batch_size:(b + 1) * batch_size]].to(device)


@dataclass
class TrainState:
    """Everything a resumed run needs besides the weights and the optimiser."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    since_fired: torch.Tensor | None = None  # tokens since each latent last fired (AuxK's dead mask)
    rows: list[dict[str, float]] | None = None  # the training curve so far


@dataclass
class TrainResult:
    sae: SAE
    rows: list[dict[str, float]]
    summary: dict[str, float]


CURVE_COLUMNS = ("step", "tokens", "epoch", "lr", "loss", "fvu", "aux", "l0", "dead_fraction", "seconds")


def _save_checkpoint(path: Path, cfg: TrainConfig, binding: dict[str, str], sae: SAE,
                     opt: torch.optim.Optimizer, state: TrainState) -> None:
    buf = io.BytesIO()
    torch.save({"config": asdict(cfg), "binding": binding, "sae": sae.state_dict(), "optimizer": opt.state_dict(),
                "step": state.step, "tokens": state.tokens, "seconds": state.seconds,
                "since_fired": state.since_fired, "rows": state.rows}, buf)
    write_bytes_atomic(path, buf.getvalue())  # tmp + fsync + rename: never a torn checkpoint


def _load_checkpoint(path: Path, cfg: TrainConfig, binding: dict[str, str], sae: SAE,
                     opt: torch.optim.Optimizer, device: torch.device) -> TrainState | None:
    """The state saved in ``path`` if it was written with the same training settings *and* the
    same ``binding`` (the data it trained on and the params), else None: a checkpoint resumed on
    another store would skip the steps it believes done and export stale weights."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is only a lost head start
        log.warning("ignoring checkpoint %s: unreadable (%s)", path, exc)
        return None
    if not isinstance(ckpt, dict) or ckpt.get("config") != asdict(cfg):
        log.warning("ignoring checkpoint %s: it was written with other training settings", path)
        return None
    if ckpt.get("binding") != binding:
        log.warning("ignoring checkpoint %s: it was written for other data or params (%s, now %s)",
                    path, ckpt.get("binding"), binding)
        return None
    sae.load_state_dict(ckpt["sae"])
    opt.load_state_dict(ckpt["optimizer"])
    log.info("resuming from %s at step %d (%d tokens)", path, ckpt["step"], ckpt["tokens"])
    return TrainState(step=ckpt["step"], tokens=ckpt["tokens"], seconds=ckpt["seconds"],
                      since_fired=ckpt["since_fired"].to(device), rows=list(ckpt["rows"]))


def make_optimizer(sae: SAE, lr: float) -> torch.optim.Optimizer:
    """Adam, fused: one kernel for the whole update (CPU and CUDA), ~10x faster than the
    per-tensor loop on CPU."""
    return torch.optim.Adam(sae.parameters(), lr=lr, fused=True)


def training_step(sae: SAE, opt: torch.optim.Optimizer, x: torch.Tensor, dead: torch.Tensor | None = None,
                  renormalise_decoder: bool = True) -> Losses:
    """One optimiser step: loss, backward, the decoder's parallel-gradient removal, Adam, and the
    renormalisation of the decoder rows. ``benchmarks/sae_train.py`` times exactly this."""
    out = sae.loss(x, dead)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if renormalise_decoder:
        sae.remove_parallel_decoder_grad()
    opt.step()
    if renormalise_decoder:
        sae.normalise_decoder()
    return out


def _initial_state(cfg: TrainConfig, source: BatchSource, sae: SAE, opt: torch.optim.Optimizer,
                   checkpoint: Path | None, binding: dict[str, str], initial: SAE | None,
                   device: torch.device) -> TrainState:
    """The checkpoint's state if it matches ``cfg`` and ``binding``, else step 0 with ``b_dec``
    initialised from the first batch (kept as it is for given ``initial`` weights)."""
    state = _load_checkpoint(checkpoint, cfg, binding, sae, opt, device) if checkpoint else None
    if state is None:
        state = TrainState(since_fired=torch.zeros(cfg.n_latents, dtype=torch.int64, device=device), rows=[])
        first = next(source.minibatches(cfg.batch_size, cfg.seed, 0, device=device,
                                        exclude_outliers=cfg.exclude_outliers))
        with torch.no_grad():
            if initial is not None:
                pass
            elif cfg.b_dec_init == "geometric_median":
                sae.b_dec.copy_(geometric_median(first))
            elif cfg.b_dec_init == "mean":
                sae.b_dec.copy_(first.mean(0))
    assert state.since_fired is not None and state.rows is not None
    return state


def _count_firing(state: TrainState, out: Losses, rows: int, n_latents: int, device: torch.device) -> torch.Tensor:
    """Reset the tokens-since-fired counter of every latent active in this batch; return the
    batch's [loss, fvu, aux, l0] for the curve."""
    active = out.code.active()
    fired = torch.zeros(n_latents, dtype=torch.bool, device=device)
    fired[out.code.indices[active]] = True
    state.since_fired += rows
    state.since_fired[fired] = 0
    state.step += 1
    state.tokens += rows
    loss = float(out.loss.detach())
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"SAE n={n_latents}: the loss is {loss} at step {state.step} (after {state.tokens} tokens); "
            f"training stopped. Likely sae.lr is too high for this width, or the activations are not "
            f"finite (run `python -m saeatlas verify`)")
    return torch.tensor([loss, float(out.fvu), float(out.aux), float(active.sum()) / rows], dtype=torch.float64)


def _curve_row(state: TrainState, epoch: int, step_lr: float, mean: list[float], dead: torch.Tensor) -> dict[str, float]:
    return {"step": state.step, "tokens": state.tokens, "epoch": epoch, "lr": step_lr,
            "loss": mean[0], "fvu": mean[1], "aux": mean[2], "l0": mean[3],
            "dead_fraction": float(dead.float().mean()), "seconds": state.seconds}


def _summary(cfg: TrainConfig, state: TrainState, lr: float) -> dict[str, float]:
    assert state.rows is not None
    tail = state.rows[-max(1, len(state.rows) // 10):]  # the last tenth of the curve
    return {
        "steps": state.step, "tokens": state.tokens, "epochs": cfg.epochs, "lr": lr,
        "final_fvu": sum(r["fvu"] for r in tail) / len(tail),
        "final_l0": sum(r["l0"] for r in tail) / len(tail),
        "final_dead_fraction": state.rows[-1]["dead_fraction"],
        "seconds": state.seconds,
    }


def train_sae(cfg: TrainConfig, source: BatchSource, device: str | torch.device = "cpu",
              checkpoint: Path | None = None, on_log: Callable[[dict[str, float]], None] | None = None,
              progress: bool = True, initial: SAE | None = None,
              binding: dict[str, str] | None = None) -> TrainResult:
    """Train one SAE; resumable from ``checkpoint`` (written every ``cfg.checkpoint_every`` steps).

    ``binding`` names what the checkpoint must have been written for besides ``cfg`` (the stage
    passes the activation store's manifest hash and the params hash); a checkpoint bound to
    anything else is ignored and training starts afresh.

    ``initial`` starts from given weights (e.g. to continue an imported SAE) instead of the
    seeded initialisation; ``b_dec`` is then kept as it is.
    """
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    sae = initial if initial is not None else build(cfg.architecture, source.d_model, cfg.n_latents,
                                                    **cfg.sae_options())
    sae = sae.to(device).train()
    lr = cfg.scaled_lr()
    opt = make_optimizer(sae, lr)
    per_epoch = source.batches_per_epoch(cfg.batch_size, cfg.exclude_outliers)
    total = per_epoch * cfg.epochs
    if total == 0:
        raise ValueError(f"the activation store has fewer rows than one batch ({cfg.batch_size})")
    binding = dict(binding or {})
    state = _initial_state(cfg, source, sae, opt, checkpoint, binding, initial, device)
    assert state.since_fired is not None and state.rows is not None

    sums = torch.zeros(4, dtype=torch.float64)  # loss, fvu, aux, l0 since the last curve row
    n_sum = 0
    bar = progress_bar(total=total, initial=state.step, desc=f"SAE n={cfg.n_latents}", show=progress,
                       unit="step", leave=True)
    t_start = time.perf_counter() - state.seconds
    start_epoch, skip = divmod(state.step, per_epoch)
    try:  # the step buffer is freed however the loop ends
        for epoch in range(start_epoch, cfg.epochs):
            batches = source.minibatches(cfg.batch_size, cfg.seed, epoch, device=device,
                                         exclude_outliers=cfg.exclude_outliers,
                                         skip=skip if epoch == start_epoch else 0)
            for x in batches:
                step_lr = lr * lr_multiplier(state.step, total, cfg.warmup_steps, cfg.decay_fraction)
                for group in opt.param_groups:
                    group["lr"] = step_lr
                dead = state.since_fired >= cfg.dead_after_tokens
                out = training_step(sae, opt, x, dead, cfg.renormalise_decoder)
                sae.after_step(out.code, state.step + 1, total)  # no-op but for BatchTopK's threshold
                sums += _count_firing(state, out, x.shape[0], cfg.n_latents, device)
                n_sum += 1
                bar.update(1)
                if state.step % cfg.log_every == 0 or state.step == total:
                    state.seconds = time.perf_counter() - t_start
                    row = _curve_row(state, epoch, step_lr, (sums / n_sum).tolist(), dead)
                    state.rows.append(row)
                    sums.zero_()
                    n_sum = 0
                    bar.set_postfix(fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}",
                                    dead=f"{row['dead_fraction']:.3f}", refresh=False)
                    if on_log:
                        on_log(row)
                if checkpoint and state.step % cfg.checkpoint_every == 0 and state.step < total:
                    state.seconds = time.perf_counter() - t_start
                    _save_checkpoint(checkpoint, cfg, binding, sae, opt, state)
    finally:
        bar.close()
        sae.drop_scratch()
    state.seconds = time.perf_counter() - t_start
    return TrainResult(sae, state.rows, _summary(cfg, state, lr))
