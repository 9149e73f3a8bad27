"""Feature neighbourhoods and maps: the exact nearest decoder neighbours of every feature at every
dictionary size (*Scaling Monosemanticity*'s feature neighbourhoods), and UMAP maps of the decoder
directions per size and of all sizes jointly (*The Geometry of Concepts*' interactive map, where a
feature and its split children should land next to each other).

What is computed, and against which null:

- **Nearest neighbours.** For feature ``i`` of a size-``n`` dictionary with unit decoder rows
  ``ŵ_i``, its ``k`` nearest neighbours are the ``k`` largest ``cos_ij = <ŵ_i, ŵ_j>`` over
  ``j ≠ i`` (self excluded by index, so an exact duplicate still counts as a neighbour; ties broken
  towards the lower index, so the lists are a deterministic function of the decoder). They are
  exact, not approximate: the ``[n, n]`` cosine matrix is formed ``chunk`` rows at a time and each
  block is reduced with ``np.argpartition``, so memory is O(chunk · n), never O(n²).
  Per size: ``nn_cos_mean`` / ``nn_cos_median`` (top-1 cosine ``c_i = max_{j≠i} cos_ij``, averaged
  or median over features) and ``topk_cos_mean`` (mean over features and ranks of the top-``k``
  cosines).

  *Null*: ``n`` isotropic random unit vectors in the same ``d`` (Gaussian rows, normalised;
  seeded), put through exactly the same computation. This answers "how close would the nearest
  neighbours be if the dictionary had no structure at all"; for ``n`` points in ``d`` dimensions
  the top-1 cosine of such a cloud approaches √(2 ln n / d) from below (that is 0.185 at
  n = 18432, d = 576; the null measures 0.166 there, and 0.136 at n = 1152). A random rotation
  of the dictionary (the null the splitting analysis uses to break the relation *between* two
  dictionaries) is **not** a null here: ``cos(Rŵ_i, Rŵ_j) = cos(ŵ_i, ŵ_j)`` for any orthogonal
  ``R``, i.e. a rotation preserves the Gram matrix, so every within-dictionary neighbour statistic
  would come out identical to the real one. (Caveat: the isotropic null also removes any global
  anisotropy of the decoder cloud, e.g. a shared mean direction, which by itself raises cosines;
  read the real-minus-null gap as an upper bound on "clustering beyond chance".)

- **Maps.** UMAP (``umap-learn``; ``n_neighbors``, ``min_dist``, ``metric``, fixed ``seed``, which
  also makes UMAP single-threaded and so deterministic) of each size's unit decoder rows, and, when
  ``joint`` is set, one UMAP of all sizes stacked, so that features of different sizes share one
  coordinate system.

  *Map faithfulness*: ``trustworthiness`` (Venna & Kaski; ``sklearn.manifold.trustworthiness``
  with ``n_neighbors = k`` and the same ``metric``): ``T = 1 − 2/(m k (2m − 3k − 1)) Σ_i Σ_{j ∈ U_i}
  (r(i, j) − k)``, ``U_i`` the points among the ``k`` nearest in the map but not in the original
  space, ``r`` the rank in the original space. ``T = 1`` when every map neighbour is a true
  neighbour. It needs dense ``[m, m]`` distances, so it is computed on a seeded subsample of
  ``m = trust_sample`` features (neighbourhoods then live at the subsample's coarser scale).
  *Null*: the same subsample with the map coordinates permuted within size (a map that carries
  no information; T ≈ 0.5).

- **Cross-size neighbours in the joint map.** For each adjacent pair of sizes ``(s, t)`` every
  larger feature ``j`` has its best smaller decoder match ``p_j = argmax_i cos(W^t_j, W^s_i)``
  (as in the splitting analysis); it is *linked* when ``cos ≥ match_cos`` (Leask et al.'s
  similar/novel cut, 0.7). ``map_parent_in_knn`` = the fraction of linked ``j`` whose ``p_j`` is among
  the ``k`` size-``s`` features nearest to ``j`` in the joint 2-D map (Euclidean). The candidates are
  the size-``s`` features only, so that the chance level does not depend on how many other sizes
  crowd the neighbourhood: it is ``map_parent_in_knn_chance = k / n_s``.
  *Null*: the joint-map coordinates permuted within each size (``null_permutations`` times,
  averaged): every size keeps its cloud of positions, only which feature sits where is broken;
  its expectation is the chance level. A real value well above it says the joint map puts a
  feature next to the feature it continues or splits from.

Metric keys: ``n<size>.<name>`` and ``n<size>.<name>_null`` for the neighbour statistics and each
per-size map's trustworthiness; ``joint.umap_trustworthiness[_null]``; ``pair_<s>_<t>.<name>``
for the cross-size statistics, ``mean.map_parent_in_knn[_null]`` over the pairs. A value that is
undefined (no linked feature in a pair) is left out rather than written as NaN.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from saeatlas.analysis.config import config_from_section
from saeatlas.analysis.inputs import check_decoders
from saeatlas.analysis.output import AnalysisOutput
from saeatlas.analysis.splitting import best_decoder_matches, unit_rows

METRICS = ("cosine", "euclidean")
# Tags of the independent random streams drawn from ``seed`` (see ``_rng``).
_NULL_VECTORS, _MAP_PERMUTATION, _TRUST_SAMPLE = 1, 2, 3
_JOINT = 0  # the "size" under which joint-map randomness is drawn


@dataclass(frozen=True)
class NeighboursConfig:
    """Settings of the neighbourhood and map analysis (params.yaml section ``neighbours:``)."""

    # Neighbours kept per feature: enough to show a neighbourhood as *Scaling Monosemanticity*
    # does (a split family of 2-5 children plus its context), while the table stays n·k rows
    # (184k rows at 18432). Also the k of the map tests (map_parent_in_knn, trustworthiness):
    # one notion of "near" throughout.
    k: int = 10
    # Rows per block of the cosine matrix: a [1024, 18432] float32 block is 75 MB, plus the
    # int64 argpartition result (151 MB); memory O(chunk · n) instead of 1.4 GB for [n, n].
    chunk: int = 1024
    # UMAP's default: each point's fuzzy neighbourhood spans ~15 features, wider than a split
    # family, so a family is placed among its context rather than as an isolated island.
    n_neighbors: int = 15
    # UMAP's default: small enough that near-duplicate and sibling features pack tightly
    # (what the cross-size test looks for), large enough to keep the map readable.
    min_dist: float = 0.1
    # Decoder rows are directions (their norm trades off against the encoder's), so the
    # natural distance is cosine; "euclidean" on the unit rows gives the same neighbour order.
    metric: str = "cosine"
    # Seed of UMAP (random_state: deterministic, single-threaded), the isotropic null vectors,
    # the map permutations and the trustworthiness subsample.
    seed: int = 0
    # Also one UMAP of all sizes stacked (the cross-size map) and the cross-size test on it.
    joint: bool = True
    # A larger feature is linked to its best smaller decoder match when cos ≥ 0.7: Leask et
    # al.'s similar/novel cut (cos² ≥ 0.49), the same as splitting.similar_cos.
    match_cos: float = 0.7
    # Permutations of the joint map averaged in the cross-size null: one permutation's fraction
    # has binomial noise √(p(1−p)/L); five cut it by √5 at the cost of five 2-D KD-tree queries.
    null_permutations: int = 5
    # Features subsampled for trustworthiness, which forms dense [m, m] distances in both spaces
    # and argsorts them: m = 2000 is 32 MB per matrix (18432 would be 2.7 GB).
    trust_sample: int = 2000

    def __post_init__(self) -> None:
        for name in ("k", "chunk", "null_permutations"):
            if getattr(self, name) < 1:
                raise ValueError(f"neighbours.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_neighbors < 2:
            raise ValueError(f"neighbours.n_neighbors must be >= 2 (UMAP), got {self.n_neighbors}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ValueError(f"neighbours.min_dist must be in [0, 1], got {self.min_dist}")
        if self.metric not in METRICS:
            raise ValueError(f"neighbours.metric must be one of {METRICS}, got {self.metric!r}")
        if self.seed < 0:
            raise ValueError(f"neighbours.seed must be >= 0, got {self.seed}")
        if not -1.0 <= self.match_cos <= 1.0:
            raise ValueError(f"neighbours.match_cos must be in [-1, 1], got {self.match_cos}")
        if self.trust_sample <= 2 * self.k:
            # sklearn's trustworthiness needs n_neighbors < m / 2.
            raise ValueError(f"neighbours.trust_sample must be > 2 * k = {2 * self.k}, got {self.trust_sample}")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> "NeighboursConfig":
        """From params.yaml's ``neighbours:`` section (missing keys take the defaults)."""
        return config_from_section(cls, section, "neighbours")


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


