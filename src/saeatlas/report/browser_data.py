"""What the feature browser shows, read or computed per dictionary size: the feature and context
tables, per-feature activation histograms and co-firing partners (from the code store), and the
analyses' tables (neighbours, UMAP, lobes, splitting matches) indexed by feature.

Why arrays and offsets rather than per-feature Python objects: the default study has 35,712
features and half a million kept contexts per large size; the browser writes them chunk by chunk,
so everything here stays columnar (NumPy) and ``browser_records`` turns one chunk at a time into
lists. Memory is bounded by the tables themselves and by a fixed budget for the co-occurrence
blocks, never by n x n.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from saeatlas.errors import StoreError
from saeatlas.progress import bar

HIST_BINS = 24
COOC_TOP = 5
# Elements of one dense co-occurrence block [rows, n] (float32): three such arrays live at once.
COOC_BLOCK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------
# Ragged columns and groups
# --------------------------------------------------------------------------------------


def split_lengths(flat: list[Any], lengths: np.ndarray) -> list[list[Any]]:
    """``flat`` cut into consecutive sublists of ``lengths``."""
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    return [flat[a:b] for a, b in zip(starts, ends)]


@dataclass(frozen=True)
class Ragged:
    """A list column as flat ``values`` and ``offsets`` [rows + 1]: rows are taken in bulk, so one
    chunk's lists are built with one NumPy gather instead of a Python loop per element."""

    values: np.ndarray
    offsets: np.ndarray

    def take(self, rows: np.ndarray, convert: Callable[[np.ndarray], list[Any]]) -> list[list[Any]]:
        """The lists of ``rows`` (any order), their values converted by ``convert``."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        total = int(lengths.sum())
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return split_lengths(convert(self.values[shift + np.arange(total)]), lengths)


def ragged_column(table: Any, name: str) -> Ragged:
    """A pyarrow list column as ``Ragged`` (offsets rebased to 0, whatever the slicing)."""
    import pyarrow.compute as pc

    arr = table.column(name).combine_chunks()
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    return Ragged(np.asarray(pc.list_flatten(arr)), offsets - offsets[0])


def group_offsets(keys: np.ndarray, n: int, path: Path, field: str) -> np.ndarray:
    """Offsets [n + 1] of the runs of each key 0..n-1 in the sorted ``keys``; a key outside 0..n-1
    is damaged data and names the file and field."""
    keys = np.asarray(keys, dtype=np.int64)
    if keys.size and (keys.min() < 0 or keys.max() >= n):
        raise StoreError(f"{path}: field '{field}' holds {int(keys.min())}..{int(keys.max())}, outside 0..{n - 1}")
    return np.searchsorted(keys, np.arange(n + 1), side="left")


@dataclass(frozen=True)
class Groups:
    """Rows of a table grouped by feature: ``rows[offsets[f]:offsets[f + 1]]`` are feature f's rows."""

    rows: np.ndarray
    offsets: np.ndarray

    @classmethod
    def by(cls, keys: np.ndarray, order_keys: tuple[np.ndarray, ...], n: int, path: Path, field: str) -> "Groups":
        """Group rows by ``keys``; within a group, sorted by ``order_keys`` (first = primary)."""
        rows = np.lexsort(tuple(reversed(order_keys)) + (keys,)) if order_keys else np.argsort(keys, kind="stable")
        return cls(rows, group_offsets(keys[rows], n, path, field))

    def of(self, feature: int) -> np.ndarray:
        return self.rows[self.offsets[feature]:self.offsets[feature + 1]]

    def span(self, first: int, stop: int) -> tuple[int, int]:
        """Positions in ``rows`` of the features first..stop-1 (a contiguous range)."""
        return int(self.offsets[first]), int(self.offsets[stop])


# --------------------------------------------------------------------------------------
# Feature and context tables
# --------------------------------------------------------------------------------------


def read_parquet(path: Path, columns: tuple[str, ...]) -> Any:
    """The named columns of a Parquet file; a missing column names the file and the column."""
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise StoreError(f"{path}: missing (run the features stage first)")
    names = set(pq.read_schema(path).names)
    for column in columns:
        if column not in names:
            raise StoreError(f"{path}: no column '{column}'")
    return pq.read_table(path, columns=list(columns))


