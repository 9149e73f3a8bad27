"""Splitting inside one Matryoshka SAE: the latents each nested prefix adds, read against the
prefix before it.

Why. A Matryoshka SAE of n latents holds dictionaries of its prefix sizes (with the default
fractions, n = 18,432 holds 1,152, 2,304, 4,608 and 9,216: the study's own sizes), so the
splitting question can be asked inside it as well as across separately trained SAEs. The two are
not the same question. Across sizes, the smaller SAE's feature is *replaced*: the larger SAE has
several features near it that fire inside it (split children), or one near-copy. Inside a
Matryoshka SAE the smaller dictionary is *kept*: a prefix latent is the same latent in every
larger prefix. What remains to ask is what the added latents ``[m_i, m_{i+1})`` are, against the
prefix ``[0, m_i)``:

- by **direction**, the across-size classes with the prefix as the smaller SAE and the added
  group as the larger (identical, split child, other similar, novel; Leask et al.'s cosine rule),
  each beside the same null (the added group's decoder rotated, its token rows permuted);
- by **firing**, whether an added latent fires inside one prefix latent: ``nested`` when
  ``max_i |F_i ∩ F_j| / |F_j| ≥ child_min_containment``. A Matryoshka child that carries only
  what its parent does not (Bussmann et al. 2025's answer to absorption) points away from the
  parent, so the direction test calls it novel, while its tokens are still the parent's;
  ``nested_novel_fraction`` counts exactly those. Null: the same row-permuted codes, which keep
  every latent's firing rate (a prefix latent that fires on a third of the tokens holds a third
  of anything by chance) and break only the token correspondence.

Fractions are over the *alive* added latents (``min_firings``), as across sizes. Metrics are
``prefix_<m_i>_<m_{i+1}>.<name>`` and ``<name>_null``, and ``prefix_mean.<name>`` over the
steps; table ``prefix_classes`` (one row per step).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import sparse

from saeatlas.analysis.splitting.config import SplittingConfig
from saeatlas.analysis.splitting.matching import NOVEL, best_containment, match

# averaged over the prefix steps as prefix_mean.<name> (and <name>_null)
MEAN_KEYS = ("identical_fraction", "split_child_fraction", "other_similar_fraction", "novel_fraction",
             "similar_fraction", "leask_reconstruction_fraction", "nested_fraction", "nested_novel_fraction")


def _nested(config: SplittingConfig, codes_s: sparse.csr_matrix, codes_g: sparse.csr_matrix,
            alive: np.ndarray, novel: np.ndarray, desc: str) -> tuple[float, float, float]:
    """Nested fraction, nested-and-novel fraction (both over the alive added latents) and the
    mean best containment of the alive ones."""
    share, _ = best_containment(codes_s, codes_g, config.activation_chunk, desc)
    nested = alive & (share >= config.child_min_containment)
    n_alive = max(int(alive.sum()), 1)
    mean = float(share[alive].mean()) if alive.any() else 0.0
    return float(nested.sum() / n_alive), float((nested & novel).sum() / n_alive), mean


def _step(config: SplittingConfig, start: int, stop: int, decoder: np.ndarray, codes: sparse.csc_matrix,
          rng: np.random.Generator) -> tuple[dict[str, float], dict[str, Any]]:
    """One prefix step: the latents ``[start, stop)`` against the prefix ``[0, start)``."""
    from saeatlas.analysis.splitting.compute import _class_fractions, _firing, _null_larger, leask_metrics

    dec_s, dec_g = decoder[:start], decoder[start:stop]
    codes_s, codes_g = codes[:, :start].tocsr(), codes[:, start:stop].tocsr()
    _, firings = _firing(codes_g)
    alive = firings >= config.min_firings
    n_alive = int(alive.sum())
    tag = f"prefix {start}->{stop}"
    dec_null, codes_null = _null_larger(dec_g, codes_g, rng)
    p = f"prefix_{start}_{stop}."
    met: dict[str, float] = {p + "n_prefix": start, p + "n_added": stop - start, p + "n_added_alive": n_alive}
    row: dict[str, Any] = {"step": f"{start}->{stop}", "prefix": start, "added": stop - start, "added_alive": n_alive}
    for suffix, dec, cod in (("", dec_g, codes_g), ("_null", dec_null, codes_null)):
        m = match(config, dec_s, dec, codes_s, cod, firings, tag + suffix)
        met.update(_class_fractions(m.cls, n_alive, p, suffix))
        met.update({k: v for k, v in leask_metrics(p, suffix, m.cos, alive, config.leask_cos).items()
                    if "_alive" not in k})
        nested, nested_novel, mean = _nested(config, codes_s, cod, alive, m.cls.classes == NOVEL,
                                             f"containment {tag}{suffix}")
        met[p + "nested_fraction" + suffix] = nested
        met[p + "nested_novel_fraction" + suffix] = nested_novel
        met[p + "best_containment_mean" + suffix] = mean
    for name in MEAN_KEYS + ("best_containment_mean",):
        for suffix in ("", "_null"):
            row[name + suffix] = met[p + name + suffix]
    return met, row


def prefix_steps(config: SplittingConfig, decoder: np.ndarray, codes: sparse.spmatrix, ends: Sequence[int],
                 rng: np.random.Generator) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Every step between consecutive prefix ends (``ends`` includes the whole dictionary):
    metrics with their means over the steps, and the table rows."""
    cols = sparse.csc_matrix(codes)
    metrics: dict[str, float] = {}
    rows = []
    for start, stop in zip(ends, ends[1:]):
        met, row = _step(config, int(start), int(stop), np.asarray(decoder), cols, rng)
        metrics.update(met)
        rows.append(row)
    for name in MEAN_KEYS:
        for suffix in ("", "_null"):
            metrics[f"prefix_mean.{name}{suffix}"] = float(np.mean([r[name + suffix] for r in rows]))
    return metrics, rows
