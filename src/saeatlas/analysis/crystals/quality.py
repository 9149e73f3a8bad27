"""Crystal quality from the word Gram matrix: a task's ``cos_mean`` and ``silhouette``, observed,
under shuffled pairs (the null) and over resampled pairs (the bootstrap), all read off ``G``
without forming a difference vector."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from saeatlas.analysis.common.stats import permutation_p

QUALITIES = ("cos_mean", "silhouette")
_BATCH = 128  # permutations / resamples per vectorised block: [128, n, m] float64 ≈ 20 MB at n=60, m=300


@dataclass
class TaskGeometry:
    """Inner products of one task's words with each other and with the other tasks' δ's, all
    read off the word Gram matrix ``G``: ``Gaa = A Aᵀ``, ``Gbb = B Bᵀ``, ``Gab[i, k] = a_i·b_k``,
    ``xa[i, k] = a_i·δ°_k``, ``xb[i, k] = b_i·δ°_k`` (δ° = the other tasks' observed δ's, with
    norms ``o_norm`` and averaging matrix ``avg`` [m, T-1]: column u = 1/|u| on task u's rows)."""

    gaa: np.ndarray
    gbb: np.ndarray
    gab: np.ndarray
    xa: np.ndarray
    xb: np.ndarray
    o_norm: np.ndarray
    avg: np.ndarray


def task_geometry(gram: np.ndarray, ia: np.ndarray, ib: np.ndarray, oa: np.ndarray, ob: np.ndarray,
                  o_task: np.ndarray) -> TaskGeometry:
    """``ia``/``ib``: word rows of the task's a's and b's; ``oa``/``ob``/``o_task``: rows and
    task index (0..T-2) of the other tasks' pairs."""
    g = gram
    xa = g[np.ix_(ia, ob)] - g[np.ix_(ia, oa)]  # a_i·(b°_k - a°_k)
    xb = g[np.ix_(ib, ob)] - g[np.ix_(ib, oa)]
    o_sq = g[ob, ob] - 2.0 * g[oa, ob] + g[oa, oa]  # ‖b°_k - a°_k‖²
    n_other = int(o_task.max()) + 1 if len(o_task) else 0
    avg = np.zeros((len(o_task), n_other))
    if len(o_task):
        avg[np.arange(len(o_task)), o_task] = 1.0
        avg /= avg.sum(axis=0, keepdims=True)
    return TaskGeometry(g[np.ix_(ia, ia)], g[np.ix_(ib, ib)], g[np.ix_(ia, ib)], xa, xb,
                        np.sqrt(np.clip(o_sq, 0.0, None)), avg)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (a zero δ has cosine 0 with everything)."""
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def permuted_cosines(geo: TaskGeometry, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of the δ's when b is permuted, ``δ^π_i = b_{π(i)} - a_i``, for a batch [P, n]:

    ``δ_i·δ_j = Gbb[πi, πj] - Gab[j, πi] - Gab[i, πj] + Gaa[i, j]`` and
    ``δ_i·δ°_k = xb[πi, k] - xa[i, k]``; returns ``C`` [P, n, n] and ``X`` [P, n, m].
    """
    n = perms.shape[1]
    ar = np.arange(n)
    k = (geo.gbb[perms[:, :, None], perms[:, None, :]] - geo.gab[ar[None, None, :], perms[:, :, None]]
         - geo.gab[ar[None, :, None], perms[:, None, :]] + geo.gaa[None])
    r = np.sqrt(np.clip(np.einsum("pii->pi", k), 0.0, None))  # ‖δ_i‖
    c = _safe_div(k, r[:, :, None] * r[:, None, :])
    x = _safe_div(geo.xb[perms] - geo.xa[None], r[:, :, None] * geo.o_norm[None, None, :])
    return c, x


def quality_scores(c: np.ndarray, x: np.ndarray, avg: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """``cos_mean`` and ``silhouette`` [P] from cosines ``c`` [P, n, n] (within the task),
    ``x`` [P, n, m] (to the other tasks' δ's) and ``mask`` [P, n, n] (which (i, j) to compare:
    i ≠ j for permutations, different pairs for bootstrap resamples).

    ``cos_mean = Σ_{ij} M_ij C_ij / Σ M``; cosine distance ``1 - cos``; ``a_i = 1 - mean_j C_ij``
    over compared j; ``b_i = min_u (1 - mean_{k∈u} X_ik)``; ``s_i = (b_i - a_i) / max(a_i, b_i)``.
    The silhouette is absent (NaN) without other tasks.
    """
    m = mask.astype(np.float64)
    cos_mean = (c * m).sum(axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1.0)
    out = {"cos_mean": cos_mean}
    if avg.shape[1] == 0:
        out["silhouette"] = np.full(c.shape[0], np.nan)
        return out
    a = 1.0 - _safe_div((c * m).sum(axis=2), m.sum(axis=2))
    b = (1.0 - x @ avg).min(axis=2)
    s = _safe_div(b - a, np.maximum(a, b))
    out["silhouette"] = s.mean(axis=1)
    return out


def observed_cosines(geo: TaskGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``C`` [n, n] and ``X`` [n, m] of the observed pairing (the identity permutation)."""
    c, x = permuted_cosines(geo, np.arange(geo.gaa.shape[0])[None])
    return c[0], x[0]


def task_rng(seed: int, task: str, stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, task, stream): a task's permutations do not
    change when other tasks or spaces are added, and are shared by its spaces and variants."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), stream])


def permutations(n: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """``n_perm`` uniform random permutations of ``range(n)`` [n_perm, n] (fixed points allowed:
    a uniform permutation is the exchangeability null; the observed pairing is one draw)."""
    return np.argsort(rng.random((n_perm, n)), axis=1)


@dataclass
class QualityStats:
    """One quality (cos_mean or silhouette) of one task, space and variant, with its null."""

    value: float
    null: np.ndarray  # [P] values under shuffled pairs
    boot: np.ndarray  # [B] bootstrap values (empty without bootstrap)

    def summary(self, ci_level: float) -> dict[str, float | None]:
        sd = float(np.std(self.null, ddof=1)) if len(self.null) > 1 else 0.0
        lo = hi = None
        if len(self.boot):
            q = (1.0 - ci_level) / 2.0
            lo, hi = (float(v) for v in np.quantile(self.boot, [q, 1.0 - q]))
        mean = float(np.mean(self.null))
        return {"value": self.value, "null": mean, "null_sd": sd,
                "z": (self.value - mean) / sd if sd > 0 else None,
                "p": permutation_p(self.value, self.null), "ci_lo": lo, "ci_hi": hi,
                "excess": self.value - mean}


def task_quality(geo: TaskGeometry, perms: np.ndarray, boot_idx: np.ndarray) -> dict[str, QualityStats]:
    """Observed qualities, their shuffled-pair null (``perms`` [P, n]) and bootstrap over pairs
    (``boot_idx`` [B, n] resampled pair indices), in blocks of ``_BATCH``."""
    n = geo.gaa.shape[0]
    off_diag = ~np.eye(n, dtype=bool)
    c0, x0 = observed_cosines(geo)
    obs = quality_scores(c0[None], x0[None], geo.avg, off_diag[None])
    null: dict[str, list[np.ndarray]] = {q: [] for q in QUALITIES}
    for s in range(0, len(perms), _BATCH):
        c, x = permuted_cosines(geo, perms[s:s + _BATCH])
        for q, v in quality_scores(c, x, geo.avg, np.broadcast_to(off_diag, c.shape)).items():
            null[q].append(v)
    boot: dict[str, list[np.ndarray]] = {q: [] for q in QUALITIES}
    for s in range(0, len(boot_idx), _BATCH):
        idx = boot_idx[s:s + _BATCH]
        c = c0[idx[:, :, None], idx[:, None, :]]
        mask = idx[:, :, None] != idx[:, None, :]  # compare different pairs only
        for q, v in quality_scores(c, x0[idx], geo.avg, mask).items():
            boot[q].append(v)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return {q: QualityStats(float(obs[q][0]), cat(null[q]), cat(boot[q])) for q in QUALITIES}


def leave_one_out_cosines(c: np.ndarray) -> np.ndarray:
    """Per pair, ``cos(δ_i, Σ_{j≠i} δ̂_j)``: how well pair i follows the others' mean offset.

    With ``S = Σ_{jk} C_jk`` (= ‖Σ δ̂‖²) and row sums ``R_i``: numerator ``R_i - C_ii`` and
    ``‖Σ_{j≠i} δ̂_j‖² = S - 2 R_i + C_ii``.
    """
    diag = np.diag(c)
    rows = c.sum(axis=1)
    norm_sq = np.clip(c.sum() - 2.0 * rows + diag, 0.0, None)
    return _safe_div(rows - diag, np.sqrt(norm_sq))
