"""Step 8: what the lobes fire on: lobe x corpus domain enrichment against a label-shuffle null."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


def domain_enrichment(labels: np.ndarray, k: int, domain_firings: np.ndarray) -> np.ndarray:
    """[k, n_domains]: ``(F_lg / Σ_g F_lg) / (F_g / Σ_g F_g)``, ``F_lg`` = firings of lobe ``l``'s
    features on domain ``g``; NaN for an empty lobe or a domain without firings."""
    f = np.asarray(domain_firings, dtype=np.float64)
    per = np.stack([np.bincount(labels, weights=f[:, g], minlength=k) for g in range(f.shape[1])], axis=1)
    base = f.sum(0) / max(f.sum(), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = per / per.sum(1, keepdims=True)
        return np.where(base > 0, share / base, np.nan)


@dataclass
class DomainTables:
    """The enrichment table rows, the heatmap's cells (one row per lobe, one column per domain)
    and, per k, ``k<k>.domain_enrichment_max`` beside its null's mean and sd."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    ylabels: list[str] = field(default_factory=list)
    z: list[list[float | None]] = field(default_factory=list)  # log2 enrichment; None where not finite
    text: list[list[str]] = field(default_factory=list)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)


def lobe_domains(labelings: Sequence[tuple[int, np.ndarray]], f: np.ndarray, names: Sequence[str], k_max: int,
                 n_permutations: int, rng: np.random.Generator) -> DomainTables:
    """Enrichment of every lobe on every domain for each ``(k, lobes)`` with ``k <= k_max``, against
    ``n_permutations`` shuffles of the lobe labels among the analysed features (``f``: their
    firings per domain [m, n_domains]). Empty without domain names or firings."""
    out = DomainTables()
    if not names or f.size == 0 or f.sum() == 0:
        return out
    for k, lobes in labelings:
        if k > k_max:
            continue
        enr = domain_enrichment(lobes, k, f)
        null = np.stack([domain_enrichment(lobes[rng.permutation(lobes.size)], k, f)
                         for _ in range(n_permutations)])
        mean, sd = np.nanmean(null, axis=0), np.nanstd(null, axis=0, ddof=1)
        null_max = np.nanmax(null.reshape(null.shape[0], -1), axis=1)
        out.metrics[k] = {
            f"k{k}.domain_enrichment_max": float(np.nanmax(enr)),
            f"k{k}.domain_enrichment_max_null_mean": float(null_max.mean()),
            f"k{k}.domain_enrichment_max_null_sd": float(null_max.std(ddof=1)) if null_max.size > 1 else 0.0,
        }
        _add_cells(out, k, lobes, f, names, enr, mean, sd)
    return out


def _add_cells(out: DomainTables, k: int, lobes: np.ndarray, f: np.ndarray, names: Sequence[str], enr: np.ndarray,
               mean: np.ndarray, sd: np.ndarray) -> None:
    """One table row per (lobe, domain) of this k, and one heatmap row per lobe."""
    sizes = np.bincount(lobes, minlength=k)
    lobe_firings = np.bincount(lobes, weights=f.sum(1).astype(np.float64), minlength=k)
    for lobe in range(k):
        zs, txt = [], []
        for g, name in enumerate(names):
            e = float(enr[lobe, g])
            zz = (e - mean[lobe, g]) / sd[lobe, g] if sd[lobe, g] > 0 else math.nan
            share = float(f[lobes == lobe, g].sum() / max(lobe_firings[lobe], 1))
            out.rows.append({"k": k, "lobe": lobe, "n_features": int(sizes[lobe]), "domain": name,
                             "firing_share": share, "base_rate": float(f[:, g].sum() / max(f.sum(), 1)),
                             "enrichment": e, "enrichment_null_mean": float(mean[lobe, g]),
                             "enrichment_null_sd": float(sd[lobe, g]), "enrichment_z": float(zz)})
            zs.append(float(np.log2(e)) if e > 0 and math.isfinite(e) else None)
            txt.append(f"enrichment {e:.2f} (null {mean[lobe, g]:.2f} ± {sd[lobe, g]:.2f}); share {share:.3f}")
        out.ylabels.append(f"k={k} lobe {lobe} ({sizes[lobe]} features)")
        out.z.append(zs)
        out.text.append(txt)
