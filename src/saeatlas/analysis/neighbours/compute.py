"""Exact decoder neighbours against an isotropic null, UMAP maps judged by trustworthiness against
permuted maps, and the cross-size test on the joint map (the package docstring gives the methods).

``run`` reads as the methods: neighbour statistics per size, one map per size, then (with
``joint``) one map of all sizes and where each linked larger feature lands relative to its
smaller match."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from saeatlas.analysis.common.inputs import check_decoders
from saeatlas.analysis.common.linalg import best_decoder_matches, unit_rows
from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.progress import bar
from saeatlas.analysis.neighbours.config import NeighboursConfig
from saeatlas.analysis.neighbours.figures import cosine_figure, interactive_map, maps_figure

# Tags of the independent random streams drawn from ``seed`` (see ``_rng``).
_NULL_VECTORS, _MAP_PERMUTATION, _TRUST_SAMPLE = 1, 2, 3
_JOINT = 0  # the "size" under which joint-map randomness is drawn

Maps = dict[int, np.ndarray]  # size -> [size, 2] map coordinates


@dataclass
class NeighboursInputs:
    """Decoder matrices of every dictionary size (rows of any norm; normalised here)."""

    sizes: tuple[int, ...]
    decoders: dict[int, np.ndarray]  # size -> [size, d]

    def validate(self) -> None:
        check_decoders(self.sizes, self.decoders)


# ------------------------------------------------------------------------------------------
# Pieces (pure functions, tested on hand-built inputs)
# ------------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, size: int) -> np.random.Generator:
    """An independent generator per (purpose, size): results do not depend on the order in
    which sizes are processed or on which other sizes are present."""
    return np.random.default_rng([seed, stream, size])


def exact_neighbours(units: np.ndarray, k: int, chunk: int = 1024,
                     desc: str = "neighbours") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of every row of ``units`` [n, d] by inner product (cosine for unit
    rows), itself excluded: ``idx`` [n, k] int64 and ``cos`` [n, k] float64, best first.

    Exact and deterministic: ordered by (−cos, index), so a tie at the k-th place goes to the
    lower index. Blocks of ``chunk`` rows: ``S = U_B Uᵀ`` [chunk, n], diagonal entries set to −∞
    (self-exclusion by index, not by value: duplicates stay neighbours), the top k found with
    ``argpartition`` (O(n) per row), and rows where more than k entries reach the k-th value
    re-resolved by a full lexicographic sort of just those candidates.
    """
    units = np.asarray(units, dtype=np.float32)
    n = units.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k = {k} neighbours need 1 <= k <= n - 1 = {n - 1}")
    idx = np.empty((n, k), dtype=np.int64)
    cos = np.empty((n, k), dtype=np.float64)
    for a in bar(range(0, n, chunk), desc=desc):
        sims = units[a:a + chunk] @ units.T  # [b, n]: S_ij = <u_i, u_j>
        rows = np.arange(sims.shape[0])
        sims[rows, a + rows] = -np.inf
        top = np.argpartition(sims, n - k, axis=1)[:, n - k:]  # the k largest, unordered
        kth = np.take_along_axis(sims, top, axis=1).min(axis=1)
        tied = np.flatnonzero((sims >= kth[:, None]).sum(axis=1) > k)
        for r in tied:  # ties across the k-th place: keep the lowest indices among them
            cand = np.flatnonzero(sims[r] >= kth[r])
            top[r] = cand[np.lexsort((cand, -sims[r, cand]))[:k]]
        vals = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -vals), axis=1)  # (−cos, index) within each row
        idx[a:a + chunk] = np.take_along_axis(top, order, axis=1)
        cos[a:a + chunk] = np.take_along_axis(vals, order, axis=1)
    return idx, cos