def exact_neighbours(units: np.ndarray, k: int, chunk: int = 1024, progress: bool = False,
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
    for a in tqdm(range(0, n, chunk), desc=desc, disable=not progress, mininterval=5, leave=False):
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
# Figures
# ------------------------------------------------------------------------------------------


def _maps_figure(sizes: tuple[int, ...], coords: dict[int, np.ndarray], top1: dict[int, np.ndarray],
                 joint: dict[int, np.ndarray] | None) -> Any:
    """Per-size UMAP maps coloured by each feature's top-1 neighbour cosine (bright = part of a
    tight group), and the joint map coloured by size."""
    from matplotlib.figure import Figure

    panels = len(sizes) + (joint is not None)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.0 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_axis_off()
    marker = lambda n: max(0.3, min(8.0, 3000.0 / n))  # noqa: E731  (points shrink as n grows)
    sc = None
    for ax, s in zip(axes, sizes):
        sc = ax.scatter(coords[s][:, 0], coords[s][:, 1], c=top1[s], s=marker(s), cmap="viridis", vmin=0.0,
                        vmax=1.0, linewidths=0, rasterized=True)
        ax.set_title(f"n = {s}")
        ax.set_xticks([])
        ax.set_yticks([])
    if sc is not None:
        fig.colorbar(sc, ax=axes[:len(sizes)].tolist(), shrink=0.8, label="top-1 neighbour cosine")
    if joint is not None:
        ax = axes[len(sizes)]
        total = sum(len(v) for v in joint.values())
        for s in sizes:
            ax.scatter(joint[s][:, 0], joint[s][:, 1], s=marker(total), linewidths=0, rasterized=True,
                       label=str(s))
        ax.set_title("all sizes, one map")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=4, title="size", title_fontsize=7)
    return fig


