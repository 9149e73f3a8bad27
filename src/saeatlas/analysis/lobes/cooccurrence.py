"""Steps 1-2: blocks and the streamed co-occurrence count ``C = BᵀB`` (memory independent of the
token count: ``C`` is n x n whatever the number of rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
from scipy import sparse

from saeatlas.progress import bar
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.lobes.config import COUNT_METHODS, SMALL_PROBLEM

# float32 adds integers exactly up to 2^24; more blocks than that and C switches to float64.
EXACT_FLOAT32 = 2 ** 24
# Cost model of the two products (measured on this machine's 2 cores, n = 18432): syrk does
# ~1.5e10 multiply-adds/s on a densified chunk; scipy's sparse BᵀB 4e6-1.5e7 increments/s (more
# for fuller blocks). Equal at u/n = √(1e7 / 3e10) ≈ 1.8%: ~300 firing latents per block at
# n = 18432 (blocks of 128 positions have ~1500: dense; blocks of 2 have ~60: sparse).
DENSE_MADDS_PER_S = 1.5e10
SPARSE_INCREMENTS_PER_S = 1e7
# Rows of a densified block chunk per syrk call: [256, 18432] float32 = 19 MB.
DENSE_BATCH = 256
# Pair increments per sparse product: its COO temporaries are ~20 bytes per increment (100 MB).
SPARSE_BATCH = 5_000_000


def known_rows(codes: Any) -> int | None:
    """Rows of ``codes`` when known before the pass (a matrix or a store), else None (an iterable)."""
    if sparse.issparse(codes):
        return int(codes.shape[0])
    if hasattr(codes, "csr") and hasattr(codes, "n_tokens"):
        return int(codes.n_tokens)
    return None


def iter_code_chunks(codes: Any, rows: int) -> Iterator[sparse.csr_matrix]:
    """CSR chunks of consecutive rows from a sparse matrix, a ``SparseCodes`` store or an iterable."""
    if sparse.issparse(codes):
        mat = sparse.csr_matrix(codes)
        for start in range(0, mat.shape[0], rows):
            yield mat[start:start + rows]
    elif hasattr(codes, "csr") and hasattr(codes, "n_tokens"):
        for start in range(0, int(codes.n_tokens), rows):
            yield codes.csr(start, start + rows)
    else:
        for chunk in codes:
            yield sparse.csr_matrix(chunk)


@dataclass
class CooccurrenceCounts:
    """What one pass over the codes gives."""

    counts: np.ndarray | None  # float32 (float64 past 2^24 blocks) [n, n], symmetric: C = BᵀB
    block_counts: np.ndarray  # int64 [n]: c_i, blocks in which feature i fires (= diag C)
    firings: np.ndarray  # int64 [n]: rows on which feature i fires
    domain_firings: np.ndarray  # int64 [n, n_domains]: firings on rows of each domain
    domain_rows: np.ndarray  # int64 [n_domains]: rows of each domain
    n_blocks: int  # N: blocks with at least one row (fired or not)
    n_rows: int
    pair_increments: int  # Σ_b u_b (u_b + 1) / 2: distinct upper-triangle increments of C
    dense_blocks: int = 0  # blocks multiplied by the dense syrk
    sparse_blocks: int = 0  # blocks multiplied by the sparse BᵀB


def block_ids(rows: np.ndarray, positions_per_context: int, block_size: int) -> np.ndarray:
    """Global block id of each global row: ``(r div P)·⌈P/s⌉ + (r mod P) div s`` (``s`` = block size,
    capped at ``P``): blocks never cross a context."""
    s = min(block_size, positions_per_context)
    per_context = -(-positions_per_context // s)
    rows = np.asarray(rows, dtype=np.int64)
    return (rows // positions_per_context) * per_context + (rows % positions_per_context) // s


@dataclass
class DocumentWindows:
    """Each row's window (``row_blocks``, -1: in none) and what the windowing kept."""

    row_blocks: np.ndarray  # int64 [N]: dense window ids, nondecreasing in row order; -1 = no window
    n_windows: int
    n_documents: int  # documents with at least one row
    documents_with_window: int
    rows_in_windows: int


