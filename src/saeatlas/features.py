"""Per-feature statistics of one SAE on the evaluation tokens: the data the feature browser shows.

One streaming pass encodes the evaluation split of the activation store (the only dense work,
a [batch x n] matmul per block) and writes the sparse codes to disk (``codes.py``). Everything
else reads those codes, block by block, so memory is bounded by the block size and by the
number of examples kept, never by the token count:

- density = (tokens where the feature is active) / (ordinary evaluation tokens); mean activation
  over the tokens where it is active; max activation;
- top-N activating examples per feature: a bounded top-N buffer per feature, merged with each
  block (the same result as a heap per feature, vectorised);
- a quantile sample (Anthropic's "interval" sampling): the activation range (0, max] of each
  feature is cut into ``quantile_bins`` equal intervals and ``per_bin`` examples are drawn
  uniformly from each, by keeping the ``per_bin`` smallest pseudo-random keys (a bottom-k sample
  is a uniform sample without replacement); so the browser shows weak activations too;
- for every example, the token window around it with the feature's activation on each token;
- the logit lens: the output tokens a feature's decoder direction most boosts and suppresses,
  ``(W_dec[i] ⊙ g) @ W_U^T`` with ``g`` the final RMSNorm gain (the norm's linear part; its
  per-token scaling is positive and does not change the ranking).

Rows are the store's: contexts with BOS dropped, flattened, so row r is context ``r // P`` at
position ``r % P + 1`` (P = positions per context). Massive-activation rows (see
``activations.py``) are not encoded: their codes are all zero, as the SAE never trained on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saeatlas.activations import ActivationStore
from saeatlas.codes import CodeWriter, SparseCodes
from saeatlas.config import FeaturesParams
from saeatlas.sae.model import SAE
from saeatlas.progress import bar as progress_bar

KINDS = ("top", "quantile")


# --------------------------------------------------------------------------------------
# Encoding pass
# --------------------------------------------------------------------------------------


@torch.no_grad()
def encode_store(sae: SAE, store: ActivationStore, directory: Path, batch_size: int, max_active: int,
                 device: torch.device, progress: bool = True) -> SparseCodes:
    """Encode every row of ``store`` (raw activations; the SAE maps raw space) into ``directory``,
    with the SAE's decoder rows beside the codes."""
    width = int(getattr(sae, "k", max_active))
    writer = CodeWriter(directory, store.n_tokens, width, sae.n_latents)
    bar = progress_bar(total=store.n_tokens, desc=f"encode n={sae.n_latents}", show=progress, unit="tok",
                       unit_scale=True)
    start = 0
    for x in store.iter_sequential(batch_size, normalise=False, device=device):
        code = sae.encode(x)
        values = code.values.float()
        mask = torch.from_numpy(store.ordinary_mask(start, start + x.shape[0])).to(values.device)
        values = values * mask[:, None]
        writer.append(code.indices.to(torch.int32).cpu().numpy(), values.cpu().numpy())
        start += x.shape[0]
        bar.update(x.shape[0])
    bar.close()
    writer.finish({"ordinary_tokens": int(store.ordinary_mask().sum())}, sae.decoder.detach().cpu().numpy())
    return SparseCodes.open(directory)


# --------------------------------------------------------------------------------------
# Statistics over the stored codes
# --------------------------------------------------------------------------------------


@dataclass
class FeatureStats:
    count: np.ndarray  # int64 [n]: tokens where active
    sum: np.ndarray  # float64 [n]: Σ activation
    max: np.ndarray  # float32 [n]
    tokens: int  # ordinary evaluation tokens (the denominator of density)

    @property
    def density(self) -> np.ndarray:
        return self.count / max(self.tokens, 1)

    @property
    def mean_active(self) -> np.ndarray:
        """Mean activation over the tokens where the feature is active (0 for dead features)."""
        return np.divide(self.sum, self.count, out=np.zeros_like(self.sum), where=self.count > 0)


