"""Evaluate one SAE on held-out tokens: reconstruction, sparsity, and the LM's loss with the
SAE spliced in. Every formula is written next to the code that computes it.

The SAE here maps *raw* residual vectors (the exported SAELens file has the store's scale folded
in), so nothing depends on which split's scale is used. Rows are the evaluation split of the
activation store; BOS is never stored, so it is excluded by construction. "Ordinary" rows are
those the trainer saw (norm <= outlier_factor × median norm); the massive-activation rows
(separator tokens and the first token after BOS) are reported separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from saeatlas.activations import ActivationStore
from saeatlas.sae.model import SAE
from saeatlas.sae.sparse import SparseCode
from saeatlas.progress import bar as progress_bar


@dataclass
class _Moments:
    """Streaming sums for FVU: Σ||x - x̂||², Σx, Σ||x||², N (float64)."""

    sq_err: float = 0.0
    sum_sq: float = 0.0
    n: int = 0
    sum_x: np.ndarray | None = None

    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        x64 = x.double()
        self.sq_err += float((x64 - x_hat.double()).pow(2).sum())
        self.sum_sq += float(x64.pow(2).sum())
        s = x64.sum(0).cpu().numpy()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.n += x.shape[0]

    def fvu(self) -> float:
        """FVU = Σ||x - x̂||² / Σ||x - x̄||², with Σ||x - x̄||² = Σ||x||² - N·||x̄||² (centred)."""
        if self.n == 0 or self.sum_x is None:
            return float("nan")
        centred = self.sum_sq - float(np.dot(self.sum_x, self.sum_x)) / self.n
        return self.sq_err / centred


def _batches_with_mask(store: ActivationStore, batch_size: int,
                       device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    start = 0
    for x in store.iter_sequential(batch_size, normalise=False, device=device):
        mask = torch.from_numpy(store.ordinary_mask(start, start + x.shape[0])).to(device)
        start += x.shape[0]
        yield x, mask


@torch.no_grad()
def reconstruction_metrics(sae: SAE, store: ActivationStore, batch_size: int, dense_threshold: float,
                           device: torch.device, progress: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """One pass over the store. Returns flat metrics and each latent's firing count (ordinary rows).

    A Matryoshka SAE also reports each inner prefix as the dictionary it nests (``prefix<m>.fvu``,
    ``prefix<m>.l0``): its code kept to latents below ``m``, decoded with the same ``b_dec``. That
    is the smaller SAE the full one contains, read beside the separately trained sizes."""
    ordinary, every = _Moments(), _Moments()
    prefixes = tuple(getattr(sae, "prefixes", ()))
    nested = {m: _Moments() for m in prefixes}
    nested_active = dict.fromkeys(prefixes, 0)
    counts = torch.zeros(sae.n_latents, dtype=torch.int64, device=device)
    active_total = 0
    bar = progress_bar(total=store.n_tokens, desc="reconstruction", show=progress, unit="tok", unit_scale=True)
    for x, mask in _batches_with_mask(store, batch_size, device):
        code = sae.encode(x)
        x_hat = sae.decode(code)
        every.add(x, x_hat)
        ordinary.add(x[mask], x_hat[mask])
        active = code.active()[mask]
        active_total += int(active.sum())
        for m in prefixes:
            inside = code.indices < m
            nested[m].add(x[mask], sae.decode(SparseCode(code.values * inside, code.indices))[mask])
            nested_active[m] += int((active & inside[mask]).sum())
        counts += torch.bincount(code.indices[mask][active], minlength=sae.n_latents)
        bar.update(x.shape[0])
    bar.close()
    n = ordinary.n
    counts_np = counts.cpu().numpy()
    density = counts_np / max(n, 1)
    fvu = ordinary.fvu()
    metrics = {
        "eval_tokens": n,
        "outlier_tokens_excluded": every.n - n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,  # = 1 - FVU
        "mse_per_token": ordinary.sq_err / max(n, 1),  # Σ||x - x̂||² / N in raw units
        "fvu_all_rows": every.fvu(),  # including the massive-activation rows the SAE never trained on
        "l0": active_total / max(n, 1),  # L0 = mean number of active latents per token
        # Dead = never active on the evaluation tokens; dense = active on > dense_threshold of them.
        "dead_fraction": float((counts_np == 0).mean()),
        "dense_fraction": float((density > dense_threshold).mean()),
        "alive_latents": int((counts_np > 0).sum()),
    }
    for m in prefixes:
        metrics[f"prefix{m}.fvu"] = nested[m].fvu()
        metrics[f"prefix{m}.l0"] = nested_active[m] / max(n, 1)
    return metrics, counts_np


def density_histogram(counts: np.ndarray, n_tokens: int, bin_width: float = 0.25) -> list[dict[str, float]]:
    """Histogram of log10(firing density) of the alive latents (dead ones are counted by
    ``dead_fraction``: log10 0 is -inf). Bins start at log10(1/n_tokens), the rarest measurable
    density; each row is a bin's left edge and its count."""
    alive = counts[counts > 0]
    lo = math.floor(math.log10(1.0 / max(n_tokens, 1)) / bin_width) * bin_width
    edges = np.arange(lo, bin_width / 2, bin_width)
    edges = np.append(edges, 0.0) if edges[-1] < 0 else edges
    hist, _ = np.histogram(np.log10(alive / n_tokens), bins=edges)
    rows = [{"log10_density": float(round(edges[i], 6)), "latents": int(hist[i])} for i in range(len(hist))]
    return rows