def _cosine_figure(sizes: tuple[int, ...], top1: dict[int, np.ndarray], top1_null: dict[int, np.ndarray]) -> Any:
    """Histogram of top-1 neighbour cosines per size, real beside the isotropic null."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.0 * len(sizes), 3.0), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    bins = np.linspace(-0.2, 1.0, 61)
    for ax, s in zip(axes, sizes):
        ax.hist(np.clip(top1[s], -0.2, 1.0), bins=bins, alpha=0.7, label="decoder")
        ax.hist(np.clip(top1_null[s], -0.2, 1.0), bins=bins, alpha=0.7, label="isotropic null")
        ax.set_title(f"n = {s}")
        ax.set_xlabel("top-1 neighbour cosine")
    axes[0].set_ylabel("features")
    axes[0].legend(fontsize=7)
    return fig


def _interactive(sizes: tuple[int, ...], coords: dict[int, np.ndarray], idx: dict[int, np.ndarray],
                 cos: dict[int, np.ndarray], joint_map: bool) -> dict[str, Any]:
    """Plotly scattergl: the joint map (one trace per size, so the legend colours and toggles
    sizes), or without a joint map the per-size maps as traces, all but the first hidden (their
    coordinate systems are unrelated). Hover: ``size:feature`` and its nearest neighbour."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, s in enumerate(sizes):
        text = [f"{s}:{f}<br>nearest: {s}:{idx[s][f, 0]} (cos {cos[s][f, 0]:.3f})" for f in range(s)]
        fig.add_trace(go.Scattergl(
            x=np.round(coords[s][:, 0], 4).tolist(), y=np.round(coords[s][:, 1], 4).tolist(), mode="markers",
            name=f"n={s}", text=text, hovertemplate="%{text}<extra></extra>",
            marker={"size": 4, "opacity": 0.7},
            visible=True if (joint_map or i == 0) else "legendonly"))
    title = ("Joint UMAP of the decoder directions of all sizes (colour = size)" if joint_map
             else "UMAP of the decoder directions, one size at a time (pick a size in the legend)")
    fig.update_layout(title=title, xaxis={"showticklabels": False}, yaxis={"showticklabels": False},
                      legend={"title": {"text": "dictionary size"}}, margin={"t": 50, "l": 5, "r": 5, "b": 5})
    return fig.to_plotly_json()


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