def feature_stats(codes: SparseCodes, block: int = 1 << 16) -> FeatureStats:
    n = codes.n_latents
    count = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.float64)
    peak = np.zeros(n, dtype=np.float32)
    for _, idx, val in codes.iter_blocks(block):
        active = val > 0
        f, v = idx[active], val[active]
        count += np.bincount(f, minlength=n)
        total += np.bincount(f, weights=v, minlength=n)
        np.maximum.at(peak, f, v)
    return FeatureStats(count, total, peak, int(codes.manifest.get("ordinary_tokens", codes.n_tokens)))


def _keep_best(groups: np.ndarray, scores: np.ndarray, rows: np.ndarray, n_groups: int,
               keep: int) -> tuple[np.ndarray, np.ndarray]:
    """For each group id in ``0..n_groups-1``, the ``keep`` entries with the highest score (ties:
    lowest row first). Returns ``(scores [n_groups, keep], rows [n_groups, keep])``; groups with
    fewer entries are padded by the caller's sentinels (every group must hold >= ``keep``)."""
    order = np.lexsort((rows, -scores, groups))
    g = groups[order]
    first = np.searchsorted(g, np.arange(n_groups))
    rank = np.arange(g.size) - first[g]
    chosen = order[rank < keep]
    return scores[chosen].reshape(n_groups, keep), rows[chosen].reshape(n_groups, keep)