FEATURE_COLUMNS = ("feature", "count", "density", "mean_activation", "max_activation",
                   "logit_top_ids", "logit_top_values", "logit_bottom_ids", "logit_bottom_values")
CONTEXT_COLUMNS = ("feature", "kind", "rank", "bin", "activation", "position", "doc_id", "centre",
                   "token_ids", "token_activations")


@dataclass(frozen=True)
class FeatureTable:
    """``features.parquet`` in feature order (row f is feature f)."""

    count: np.ndarray
    density: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    logit: dict[str, Ragged]  # top_ids, top_values, bottom_ids, bottom_values


def read_features(path: Path, n: int) -> FeatureTable:
    """The feature table; it must hold each feature 0..n-1 exactly once."""
    table = read_parquet(path, FEATURE_COLUMNS)
    ids = np.asarray(table.column("feature"), dtype=np.int64)
    if ids.size != n or not np.array_equal(np.sort(ids), np.arange(n)):
        raise StoreError(f"{path}: field 'feature' must list 0..{n - 1} once each ({ids.size} rows)")
    if not np.array_equal(ids, np.arange(n)):
        import pyarrow as pa

        table = table.take(pa.array(np.argsort(ids)))
    col = lambda name: np.asarray(table.column(name))  # noqa: E731
    logit = {f"{side}_{what}": ragged_column(table, f"logit_{side}_{what}")
             for side in ("top", "bottom") for what in ("ids", "values")}
    return FeatureTable(col("count").astype(np.int64), col("density"), col("mean_activation"),
                        col("max_activation"), logit)


@dataclass(frozen=True)
class ContextTable:
    """``contexts.parquet``: per-row fields, the token windows, and the rows grouped by feature
    (top examples first by rank, then the quantile samples by bin and rank)."""

    fields: dict[str, np.ndarray]  # is_top, bin, rank, activation, position, doc_id, centre
    token_ids: Ragged
    token_acts: Ragged
    groups: Groups


def read_contexts(path: Path, n: int) -> ContextTable:
    """The context table, grouped by feature."""
    import pyarrow.compute as pc

    table = read_parquet(path, CONTEXT_COLUMNS)
    fields = {name: np.asarray(table.column(name)) for name in CONTEXT_COLUMNS[2:8]}
    kind = table.column("kind").combine_chunks()
    fields["is_top"] = np.asarray(pc.equal(pc.cast(kind, "string"), "top").fill_null(False))
    ids, acts = ragged_column(table, "token_ids"), ragged_column(table, "token_activations")
    if not np.array_equal(ids.offsets, acts.offsets):
        raise StoreError(f"{path}: fields 'token_ids' and 'token_activations' differ in length")
    feature = np.asarray(table.column("feature"), dtype=np.int64)
    groups = Groups.by(feature, (~fields["is_top"], fields["bin"], fields["rank"]), n, path, "feature")
    return ContextTable(fields, ids, acts, groups)


# --------------------------------------------------------------------------------------
# From the code store: histograms and co-firing
# --------------------------------------------------------------------------------------


def active_blocks(codes: Any, rows: int = 1 << 16) -> Any:
    """``(features, values)`` of the nonzero codes, block by block (zeros: unused slots and the
    massive-activation rows the SAE was not applied to)."""
    for _, idx, val in codes.iter_blocks(rows):
        active = val > 0
        yield idx[active].astype(np.int64), val[active]