def run(config: NeighboursConfig, inputs: NeighboursInputs, *, progress: bool = True) -> AnalysisOutput:
    """Exact neighbours, per-size and joint UMAP maps, and their statistics beside their nulls.

    Metrics (see the module docstring): ``n<size>.{nn_cos_mean, nn_cos_median, topk_cos_mean,
    umap_trustworthiness}`` each with ``_null``; ``joint.umap_trustworthiness[_null]``;
    ``pair_<s>_<t>.{linked, linked_fraction, map_parent_in_knn, map_parent_in_knn_null,
    map_parent_in_knn_chance}``; ``mean.map_parent_in_knn[_null]``. Tables ``neighbours`` (size,
    feature, rank, neighbour, cos) and ``umap_coordinates`` (size, feature, x, y[, joint_x,
    joint_y]); figures ``neighbours_maps`` and ``neighbours_cosines``; interactive
    ``neighbours_map``.
    """
    inputs.validate()
    sizes = tuple(int(s) for s in inputs.sizes)
    smallest = sizes[0]
    if smallest <= 2 * config.k:
        raise ValueError(f"neighbours.k = {config.k} is too large for the smallest size {smallest} "
                         "(need size > 2k: trustworthiness needs k < m / 2)")
    if config.n_neighbors >= smallest:
        raise ValueError(f"neighbours.n_neighbors = {config.n_neighbors} must be < the smallest size {smallest}")
    units = {s: unit_rows(inputs.decoders[s]) for s in sizes}
    d = units[smallest].shape[1]

    metrics: dict[str, float] = {}
    idx, cos, top1_null = {}, {}, {}
    for s in sizes:
        idx[s], cos[s] = exact_neighbours(units[s], config.k, config.chunk, progress, desc=f"neighbours n{s}")
        null_units = isotropic_units(s, d, _rng(config.seed, _NULL_VECTORS, s))
        _, cos_null = exact_neighbours(null_units, config.k, config.chunk, progress, desc=f"null n{s}")
        top1_null[s] = cos_null[:, 0]
        real, null = cosine_summary(cos[s]), cosine_summary(cos_null)
        for name in real:
            metrics[f"n{s}.{name}"] = real[name]
            metrics[f"n{s}.{name}_null"] = null[name]

    coords: dict[int, np.ndarray] = {}
    for s in tqdm(sizes, desc="UMAP per size", disable=not progress, leave=False):
        coords[s] = _umap(units[s], config)
        perm = _rng(config.seed, _MAP_PERMUTATION, s).permutation(s)
        t, t_null = _trustworthiness(units[s], coords[s], coords[s][perm], config,
                                     _rng(config.seed, _TRUST_SAMPLE, s))
        metrics[f"n{s}.umap_trustworthiness"] = t
        metrics[f"n{s}.umap_trustworthiness_null"] = t_null

    joint: dict[int, np.ndarray] | None = None
    if config.joint:
        stacked = _umap(np.concatenate([units[s] for s in sizes]), config)
        offsets = np.cumsum((0,) + sizes)
        joint = {s: stacked[offsets[i]:offsets[i + 1]] for i, s in enumerate(sizes)}
        # Null maps: each size's joint coordinates permuted within the size, null_permutations times.
        perm_rng = _rng(config.seed, _MAP_PERMUTATION, _JOINT)
        null_maps = [{s: joint[s][perm_rng.permutation(s)] for s in sizes} for _ in range(config.null_permutations)]
        t, t_null = _trustworthiness(np.concatenate([units[s] for s in sizes]), stacked,
                                     np.concatenate([null_maps[0][s] for s in sizes]), config,
                                     _rng(config.seed, _TRUST_SAMPLE, _JOINT))
        metrics["joint.umap_trustworthiness"] = t
        metrics["joint.umap_trustworthiness_null"] = t_null

        pair_vals: dict[str, list[float]] = {"map_parent_in_knn": [], "map_parent_in_knn_null": []}
        for s, t_size in zip(sizes, sizes[1:]):
            key = f"pair_{s}_{t_size}"
            parents, pcos = best_decoder_matches(units[s], units[t_size], config.chunk, progress,
                                                 desc=f"matches {s}->{t_size}")
            linked = pcos >= config.match_cos
            metrics[f"{key}.linked"] = int(linked.sum())
            metrics[f"{key}.linked_fraction"] = float(linked.mean())
            metrics[f"{key}.map_parent_in_knn_chance"] = min(config.k, s) / s
            if not linked.any():
                continue  # undefined without links; left out rather than NaN
            real = map_parent_hits(joint[s], joint[t_size][linked], parents[linked], config.k).mean()
            null = np.mean([map_parent_hits(nm[s], nm[t_size][linked], parents[linked], config.k).mean()
                            for nm in null_maps])
            metrics[f"{key}.map_parent_in_knn"] = float(real)
            metrics[f"{key}.map_parent_in_knn_null"] = float(null)
            pair_vals["map_parent_in_knn"].append(float(real))
            pair_vals["map_parent_in_knn_null"].append(float(null))
        for name, vals in pair_vals.items():
            if vals:
                metrics[f"mean.{name}"] = float(np.mean(vals))

    neighbour_rows = [{"size": s, "feature": f, "rank": r + 1, "neighbour": int(idx[s][f, r]),
                       "cos": round(float(cos[s][f, r]), 6)}
                      for s in sizes for f in range(s) for r in range(config.k)]
    coord_rows = []
    for s in sizes:
        for f in range(s):
            row: dict[str, Any] = {"size": s, "feature": f, "x": round(float(coords[s][f, 0]), 5),
                                   "y": round(float(coords[s][f, 1]), 5)}
            if joint is not None:
                row["joint_x"] = round(float(joint[s][f, 0]), 5)
                row["joint_y"] = round(float(joint[s][f, 1]), 5)
            coord_rows.append(row)

    top1 = {s: cos[s][:, 0] for s in sizes}
    return AnalysisOutput(
        metrics=metrics,
        tables={"neighbours": neighbour_rows, "umap_coordinates": coord_rows},
        figures={"neighbours_maps": _maps_figure(sizes, coords, top1, joint),
                 "neighbours_cosines": _cosine_figure(sizes, top1, top1_null)},
        interactive={"neighbours_map": _interactive(sizes, joint if joint is not None else coords, idx, cos,
                                                    joint is not None)},
    )