class BestPerGroup:
    """A bounded top-``keep`` buffer per group, merged block by block (a vectorised heap)."""

    def __init__(self, n_groups: int, keep: int):
        self.n_groups, self.keep = n_groups, keep
        self.scores = np.full((n_groups, keep), -np.inf)
        self.rows = np.full((n_groups, keep), -1, dtype=np.int64)

    def add(self, groups: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> None:
        if groups.size == 0:
            return
        pad_groups = np.repeat(np.arange(self.n_groups), self.keep)
        self.scores, self.rows = _keep_best(
            np.concatenate([pad_groups, groups]), np.concatenate([self.scores.ravel(), scores]),
            np.concatenate([self.rows.ravel(), rows]), self.n_groups, self.keep)


def _uniform_keys(rows: np.ndarray, features: np.ndarray, n_latents: int, seed: int) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per (row, feature): splitmix64 of the pair.
    Deterministic so that the sample is a pure function of the codes and the seed."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2^64 by design
        z = (rows.astype(np.uint64) * np.uint64(n_latents) + features.astype(np.uint64)
             + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def select_examples(codes: SparseCodes, peak: np.ndarray, cfg: FeaturesParams, block: int = 1 << 15,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """Top-N and interval-sampled examples of every feature, in one pass over the codes.

    Returns flat arrays (one entry per kept example): feature, kind (0 top, 1 quantile), rank
    (within the top-N, or within its interval), bin (-1 for top), activation, row.
    """
    n, bins = codes.n_latents, cfg.quantile_bins
    top = BestPerGroup(n, cfg.top_n)
    sample = BestPerGroup(n * bins, cfg.per_bin) if bins and cfg.per_bin else None
    safe_peak = np.where(peak > 0, peak, 1.0)
    bar = progress_bar(total=codes.n_tokens, desc="examples", show=progress, unit="tok", unit_scale=True)
    for start, idx, val in codes.iter_blocks(block):
        active = val > 0
        r, _ = np.nonzero(active)
        f, v = idx[active].astype(np.int64), val[active].astype(np.float64)
        rows = r.astype(np.int64) + start
        top.add(f, v, rows)
        if sample is not None:
            # interval b of feature i holds activations in (b/B, (b+1)/B] x max_i
            b = np.minimum(np.ceil(v / safe_peak[f] * bins).astype(np.int64) - 1, bins - 1).clip(0)
            sample.add(f * bins + b, -_uniform_keys(rows, f, n, cfg.seed), rows)
        bar.update(idx.shape[0])
    bar.close()

    parts = []
    for kind, buffer, per in ((0, top, cfg.top_n), (1, sample, cfg.per_bin)):
        if buffer is None:
            continue
        feature, rank = np.divmod(np.arange(buffer.rows.size), per)
        bin_ = np.full(feature.shape, -1)
        if kind == 1:
            feature, bin_ = np.divmod(feature, bins)
        keep = buffer.rows.ravel() >= 0
        parts.append({"feature": feature[keep], "kind": np.full(int(keep.sum()), kind), "rank": rank[keep],
                      "bin": bin_[keep], "row": buffer.rows.ravel()[keep]})
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    # quantile examples carry random keys as scores; read their activations back from the codes
    out["activation"] = activation_at(codes, out["feature"], out["row"][:, None])[:, 0]
    return out


def activation_at(codes: SparseCodes, features: np.ndarray, rows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``out[e, w]`` = activation of ``features[e]`` at row ``rows[e, w]`` (0 where ``rows`` < 0)."""
    out = np.zeros(rows.shape, dtype=np.float32)
    for s in range(0, rows.shape[0], chunk):
        r = rows[s:s + chunk]
        valid = r >= 0
        safe = np.where(valid, r, 0)
        idx = codes.indices[safe.ravel()].reshape(*r.shape, -1)
        val = codes.values[safe.ravel()].reshape(*r.shape, -1)
        hit = idx == features[s:s + chunk, None, None]
        out[s:s + chunk] = (val * hit).sum(axis=-1) * valid
    return out


def windows(rows: np.ndarray, positions: int, before: int, after: int, n_rows: int) -> np.ndarray:
    """Row ids ``[E, before + 1 + after]`` around each example row, -1 outside its own context
    (or past the last of the ``n_rows`` rows, should the last context be short)."""
    offsets = np.arange(-before, after + 1)
    w = rows[:, None] + offsets[None, :]
    same_context = (w >= 0) & (w < n_rows) & (w // positions == (rows // positions)[:, None])
    return np.where(same_context, w, -1)


# --------------------------------------------------------------------------------------
# Logit lens
# --------------------------------------------------------------------------------------


@torch.no_grad()
def logit_lens(decoder: torch.Tensor, unembed: torch.Tensor, gain: torch.Tensor | None, k: int,
               chunk: int = 1024) -> dict[str, np.ndarray]:
    """Top-``k`` boosted and suppressed output tokens of each decoder row.

    logit effect of feature i = (W_dec[i] ⊙ g) @ W_U^T, computed ``chunk`` features at a time so
    the [n x vocab] matrix is never whole."""
    weight = unembed.float()
    if gain is not None:
        weight = weight * gain.float()[None, :]  # (W_dec ⊙ g) W_U^T = W_dec (W_U ⊙ g)^T
    top_v, top_i, bot_v, bot_i = [], [], [], []
    for s in range(0, decoder.shape[0], chunk):
        effect = decoder[s:s + chunk].float().to(weight.device) @ weight.t()
        v, i = effect.topk(k, dim=1)
        top_v.append(v.cpu()), top_i.append(i.cpu())
        v, i = effect.topk(k, dim=1, largest=False)
        bot_v.append(v.cpu()), bot_i.append(i.cpu())
    cat = lambda xs: torch.cat(xs).numpy()  # noqa: E731
    return {"top_ids": cat(top_i).astype(np.int32), "top_values": cat(top_v),
            "bottom_ids": cat(bot_i).astype(np.int32), "bottom_values": cat(bot_v)}


# --------------------------------------------------------------------------------------
# Tables (Parquet, stable schema)
# --------------------------------------------------------------------------------------

FEATURES_SCHEMA_VERSION = 1


def _list_array(values: np.ndarray, valid: np.ndarray | None = None) -> Any:
    """A pyarrow list column from a [rows, width] array (entries where ``valid`` is False dropped)."""
    import pyarrow as pa

    if valid is None:
        valid = np.ones(values.shape, dtype=bool)
    offsets = np.zeros(values.shape[0] + 1, dtype=np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid]))


def features_table(stats: FeatureStats, lens: dict[str, np.ndarray], vocab: list[str]) -> Any:
    """One row per feature: its statistics and its logit lens (ids, values, token strings)."""
    import pyarrow as pa

    vocab_arr = np.array(vocab, dtype=object)
    cols = {
        "feature": pa.array(np.arange(stats.count.size, dtype=np.int32)),
        "count": pa.array(stats.count),
        "density": pa.array(stats.density),
        "mean_activation": pa.array(stats.mean_active.astype(np.float32)),
        "max_activation": pa.array(stats.max),
    }
    for side in ("top", "bottom"):
        ids = lens[f"{side}_ids"]
        cols[f"logit_{side}_ids"] = _list_array(ids)
        cols[f"logit_{side}_values"] = _list_array(lens[f"{side}_values"].astype(np.float32))
        cols[f"logit_{side}_tokens"] = _list_array(vocab_arr[ids])
    table = pa.table(cols)
    return table.replace_schema_metadata({"saeatlas.features.schema": str(FEATURES_SCHEMA_VERSION)})


def contexts_table(examples: dict[str, np.ndarray], window_rows: np.ndarray, window_acts: np.ndarray,
                   tokens: np.ndarray, doc_ids: np.ndarray, positions: int) -> Any:
    """One row per kept example: which feature, why kept (top / quantile), where it is, and the
    token window (ids) with the feature's activation on each token."""
    import pyarrow as pa

    rows = examples["row"]
    valid = window_rows >= 0
    safe = np.where(valid, window_rows, 0)
    first = np.where(valid, np.arange(valid.shape[1])[None, :], valid.shape[1]).min(axis=1)
    centre_pos = rows % positions + 1  # +1: position 0 of a context is BOS, never stored
    table = pa.table({
        "feature": pa.array(examples["feature"].astype(np.int32)),
        "kind": pa.DictionaryArray.from_arrays(pa.array(examples["kind"].astype(np.int8)), pa.array(list(KINDS))),
        "rank": pa.array(examples["rank"].astype(np.int16)),
        "bin": pa.array(examples["bin"].astype(np.int16)),
        "activation": pa.array(examples["activation"].astype(np.float32)),
        "row": pa.array(rows.astype(np.int64)),
        "context": pa.array((rows // positions).astype(np.int32)),
        "position": pa.array(centre_pos.astype(np.int16)),
        "doc_id": pa.array(np.asarray(doc_ids[rows]).astype(np.int64)),
        # index of the example's own token inside the window lists below
        "centre": pa.array((np.argmax(window_rows == rows[:, None], axis=1) - first).astype(np.int16)),
        "token_ids": _list_array(np.asarray(tokens[safe.ravel()]).reshape(safe.shape).astype(np.int32), valid),
        "token_activations": _list_array(window_acts.astype(np.float32), valid),
    })
    return table.replace_schema_metadata({"saeatlas.features.schema": str(FEATURES_SCHEMA_VERSION)})


# --------------------------------------------------------------------------------------
# The whole stage's computation
# --------------------------------------------------------------------------------------


def summary_metrics(stats: FeatureStats, examples: dict[str, np.ndarray], codes: SparseCodes) -> dict[str, float]:
    density = stats.density
    alive = stats.count > 0
    kinds = examples["kind"]
    metrics: dict[str, float] = {
        "n_latents": codes.n_latents,
        "eval_tokens": stats.tokens,
        "alive_latents": int(alive.sum()),
        "dead_fraction": float(1 - alive.mean()),
        "l0": float(stats.count.sum() / max(stats.tokens, 1)),
        "top_examples": int((kinds == 0).sum()),
        "quantile_examples": int((kinds == 1).sum()),
        "truncated_activations": int(codes.manifest.get("truncated_activations", 0)),
    }
    if alive.any():  # density quantiles of the alive features (a dead one has log10 0 = -inf)
        log_d = np.log10(density[alive])
        for q in (10, 50, 90):
            metrics[f"log10_density_p{q}"] = float(np.percentile(log_d, q))
    return metrics