@torch.no_grad()
def spliced_loss_metrics(lm: Any, sae: SAE, contexts: np.ndarray, layer: int, outlier_norm: float,
                         batch_contexts: int, progress: bool = True) -> dict[str, float]:
    """CE loss of the LM with layer ``layer``'s output replaced, on ``contexts`` [n, T] (BOS first).

    Variants, all at the same positions:
    - clean: unchanged;
    - sae:  x -> SAE(x) at ordinary positions (norm <= ``outlier_norm``), other positions untouched;
    - zero: x -> 0 at those same positions (the zero-ablation baseline);
    - sae_all: x -> SAE(x) at every position after BOS, outliers included.
    CE is averaged over next-token predictions from positions 1..T-2 (the BOS position's
    prediction is excluded, as the LM has seen no text yet).
    CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean); ΔCE = CE_sae - CE_clean;
    KL = mean over positions of KL(p_clean || p_spliced).
    """
    device = lm.device
    spliced = {"positions": 0}  # how many positions the SAE actually replaced

    def replace(kind: str) -> Any:
        def fn(h: torch.Tensor) -> torch.Tensor:
            after_bos = torch.zeros(h.shape[:2], dtype=torch.bool, device=h.device)
            after_bos[:, 1:] = True
            where = after_bos if kind == "sae_all" else after_bos & (h.norm(dim=-1) <= outlier_norm)
            out = h.clone()
            rows = h[where]
            out[where] = torch.zeros_like(rows) if kind == "zero" else sae(rows.float()).to(h.dtype)
            if kind == "sae":
                spliced["positions"] += int(where.sum())
            return out
        return fn

    def log_probs(logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits[:, 1:-1].float().reshape(-1, logits.shape[-1]), dim=-1)

    sums = {k: 0.0 for k in ("clean", "sae", "zero", "sae_all", "kl_sae", "kl_zero", "kl_sae_all")}
    n_pred = 0
    bar = progress_bar(total=contexts.shape[0], desc="spliced CE", show=progress, unit="ctx")
    for start in range(0, contexts.shape[0], batch_contexts):
        ids = torch.from_numpy(np.asarray(contexts[start:start + batch_contexts], dtype=np.int64)).to(device)
        targets = ids[:, 2:].reshape(-1)  # predictions from positions 1..T-2
        clean = log_probs(lm.logits(ids))
        sums["clean"] += float(F.nll_loss(clean, targets, reduction="sum"))
        for kind in ("sae", "zero", "sae_all"):
            with lm.splice(layer, replace(kind)):
                lp = log_probs(lm.logits(ids))
            sums[kind] += float(F.nll_loss(lp, targets, reduction="sum"))
            sums[f"kl_{kind}"] += float(F.kl_div(lp, clean, log_target=True, reduction="sum"))
        n_pred += targets.numel()
        bar.update(ids.shape[0])
    bar.close()
    ce = {k: v / n_pred for k, v in sums.items()}
    denom = ce["zero"] - ce["clean"]
    total_positions = contexts.shape[0] * (contexts.shape[1] - 1)
    return {
        "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero_ablation": ce["zero"],
        "ce_loss_recovered": (ce["zero"] - ce["sae"]) / denom if denom > 0 else float("nan"),
        "delta_ce": ce["sae"] - ce["clean"],
        "kl_sae": ce["kl_sae"], "kl_zero_ablation": ce["kl_zero"],
        "ce_sae_all_positions": ce["sae_all"], "delta_ce_all_positions": ce["sae_all"] - ce["clean"],
        "kl_sae_all_positions": ce["kl_sae_all"],
        "spliced_position_fraction": spliced["positions"] / max(total_positions, 1),
        "ce_predictions": n_pred,
    }