def activation_histograms(codes: Any, bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, ``bins`` linear bins from 0 to its largest activation: counts int64 [n, bins]
    and that largest activation float32 [n]. Two passes over the store (the maximum first), each
    block vectorised: one ``bincount`` over feature x bin, so memory is one block plus n x bins."""
    n = codes.n_latents
    peak = np.zeros(n, dtype=np.float32)
    for f, v in active_blocks(codes):
        np.maximum.at(peak, f, v)
    counts = np.zeros(n * bins, dtype=np.int64)
    for f, v in active_blocks(codes):
        b = np.minimum((v / peak[f] * bins).astype(np.int64), bins - 1)
        counts += np.bincount(f * bins + b, minlength=n * bins)
    return counts.reshape(n, bins), peak


@dataclass(frozen=True)
class Cofiring:
    """Each feature's ``COOC_TOP`` partners by Jaccard index of their firing sets (tokens):
    partner id (-1 = none), shared firings, and the Jaccard index."""

    partner: np.ndarray  # int64 [n, k]
    shared: np.ndarray  # int64 [n, k]
    jaccard: np.ndarray  # float32 [n, k]
    firings: np.ndarray  # int64 [n]


def top_k_rows(score: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest scores, best first (ties: lower index first)."""
    # A stable sort keeps tied columns in index order (argpartition would pick among ties at the
    # cut arbitrarily); at [227, 18432] per block it costs ~30 ms.
    return np.argsort(-score, axis=1, kind="stable")[:, :min(k, score.shape[1])]


def cofiring(codes: Any, k: int = COOC_TOP, block_elements: int = COOC_BLOCK_ELEMENTS) -> Cofiring:
    """Co-firing partners from the binary codes B [tokens, n]: ``C = BᵀB`` one block of feature
    rows at a time (sparse product, densified to [rows, n] for the top-k), so memory is the CSR
    codes plus ``block_elements`` x 3, never n x n. Jaccard ``C/(c_f + c_g - C)`` ranks partners
    (raw counts would rank the densest features first for everyone)."""
    b = codes.csr()
    b.data = np.ones_like(b.data, dtype=np.float32)
    n = b.shape[1]
    firings = np.bincount(b.indices, minlength=n).astype(np.int64)
    bt = b.T.tocsr()
    out = Cofiring(np.full((n, k), -1, np.int64), np.zeros((n, k), np.int64), np.zeros((n, k), np.float32), firings)
    step = max(1, block_elements // max(n, 1))
    for first in bar(range(0, n, step), desc=f"co-firing n={n}", unit="block"):
        stop = min(first + step, n)
        shared = (bt[first:stop] @ b).toarray()
        shared[np.arange(stop - first), np.arange(first, stop)] = 0  # a feature is not its own partner
        union = firings[first:stop, None].astype(np.float32) + firings[None, :] - shared
        jac = np.divide(shared, union, out=np.zeros_like(shared), where=shared > 0)
        best = top_k_rows(jac, k)
        hit = np.take_along_axis(jac, best, axis=1) > 0
        out.partner[first:stop] = np.where(hit, best, -1)
        out.shared[first:stop] = np.where(hit, np.take_along_axis(shared, best, axis=1), 0)
        out.jaccard[first:stop] = np.where(hit, np.take_along_axis(jac, best, axis=1), 0)
    return out


# --------------------------------------------------------------------------------------
# The analyses' CSV tables
# --------------------------------------------------------------------------------------


def read_csv(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a CSV file as arrays (text as object arrays); a missing file or column names it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not Path(path).is_file():
        raise StoreError(f"{path}: missing")
    try:
        table = pacsv.read_csv(path)
    except pa.ArrowInvalid as exc:
        raise StoreError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    for column in columns:
        if column not in table.column_names:
            raise StoreError(f"{path}: no column '{column}'")
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def per_size(table: dict[str, np.ndarray], size_column: str, size: int) -> dict[str, np.ndarray]:
    """The rows of ``table`` whose ``size_column`` equals ``size``."""
    keep = np.asarray(table[size_column]).astype(np.int64) == size
    return {name: col[keep] for name, col in table.items()}


@dataclass(frozen=True)
class Related:
    """Per-feature rows of a size-filtered table (neighbours, parents, children)."""

    table: dict[str, np.ndarray]
    groups: Groups
    size: int | None = None  # the other size the rows point to (parents, children)


def neighbours_for(table: dict[str, np.ndarray] | None, size: int, n: int, path: Path | None) -> Related | None:
    """Nearest neighbours by decoder cosine of the features of ``size``, in rank order."""
    if table is None:
        return None
    rows = per_size(table, "size", size)
    return Related(rows, Groups.by(rows["feature"].astype(np.int64), (rows["rank"],), n, path, "feature"))


def parents_for(matches: dict[str, np.ndarray] | None, size: int, n: int, path: Path | None) -> Related | None:
    """Each feature's decoder parent in the next smaller size (the pair whose large size is ``size``)."""
    if matches is None:
        return None
    rows = per_size(matches, "large_size", size)
    smaller = rows["small_size"].astype(np.int64)
    if smaller.size == 0:
        return None
    rows = {name: col[smaller == smaller.max()] for name, col in rows.items()}
    return Related(rows, Groups.by(rows["feature"].astype(np.int64), (), n, path, "feature"), int(smaller.max()))


def children_for(matches: dict[str, np.ndarray] | None, size: int, n: int, path: Path | None) -> Related | None:
    """The features of the next larger size whose decoder parent is each feature, by cosine."""
    if matches is None:
        return None
    rows = per_size(matches, "small_size", size)
    larger = rows["large_size"].astype(np.int64)
    if larger.size == 0:
        return None
    rows = {name: col[larger == larger.min()] for name, col in rows.items()}
    groups = Groups.by(rows["dec_parent"].astype(np.int64), (-rows["dec_cos"], rows["feature"]), n, path,
                       "dec_parent")
    return Related(rows, groups, int(larger.min()))


def umap_for(table: dict[str, np.ndarray] | None, size: int, n: int, path: Path | None) -> np.ndarray | None:
    """float64 [n, 4]: x, y, joint_x, joint_y of each feature (NaN where the table has none, and
    for the joint columns when the neighbours stage drew no joint map)."""
    if table is None:
        return None
    rows = per_size(table, "size", size)
    feature = rows["feature"].astype(np.int64)
    group_offsets(np.sort(feature), n, path, "feature")  # range check
    out = np.full((n, 4), np.nan)
    for j, column in enumerate(("x", "y", "joint_x", "joint_y")):
        if column in rows:
            out[feature, j] = rows[column].astype(np.float64)
    return out


def neurons_for(path: Path | None, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(neuron ids int64 [n, t], signed r float64 [n, t])``: each feature's most-correlated MLP
    neurons from the neurons analysis's ``top_neurons_n<size>.csv`` (``neuron_1, corr_1, ...``;
    id -1 and NaN for a dead feature's blank cells); None without the table."""
    if path is None:
        return None
    rows = read_csv(path, ("feature", "neuron_1", "corr_1"))
    t = sum(1 for c in rows if re.fullmatch(r"neuron_\d+", c))
    feature = rows["feature"].astype(np.int64)
    group_offsets(np.sort(feature), n, path, "feature")
    ids, corr = np.full((n, t), -1, dtype=np.int64), np.full((n, t), np.nan)
    for j in range(t):
        raw = rows[f"neuron_{j + 1}"].astype(np.float64)
        ids[feature, j] = np.where(np.isnan(raw), -1, raw).astype(np.int64)
        corr[feature, j] = rows[f"corr_{j + 1}"].astype(np.float64)
    return ids, corr


def lobes_for(path: Path | None, n: int, lobe_k: int) -> tuple[int, np.ndarray] | None:
    """``(k, lobes)``: each feature's lobe (int64 [n], -1 where none) in the partition with the
    k nearest ``lobe_k`` that the table has (the lobes stage skips a k too large for the features
    it kept); None without a table or a partition (too few features were analysed)."""
    if path is None or not Path(path).read_text(encoding="utf-8").strip():
        return None
    rows = read_csv(path, ("feature",))
    ks = [int(c[len("lobe_k"):]) for c in rows if c.startswith("lobe_k") and c[len("lobe_k"):].isdigit()]
    if not ks:
        return None
    k = min(ks, key=lambda x: (abs(x - lobe_k), x))
    feature = rows["feature"].astype(np.int64)
    group_offsets(np.sort(feature), n, path, "feature")
    out = np.full(n, -1, dtype=np.int64)
    out[feature] = rows[f"lobe_k{k}"].astype(np.int64)
    return k, out