def isotropic_units(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` directions uniform on the unit sphere in ``d`` dimensions (normalised Gaussians)."""
    return unit_rows(rng.standard_normal((n, d)))


def cosine_summary(cos: np.ndarray) -> dict[str, float]:
    """Top-1 cosine mean and median, and the mean of all top-k cosines, from ``cos`` [n, k]."""
    return {"nn_cos_mean": float(cos[:, 0].mean()), "nn_cos_median": float(np.median(cos[:, 0])),
            "topk_cos_mean": float(cos.mean())}


def map_parent_hits(coords_small: np.ndarray, coords_large: np.ndarray, parents: np.ndarray,
                    k: int) -> np.ndarray:
    """For each larger feature (rows of ``coords_large`` [m, 2]): is ``parents[j]`` among the ``k``
    smaller features (rows of ``coords_small`` [n, 2]) nearest to it in the map (Euclidean)?"""
    k = min(k, len(coords_small))
    if len(coords_large) == 0:
        return np.zeros(0, dtype=bool)
    _, near = cKDTree(coords_small).query(coords_large, k=k)
    near = np.asarray(near).reshape(len(coords_large), k)
    return (near == np.asarray(parents)[:, None]).any(axis=1)


def _umap(x: np.ndarray, config: NeighboursConfig) -> np.ndarray:
    """2-D UMAP of the rows of ``x``; ``umap`` is imported here because importing it (numba) is slow."""
    import umap

    with warnings.catch_warnings():
        # "n_jobs value 1 overridden to 1 by setting random_state": the price of determinism.
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        reducer = umap.UMAP(n_neighbors=config.n_neighbors, min_dist=config.min_dist, metric=config.metric,
                            n_components=2, random_state=config.seed, n_jobs=1)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def _trustworthiness(x: np.ndarray, emb: np.ndarray, emb_null: np.ndarray, config: NeighboursConfig,
                     rng: np.random.Generator) -> tuple[float, float]:
    """Trustworthiness of ``emb`` and of the permuted ``emb_null`` as maps of ``x``, on one seeded
    subsample of at most ``trust_sample`` rows (the same rows for both)."""
    from sklearn.manifold import trustworthiness

    n = len(x)
    rows = np.sort(rng.choice(n, size=config.trust_sample, replace=False)) if n > config.trust_sample \
        else np.arange(n)
    kw = {"n_neighbors": config.k, "metric": config.metric}
    return (float(trustworthiness(x[rows], emb[rows], **kw)),
            float(trustworthiness(x[rows], emb_null[rows], **kw)))


# ------------------------------------------------------------------------------------------
# The steps of ``run``
# ------------------------------------------------------------------------------------------


def check_sizes(config: NeighboursConfig, sizes: tuple[int, ...]) -> None:
    """The smallest dictionary must hold more than 2k features (trustworthiness needs k < m / 2)
    and more than UMAP's n_neighbors."""
    smallest = sizes[0]
    if smallest <= 2 * config.k:
        raise ValueError(f"neighbours.k = {config.k} is too large for the smallest size {smallest} "
                         "(need size > 2k: trustworthiness needs k < m / 2)")
    if config.n_neighbors >= smallest:
        raise ValueError(f"neighbours.n_neighbors = {config.n_neighbors} must be < the smallest size {smallest}")


def neighbour_statistics(config: NeighboursConfig, units: dict[int, np.ndarray]
                         ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, np.ndarray],
                                    dict[str, float]]:
    """Exact k nearest neighbours of every size's unit decoder rows and of as many isotropic
    random directions (the null): ``idx``, ``cos``, the null's top-1 cosines, and
    ``n<size>.{nn_cos_mean, nn_cos_median, topk_cos_mean}[_null]``."""
    d = next(iter(units.values())).shape[1]
    metrics: dict[str, float] = {}
    idx, cos, top1_null = {}, {}, {}
    for s, u in units.items():
        idx[s], cos[s] = exact_neighbours(u, config.k, config.chunk, desc=f"neighbours n{s}")
        null_units = isotropic_units(s, d, _rng(config.seed, _NULL_VECTORS, s))
        _, cos_null = exact_neighbours(null_units, config.k, config.chunk, desc=f"null n{s}")
        top1_null[s] = cos_null[:, 0]
        real, null = cosine_summary(cos[s]), cosine_summary(cos_null)
        for name in real:
            metrics[f"n{s}.{name}"] = real[name]
            metrics[f"n{s}.{name}_null"] = null[name]
    return idx, cos, top1_null, metrics


def per_size_maps(config: NeighboursConfig, units: dict[int, np.ndarray]) -> tuple[Maps, dict[str, float]]:
    """One UMAP per size, and its trustworthiness beside that of the map permuted within the size:
    ``n<size>.umap_trustworthiness[_null]``."""
    coords: Maps = {}
    metrics: dict[str, float] = {}
    for s in bar(tuple(units), desc="UMAP per size"):
        coords[s] = _umap(units[s], config)
        perm = _rng(config.seed, _MAP_PERMUTATION, s).permutation(s)
        t, t_null = _trustworthiness(units[s], coords[s], coords[s][perm], config,
                                     _rng(config.seed, _TRUST_SAMPLE, s))
        metrics[f"n{s}.umap_trustworthiness"] = t
        metrics[f"n{s}.umap_trustworthiness_null"] = t_null
    return coords, metrics


def joint_map(config: NeighboursConfig, units: dict[int, np.ndarray]) -> tuple[Maps, list[Maps], dict[str, float]]:
    """One UMAP of all sizes stacked (split back per size), the ``null_permutations`` null maps
    (each size's joint coordinates permuted within the size), and
    ``joint.umap_trustworthiness[_null]`` (the null: the first permuted map)."""
    sizes = tuple(units)
    x = np.concatenate([units[s] for s in sizes])
    stacked = _umap(x, config)
    offsets = np.cumsum((0,) + sizes)
    joint = {s: stacked[offsets[i]:offsets[i + 1]] for i, s in enumerate(sizes)}
    perm_rng = _rng(config.seed, _MAP_PERMUTATION, _JOINT)
    null_maps = [{s: joint[s][perm_rng.permutation(s)] for s in sizes} for _ in range(config.null_permutations)]
    t, t_null = _trustworthiness(x, stacked, np.concatenate([null_maps[0][s] for s in sizes]), config,
                                 _rng(config.seed, _TRUST_SAMPLE, _JOINT))
    return joint, null_maps, {"joint.umap_trustworthiness": t, "joint.umap_trustworthiness_null": t_null}


def _pair_links(config: NeighboursConfig, units: dict[int, np.ndarray], joint: Maps, null_maps: list[Maps],
                s: int, t: int) -> dict[str, float]:
    """Adjacent sizes ``s < t``: how many size-``t`` features are linked to their best size-``s``
    decoder match, and the fraction whose match is among their k nearest size-``s`` features in
    the joint map, beside the permuted maps' mean fraction and the chance level k / n_s. Without
    a link the map fractions are left out (undefined), not NaN."""
    key = f"pair_{s}_{t}"
    parents, pcos = best_decoder_matches(units[s], units[t], config.chunk, desc=f"matches {s}->{t}")
    linked = pcos >= config.match_cos
    out: dict[str, float] = {f"{key}.linked": int(linked.sum()), f"{key}.linked_fraction": float(linked.mean()),
                             f"{key}.map_parent_in_knn_chance": min(config.k, s) / s}
    if not linked.any():
        return out
    real = map_parent_hits(joint[s], joint[t][linked], parents[linked], config.k).mean()
    null = np.mean([map_parent_hits(nm[s], nm[t][linked], parents[linked], config.k).mean()
                    for nm in null_maps])
    out[f"{key}.map_parent_in_knn"] = float(real)
    out[f"{key}.map_parent_in_knn_null"] = float(null)
    return out


def cross_size_links(config: NeighboursConfig, units: dict[int, np.ndarray], joint: Maps,
                     null_maps: list[Maps]) -> dict[str, float]:
    """``pair_<s>_<t>.*`` for every adjacent pair of sizes and ``mean.map_parent_in_knn[_null]``
    over the pairs where it is defined."""
    sizes = tuple(units)
    metrics: dict[str, float] = {}
    pair_vals: dict[str, list[float]] = {"map_parent_in_knn": [], "map_parent_in_knn_null": []}
    for s, t in zip(sizes, sizes[1:]):
        pair = _pair_links(config, units, joint, null_maps, s, t)
        metrics.update(pair)
        for name, vals in pair_vals.items():
            if f"pair_{s}_{t}.{name}" in pair:
                vals.append(pair[f"pair_{s}_{t}.{name}"])
    for name, vals in pair_vals.items():
        if vals:
            metrics[f"mean.{name}"] = float(np.mean(vals))
    return metrics


def neighbour_rows(sizes: tuple[int, ...], idx: dict[int, np.ndarray], cos: dict[int, np.ndarray],
                   k: int) -> list[dict[str, Any]]:
    """Table ``neighbours``: size, feature, rank (1 = nearest), neighbour, cos."""
    return [{"size": s, "feature": f, "rank": r + 1, "neighbour": int(idx[s][f, r]),
             "cos": round(float(cos[s][f, r]), 6)}
            for s in sizes for f in range(s) for r in range(k)]


def coordinate_rows(sizes: tuple[int, ...], coords: Maps, joint: Maps | None) -> list[dict[str, Any]]:
    """Table ``umap_coordinates``: size, feature, x, y (per-size map) and joint_x, joint_y."""
    rows = []
    for s in sizes:
        for f in range(s):
            row: dict[str, Any] = {"size": s, "feature": f, "x": round(float(coords[s][f, 0]), 5),
                                   "y": round(float(coords[s][f, 1]), 5)}
            if joint is not None:
                row["joint_x"] = round(float(joint[s][f, 0]), 5)
                row["joint_y"] = round(float(joint[s][f, 1]), 5)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


def run(config: NeighboursConfig, inputs: NeighboursInputs) -> AnalysisOutput:
    """Exact neighbours, per-size and joint UMAP maps, and their statistics beside their nulls.

    Metrics (see the package docstring): ``n<size>.{nn_cos_mean, nn_cos_median, topk_cos_mean,
    umap_trustworthiness}`` each with ``_null``; ``joint.umap_trustworthiness[_null]``;
    ``pair_<s>_<t>.{linked, linked_fraction, map_parent_in_knn, map_parent_in_knn_null,
    map_parent_in_knn_chance}``; ``mean.map_parent_in_knn[_null]``. Tables ``neighbours`` (size,
    feature, rank, neighbour, cos) and ``umap_coordinates`` (size, feature, x, y[, joint_x,
    joint_y]); figures ``neighbours_maps`` and ``neighbours_cosines``; interactive
    ``neighbours_map``.
    """
    inputs.validate()
    sizes = tuple(int(s) for s in inputs.sizes)
    check_sizes(config, sizes)
    units = {s: unit_rows(inputs.decoders[s]) for s in sizes}

    # 1. Nearest neighbours of each size against the isotropic null.
    idx, cos, top1_null, metrics = neighbour_statistics(config, units)
    # 2. One map per size, judged by trustworthiness against the permuted map.
    coords, map_metrics = per_size_maps(config, units)
    metrics.update(map_metrics)
    # 3. One map of all sizes: does a linked larger feature land beside its smaller match?
    joint: Maps | None = None
    if config.joint:
        joint, null_maps, joint_metrics = joint_map(config, units)
        metrics.update(joint_metrics)
        metrics.update(cross_size_links(config, units, joint, null_maps))

    top1 = {s: cos[s][:, 0] for s in sizes}
    return AnalysisOutput(
        metrics=metrics,
        tables={"neighbours": neighbour_rows(sizes, idx, cos, config.k),
                "umap_coordinates": coordinate_rows(sizes, coords, joint)},
        figures={"neighbours_maps": maps_figure(sizes, coords, top1, joint),
                 "neighbours_cosines": cosine_figure(sizes, top1, top1_null)},
        interactive={"neighbours_map": interactive_map(sizes, joint if joint is not None else coords, idx, cos,
                                                       joint is not None)},
    )