def document_windows(doc_ids: np.ndarray, window: int, keep_partial: bool = False) -> DocumentWindows:
    """Li et al.'s blocks on our store: each document's tokens (rows with ``doc_ids >= 0``; -1 marks
    BOS) cut into consecutive windows of ``window`` tokens, crossing context boundaries but never
    a document boundary. A document's last, shorter window is dropped unless ``keep_partial``: their
    released counting script drops it (``j + k <= len``), and kept it would mix windows of
    different lengths, whose firing counts are not comparable. The corpus packs documents one
    after another into consecutive contexts, so a document is one run of rows; a document found
    in two separate runs means the rows are not in corpus order, and that is an error (windows
    would join unrelated text)."""
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")
    d = np.asarray(doc_ids).astype(np.int64, copy=False)
    where = np.flatnonzero(d >= 0)
    out = np.full(d.size, -1, dtype=np.int64)
    if where.size == 0:
        return DocumentWindows(out, 0, 0, 0, 0)
    v = d[where]
    run_start = np.r_[0, np.flatnonzero(np.diff(v) != 0) + 1]  # in ``where`` indexing
    docs = v[run_start]
    names, runs = np.unique(docs, return_counts=True)
    if (runs > 1).any():
        twice = names[runs > 1]
        raise ValueError(f"document {int(twice[0])} occupies two separate runs of rows: the rows are not in "
                         "corpus order, so windows across contexts would join unrelated text")
    run_len = np.diff(np.r_[run_start, v.size])
    run_of = np.repeat(np.arange(run_start.size), run_len)
    pos = np.arange(v.size) - run_start[run_of]
    win = pos // window
    full = (win + 1) * window <= run_len[run_of]
    keep = full | keep_partial
    key = run_of[keep] * (int(run_len.max()) // window + 1) + win[keep]  # increases with the row
    _, dense = np.unique(key, return_inverse=True)
    out[where[keep]] = dense
    n_windows = int(dense.max()) + 1 if dense.size else 0
    return DocumentWindows(out, n_windows, int(run_start.size), int(np.unique(run_of[keep]).size),
                           int(keep.sum()))


def subsample_windows(row_blocks: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A seeded random ``fraction`` of the windows (the others' rows become -1), renumbered densely
    in row order: how the estimate grows with the amount of text."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ids = np.asarray(row_blocks, dtype=np.int64)
    n = int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0
    chosen = np.zeros(n, dtype=bool)
    if n:
        chosen[rng.choice(n, size=max(1, round(fraction * n)), replace=False)] = True
    new_id = np.cumsum(chosen) - 1
    out = np.full(ids.size, -1, dtype=np.int64)
    ok = ids >= 0
    ok[ok] = chosen[ids[ok]]
    out[ok] = new_id[ids[ok]]
    return out


def feature_max(chunks: Iterable[sparse.spmatrix], n_latents: int) -> np.ndarray:
    """Each feature's largest code over the rows (0 for a feature that never fires): the scale of
    a threshold relative to each feature's own maximum."""
    out = np.zeros(int(n_latents), dtype=np.float64)
    for chunk in chunks:
        x = sparse.csr_matrix(chunk)
        if x.nnz:
            np.maximum.at(out, x.indices, x.data.astype(np.float64))
    return out


def _syrk(c: np.ndarray, dense_block: np.ndarray) -> np.ndarray:
    """``C[upper] += Bᵀ B`` in place for a Fortran-ordered C (BLAS syrk: half the FLOPs of GEMM)."""
    from scipy.linalg import blas

    fn = blas.ssyrk if c.dtype == np.float32 else blas.dsyrk
    out = fn(1.0, np.asfortranarray(dense_block.T, dtype=c.dtype), beta=1.0, c=c, trans=0, lower=0, overwrite_c=1)
    if out is not c and not np.shares_memory(out, c):  # pragma: no cover - scipy copies only a non-F array
        c[...] = out
    return c


class _Accumulator:
    """C += BᵀB for complete blocks; per-feature block counts."""

    def __init__(self, n: int, method: str):
        self.n, self.method = n, method
        # Fortran order so that syrk updates C in place; zeros pages are allocated lazily.
        self.c = np.zeros((n, n), dtype=np.float32, order="F")
        self.block_counts = np.zeros(n, dtype=np.int64)
        self.n_blocks_added = 0
        self.pair_increments = 0
        self.dense_blocks = self.sparse_blocks = 0
        self.rows = self.n_blocks_seen = 0  # set by the pass when it ends

    def add(self, b: sparse.csr_matrix) -> None:
        """``b``: binary CSR [m, n], one row per complete block."""
        m = b.shape[0]
        if m == 0:
            return
        self.n_blocks_added += m
        if self.c.dtype == np.float32 and self.n_blocks_added >= EXACT_FLOAT32:
            self.c = np.asfortranarray(self.c, dtype=np.float64)  # counts would stop being exact
        u = np.diff(b.indptr).astype(np.int64)
        self.pair_increments += int((u * (u + 1) // 2).sum())
        self.block_counts += np.bincount(b.indices, minlength=self.n)
        method = self.method
        if method == "auto":  # cost model: dense m·n²/2 multiply-adds vs sparse Σ u² increments
            dense_s = m * self.n * self.n / 2 / DENSE_MADDS_PER_S
            sparse_s = float((u * u).sum()) / SPARSE_INCREMENTS_PER_S
            method = "sparse" if sparse_s < dense_s else "dense"
        if method == "dense":
            self.dense_blocks += m
            for a in range(0, m, DENSE_BATCH):
                self.c = _syrk(self.c, b[a:a + DENSE_BATCH].toarray().astype(self.c.dtype, copy=False))
        else:
            self.sparse_blocks += m
            flat = self.c.reshape(-1, order="F")  # a view: C is Fortran-contiguous
            # batches of blocks with at most SPARSE_BATCH increments bound the product's temporaries
            cuts = np.searchsorted(np.cumsum(u * u), np.arange(SPARSE_BATCH, int((u * u).sum()), SPARSE_BATCH))
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, m]):
                if hi <= lo:
                    continue
                bf = b[lo:hi].astype(self.c.dtype)
                prod = (bf.T.tocsr() @ bf).tocoo()  # [n, n], each (i, j) once
                keep = prod.row <= prod.col
                flat[prod.col[keep].astype(np.int64) * self.n + prod.row[keep]] += prod.data[keep]

    def finish(self) -> np.ndarray:
        """Mirror the upper triangle into the lower one, tile by tile (no n x n temporary)."""
        c, n, t = self.c, self.n, 256  # 256 x 256 float32 tiles (256 KB) transpose in cache: 3x faster than 2048
        for a in range(0, n, t):
            for b0 in range(a, n, t):
                if b0 == a:
                    tile = c[a:a + t, a:a + t]
                    tile[...] = np.triu(tile) + np.triu(tile, 1).T
                else:
                    c[b0:b0 + t, a:a + t] = c[a:a + t, b0:b0 + t].T
        return c


def count_cooccurrence(chunks: Iterable[sparse.spmatrix], n_latents: int, positions_per_context: int,
                       block_size: int, row_domains: np.ndarray | None = None, n_domains: int = 0,
                       method: str = "auto", total_chunks: int | None = None,
                       row_blocks: np.ndarray | None = None, thresholds: np.ndarray | None = None,
                       ) -> CooccurrenceCounts:
    """One streaming pass: block co-occurrence counts ``C = BᵀB``, per-feature block and token
    firing counts, and firings per corpus domain.

    ``chunks`` are CSR [rows, n_latents] of consecutive code rows starting at row 0 (any chunk
    boundaries: a block cut by a chunk boundary is carried over to the next chunk). A feature
    fires on a row where its code is > 0, or > ``thresholds[feature]`` when given. Blocks are
    ``block_size`` positions of one context (``block_ids``) unless ``row_blocks`` gives each row's
    block (-1: the row is in no block; the others nondecreasing and dense from 0, e.g.
    ``document_windows``). Memory: ``C`` (n x n) plus one chunk.
    """
    if method not in COUNT_METHODS:
        raise ValueError(f"method must be one of {COUNT_METHODS}, got {method!r}")
    n = int(n_latents)
    acc = _Accumulator(n, method)
    dom = None if row_domains is None else np.asarray(row_domains, dtype=np.int64)
    n_dom = int(n_domains)
    firings = np.zeros(n, dtype=np.int64)
    domain_firings = np.zeros(n * max(n_dom, 1), dtype=np.int64)
    domain_rows = np.zeros(max(n_dom, 1), dtype=np.int64)
    with limit_threads(1 if n < SMALL_PROBLEM else None, torch_too=True):
        _count_pass(chunks, acc, _BlockMap(positions_per_context, block_size, row_blocks, thresholds), dom, n_dom,
                    firings, domain_firings, domain_rows, total_chunks)
    start, n_blocks = acc.rows, acc.n_blocks_seen
    if dom is not None and start != dom.size:
        raise ValueError(f"codes have {start} rows, row_domains {dom.size}")
    if row_blocks is not None and start != len(row_blocks):
        raise ValueError(f"codes have {start} rows, row_blocks {len(row_blocks)}")
    counts = acc.finish()
    return CooccurrenceCounts(
        counts=counts, block_counts=acc.block_counts, firings=firings,
        domain_firings=domain_firings.reshape(n, max(n_dom, 1))[:, :n_dom],
        domain_rows=domain_rows[:n_dom], n_blocks=n_blocks, n_rows=start,
        pair_increments=acc.pair_increments, dense_blocks=acc.dense_blocks, sparse_blocks=acc.sparse_blocks)


class _BlockMap:
    """Which block each row is in, and which codes count as firing (see ``count_cooccurrence``)."""

    def __init__(self, positions_per_context: int, block_size: int, row_blocks: np.ndarray | None,
                 thresholds: np.ndarray | None):
        self.ppc, self.block_size = positions_per_context, block_size
        self.row_blocks = None if row_blocks is None else np.asarray(row_blocks)
        self.thresholds = None if thresholds is None else np.asarray(thresholds, dtype=np.float64)

    def ids(self, start: int, stop: int) -> np.ndarray:
        """Global block id of rows ``start:stop`` (-1: in no block)."""
        if self.row_blocks is None:
            return block_ids(np.arange(start, stop), self.ppc, self.block_size)
        if stop > self.row_blocks.size:
            raise ValueError(f"codes have more rows than row_blocks ({self.row_blocks.size})")
        return np.asarray(self.row_blocks[start:stop], dtype=np.int64)

    def fired(self, x: sparse.csr_matrix) -> np.ndarray:
        """Mask over ``x.data``: the stored codes that count as a firing."""
        if self.thresholds is None:
            return x.data > 0
        return x.data > np.maximum(self.thresholds[x.indices], 0.0)


def _count_pass(chunks: Iterable[sparse.spmatrix], acc: "_Accumulator", blocks: _BlockMap, dom: np.ndarray | None,
                n_dom: int, firings: np.ndarray, domain_firings: np.ndarray, domain_rows: np.ndarray,
                total_chunks: int | None) -> None:
    """The loop of ``count_cooccurrence``: accumulates into ``acc`` and the arrays in place. The
    last block of every chunk is carried to the next one (it may continue there) and added when a
    later block starts or the codes end."""
    n = acc.n
    start = 0
    pending: np.ndarray | None = None  # feature ids of the block cut by the last chunk boundary
    pending_id = -1
    for chunk in bar(chunks, "co-occurrence", total=total_chunks):
        x = sparse.csr_matrix(chunk)
        rows = x.shape[0]
        if x.shape[1] != n:
            raise ValueError(f"code chunk has {x.shape[1]} columns, expected n_latents = {n}")
        if rows == 0:
            continue
        x.sum_duplicates()
        fired = blocks.fired(x)
        row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(x.indptr))[fired]
        feat = x.indices[fired].astype(np.int64)
        firings += np.bincount(feat, minlength=n)
        if dom is not None:
            if start + rows > dom.size:
                raise ValueError(f"codes have more rows than row_domains ({dom.size})")
            if n_dom:
                _count_domains(dom[start:start + rows], row_of, feat, n, n_dom, domain_rows, domain_firings)
        ids = blocks.ids(start, start + rows)
        start += rows
        counted = ids[ids >= 0]
        if counted.size == 0:
            continue
        if np.any(np.diff(counted) < 0) or counted[0] < pending_id:
            raise ValueError("row blocks must be nondecreasing in row order (a block is consecutive rows)")
        first, last = int(counted[0]), int(counted[-1])
        in_block = ids[row_of] >= 0
        local, feat = ids[row_of][in_block] - first, feat[in_block]
        if pending is not None:
            if pending_id == first:  # the carried block continues in this chunk
                local = np.concatenate([np.zeros(pending.size, dtype=np.int64), local])
                feat = np.concatenate([pending, feat])
            else:
                acc.add(_binary_rows(np.zeros(pending.size, dtype=np.int64), pending, 1, n))
        n_local = last - first + 1
        b = _binary_rows(local, feat, n_local, n)
        acc.add(b[:-1])
        pending, pending_id = b[n_local - 1].indices.astype(np.int64), last
    if pending is not None:
        acc.add(_binary_rows(np.zeros(pending.size, dtype=np.int64), pending, 1, n))
    acc.rows = start
    acc.n_blocks_seen = pending_id + 1  # ids are dense from 0: the last one seen + 1


def _count_domains(d: np.ndarray, row_of: np.ndarray, feat: np.ndarray, n: int, n_dom: int,
                   domain_rows: np.ndarray, domain_firings: np.ndarray) -> None:
    """Rows per domain and firings per (feature, domain) of one chunk (``d``: its rows' domains,
    -1 = unknown; ``row_of``/``feat``: the chunk row and feature of each firing), in place."""
    known = d >= 0
    domain_rows += np.bincount(d[known], minlength=n_dom)
    dr = d[row_of]
    ok = dr >= 0
    domain_firings += np.bincount(feat[ok] * n_dom + dr[ok], minlength=n * n_dom)


def _binary_rows(block: np.ndarray, feat: np.ndarray, n_blocks: int, n: int) -> sparse.csr_matrix:
    """Binary CSR [n_blocks, n]: 1 where a feature fires anywhere in the block (duplicates merged)."""
    b = sparse.csr_matrix((np.ones(feat.size, dtype=np.float32), (block, feat)), shape=(n_blocks, n))
    b.sum_duplicates()
    b.data[:] = 1.0
    return b
