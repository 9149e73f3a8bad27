"""Sharded on-disk activation store: written streaming, resumable, read back as memmap.

Layout of one store (one layer, one split)::

    manifest.json        shapes, dtype, per-shard sha256, normalisation scale and norm
                         statistics, the fingerprint of what produced it
    shard-00000.npy ...  float32/float16 [rows, d_model], rows = contexts x positions (BOS excluded)
    tokens.npy           int32 [n_tokens]: the token id at each row
    doc_ids.npy          int32 [n_tokens]: the corpus document each row's token came from
    norms.npy            float32 [n_tokens]: ||x|| of each row (flags massive activations)

The stage writes ``results/activations/<model>/layer<L>/{train,eval,eval_neurons}/`` for every
listed layer in one forward pass (``write_stores``). While it runs, the stores live in
``results/activations/<model>.partial/layer<L>/``: each shard is written to a temporary file,
fsync'd, renamed, and only then listed in the manifest (itself replaced atomically). A killed
run therefore leaves only complete, listed shards; the next run checks each store's fingerprint
(corpus checksum, model weights, layer, batch and shard sizes, dtypes), resumes at the first
shard some store lacks, and ends byte-identical to an uninterrupted run (same batches, same
order, no timestamps). When every split of every layer is complete the layer folders are
renamed into place, so neither Snakemake nor DVC, which delete a stage's outputs before running
it, can destroy the partial work.

Activations are stored raw, with ``norms.npy`` (||x|| per row). The manifest's
``normalisation.scale`` = sqrt(d / E||x||^2), the expectation taken in float64 over the
*ordinary* rows (norm <= ``activations.outlier_factor`` x median norm; see ``finish``), so that
``scale * x`` has E||x||^2 = d on ordinary tokens (the convention of ARCHITECTURE.md); readers
apply it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from saeatlas.artifacts import ManifestBacked, check_npy, fsync_dir, read_manifest, sha256_file, write_json_atomic
from saeatlas.config import ActivationParams
from saeatlas.corpus import CorpusSplit
from saeatlas.errors import StoreError
from saeatlas.progress import bar as progress_bar

log = logging.getLogger(__name__)

FORMAT = "saeatlas.activations/1"
MANIFEST = "manifest.json"
MEDIAN_SAMPLE = 1 << 20  # rows: the median norm is exact below this, sampled above
NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


def fingerprint(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


class StoreWriter:
    """Appends complete shards to a store directory and keeps its manifest current."""

    def __init__(self, directory: Path, header: dict[str, Any]):
        self.dir = directory
        self.header = header
        self.shards: list[dict[str, Any]] = []
        existing = self._read_manifest()
        if existing is not None and existing.get("fingerprint") == header["fingerprint"]:
            self.shards = list(existing["shards"])
            self._drop_unlisted()
            if self.shards:
                log.info("%s: resuming after %d complete shard(s)", directory, len(self.shards))
        else:
            if existing is not None:
                log.warning("%s: partial store was made with other inputs or settings; starting over", directory)
            shutil.rmtree(directory, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.dir / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # a torn manifest cannot happen (atomic replace), but never trust it

    def _drop_unlisted(self) -> None:
        """Remove files a killed run left that the manifest does not list (e.g. *.tmp)."""
        listed = {s["file"] for s in self.shards} | {MANIFEST}
        for path in self.dir.iterdir():
            if path.name not in listed:
                path.unlink()

    @property
    def complete_shards(self) -> int:
        return len(self.shards)

    def _save_manifest(self, **extra: Any) -> dict[str, Any]:
        manifest = {**self.header, "shards": self.shards, **extra}
        write_json_atomic(self.dir / MANIFEST, manifest)
        return manifest

    def write_shard(self, index: int, rows: np.ndarray) -> None:
        if index != len(self.shards):
            raise AssertionError(f"shard {index} written out of order (have {len(self.shards)})")
        if not np.isfinite(rows).all():
            raise StoreError(
                f"shard {index}: activations are not finite in {rows.dtype} "
                f"(overflow? use activations.dtype: float32)"
            )
        path = self.dir / shard_name(index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, rows, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        fsync_dir(self.dir)
        self.shards.append({"file": path.name, "rows": int(rows.shape[0]), "sha256": sha256_file(path)})
        self._save_manifest(complete=False)

    def write_column(self, name: str, dtype: Any, n_rows: int, chunks: Iterator[np.ndarray]) -> str:
        """Write a 1-D per-row array chunk by chunk (bounded memory); return its sha256."""
        path = self.dir / name
        tmp = path.with_name(path.name + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows,))
        start = 0
        for chunk in chunks:
            out[start:start + len(chunk)] = chunk
            start += len(chunk)
        if start != n_rows:
            raise AssertionError(f"{name}: wrote {start} rows, expected {n_rows}")
        out.flush()
        del out
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
        fsync_dir(self.dir)
        return sha256_file(path)

    def _shard_norms(self) -> Iterator[np.ndarray]:
        for shard in self.shards:
            rows = np.load(self.dir / shard["file"], mmap_mode="r")
            yield np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)).astype(np.float32)

    def finish(self, d_model: int, outlier_factor: float, files: dict[str, str]) -> dict[str, Any]:
        """Write ``norms.npy``, compute the normalisation scale, mark the store complete.

        The scale is sqrt(d / E||x||^2) over *ordinary* rows: those whose norm is at most
        ``outlier_factor`` x the median norm. Residual streams carry a few "massive
        activations" (Sun et al. 2024), e.g. at separator tokens, whose squared norms can
        outweigh every other row together (seen here: 0.6% of rows, 97% of the sum); a scale
        set by them would shrink ordinary tokens to a few percent of E||x||^2 = d. Those rows
        stay in the store; ``ActivationStore.ordinary_mask()`` tells them apart.
        """
        n_rows = sum(s["rows"] for s in self.shards)
        files = {**files, "norms.npy": self.write_column("norms.npy", np.float32, n_rows, self._shard_norms())}
        norms = np.load(self.dir / "norms.npy", mmap_mode="r")
        # Memory stays bounded as the store grows: the median comes from a fixed-size, seeded
        # sample of rows (exact up to MEDIAN_SAMPLE rows), the sums from chunked passes.
        if n_rows <= MEDIAN_SAMPLE:
            median = float(np.median(norms))
        else:
            idx = np.sort(np.random.default_rng(0).choice(n_rows, MEDIAN_SAMPLE, replace=False))
            median = float(np.median(norms[idx]))
        limit = outlier_factor * median
        sum_sq = ordinary_sq = 0.0
        n_ordinary = 0
        max_norm = 0.0
        for start in range(0, n_rows, MEDIAN_SAMPLE):
            chunk = np.asarray(norms[start:start + MEDIAN_SAMPLE], dtype=np.float64)
            sq = chunk * chunk
            keep = chunk <= limit
            sum_sq += float(sq.sum())
            ordinary_sq += float(sq[keep].sum())
            n_ordinary += int(keep.sum())
            max_norm = max(max_norm, float(chunk.max()))
        mean_sq = ordinary_sq / n_ordinary
        return self._save_manifest(
            complete=True,
            n_tokens=n_rows,
            normalisation={
                "target": "E||scale*x||^2 = d_model over ordinary rows",
                "ordinary_rows": "||x|| <= outlier_factor * median ||x||",
                "outlier_factor": outlier_factor,
                "median_norm": median,
                "max_norm": max_norm,
                "outlier_rows": n_rows - n_ordinary,
                "outlier_share_of_sum_sq_norm": (sum_sq - ordinary_sq) / sum_sq,
                "mean_sq_norm": mean_sq,
                "mean_sq_norm_all_rows": sum_sq / n_rows,
                "scale": math.sqrt(d_model / mean_sq),
            },
            files=files,
        )


class _RowView:
    """Rows of a [n_contexts, context_length] array with the BOS column dropped, flattened."""

    def __init__(self, array: np.ndarray, skip_first: bool):
        self.array = array
        self.skip = 1 if skip_first else 0
        self.per = array.shape[1] - self.skip
        self.shape = (array.shape[0] * self.per,)

    def __getitem__(self, sl: slice) -> np.ndarray:
        start, stop, _ = sl.indices(self.shape[0])
        c0, c1 = start // self.per, -(-stop // self.per)
        block = np.asarray(self.array[c0:c1, self.skip:]).reshape(-1)
        off = c0 * self.per
        return block[start - off:stop - off]


@dataclass(frozen=True)
class Capture:
    """One store a pass writes: what it reads out of the LM (``("resid", L)``: the residual
    stream after block L; ``("neurons", L)``: block L's MLP hidden activations), where, and the
    header a resumed store must share with the run that started it."""

    key: tuple[str, int]
    directory: Path
    header: dict[str, Any]


def write_stores(
    lm: Any,
    split: CorpusSplit,
    captures: list[Capture],
    cfg: ActivationParams,
    desc: str,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Run the LM once over every context of ``split`` and write every capture's store.

    One forward per batch serves every store (it stops at the deepest block any capture needs),
    so ten layers cost one pass to the deepest of them. The stores advance shard by shard in
    lockstep; a resumed run starts at the first shard some store lacks and rewrites nothing
    another store already holds (each store's fingerprint covers only what shapes its bytes)."""
    contexts = split.contexts
    n_ctx, ctx_len = contexts.shape
    bos_excluded = split.manifest["bos_token_id"] is not None
    skip = 1 if bos_excluded else 0
    positions = ctx_len - skip
    n_shards = math.ceil(n_ctx / cfg.shard_contexts)
    np_dtype = NP_DTYPES[cfg.dtype]
    widths = {c.key: lm.d_model if c.key[0] == "resid" else lm.n_neurons(c.key[1]) for c in captures}
    writers = {}
    for c in captures:
        header = {**c.header, "format": FORMAT, "context_length": int(ctx_len),
                  "positions_per_context": positions, "bos_excluded": bos_excluded,
                  "n_contexts": int(n_ctx), "shard_contexts": cfg.shard_contexts,
                  "dtype": cfg.dtype, "d_model": widths[c.key]}
        writers[c.key] = StoreWriter(c.directory, header)
    start_shard = min(w.complete_shards for w in writers.values())
    resid_layers = [key[1] for key in writers if key[0] == "resid"]
    neuron_layers = [key[1] for key in writers if key[0] == "neurons"]
    bar = progress_bar(total=n_ctx * positions, initial=start_shard * cfg.shard_contexts * positions,
                       desc=desc, unit="tok", unit_scale=True, leave=True)
    for s in range(start_shard, n_shards):
        c0, c1 = s * cfg.shard_contexts, min((s + 1) * cfg.shard_contexts, n_ctx)
        todo = {key: w for key, w in writers.items() if w.complete_shards == s}
        rows = {key: np.empty(((c1 - c0) * positions, widths[key]), dtype=np_dtype) for key in todo}
        for b0 in range(c0, c1, cfg.batch_contexts):
            b1 = min(b0 + cfg.batch_contexts, c1)
            ids = torch.from_numpy(np.asarray(contexts[b0:b1], dtype=np.int64))
            out = lm.capture(ids, [L for L in resid_layers if ("resid", L) in todo],
                             [L for L in neuron_layers if ("neurons", L) in todo])
            r0 = (b0 - c0) * positions
            for key, buffer in rows.items():
                acts = out[key][:, skip:, :]
                buffer[r0:r0 + (b1 - b0) * positions] = (
                    acts.reshape(-1, widths[key]).float().cpu().numpy().astype(np_dtype, copy=False))
            bar.update((b1 - b0) * positions)
        for key, buffer in rows.items():
            todo[key].write_shard(s, buffer)
    bar.close()
    n_rows, chunk = n_ctx * positions, cfg.shard_contexts * positions
    manifests = {}
    for key, writer in writers.items():
        files = {}
        for name, array in (("tokens.npy", contexts), ("doc_ids.npy", split.doc_ids)):
            view = _RowView(array, bos_excluded)
            files[name] = writer.write_column(name, np.int32, n_rows,
                                              (view[s:s + chunk] for s in range(0, n_rows, chunk)))
        manifests[key] = writer.finish(widths[key], cfg.outlier_factor, files)
    return manifests


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass
class ActivationStore(ManifestBacked):
    """Read side: memory-mapped shards, normalised on the fly, shuffled minibatches."""

    path: Path
    manifest: dict[str, Any]
    MANIFEST_NAME = MANIFEST

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "ActivationStore":
        """Open a complete store. Every file's size, shape and dtype are checked against the
        manifest; with ``verify`` (the default) every file's sha256 too, once per process."""
        path = Path(path)
        manifest = read_manifest(path, MANIFEST, FORMAT, "not an activation store (run the activations stage)")
        if not manifest.get("complete"):
            raise StoreError(f"{path}: store is incomplete ({len(manifest.get('shards', []))} shards written)")
        store = cls(path, manifest)
        store.check_files()
        if verify:
            store.verify(once=True)
        return store

    @property
    def root(self) -> Path:
        return self.path

    def checksums(self) -> dict[str, str]:
        return {s["file"]: s["sha256"] for s in self.manifest["shards"]} | self.manifest["files"]

    def check_files(self) -> None:
        """Sizes, shapes and dtypes of every shard and column, from the manifest (no data read)."""
        for shard in self.manifest["shards"]:
            check_npy(self.path / shard["file"], (shard["rows"], self.d_model), NP_DTYPES[self.manifest["dtype"]])
        for name in self.manifest["files"]:
            check_npy(self.path / name, (self.n_tokens,), np.float32 if name == "norms.npy" else np.int32)

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def scale(self) -> float:
        return float(self.manifest["normalisation"]["scale"])

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def shard(self, index: int) -> np.ndarray:
        arr = np.load(self.path / self.manifest["shards"][index]["file"], mmap_mode="r")
        return arr

    def tokens(self) -> np.ndarray:
        return np.load(self.path / "tokens.npy", mmap_mode="r")

    def doc_ids(self) -> np.ndarray:
        return np.load(self.path / "doc_ids.npy", mmap_mode="r")

    def norms(self) -> np.ndarray:
        """||x|| of every stored (raw) row, float32."""
        return np.load(self.path / "norms.npy", mmap_mode="r")

    def ordinary_mask(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """True for rows (``start:stop``) that set the scale; False for massive-activation outliers."""
        norm = self.manifest["normalisation"]
        return np.asarray(self.norms()[start:stop]) <= norm["outlier_factor"] * norm["median_norm"]

    def take(self, rows: np.ndarray, normalise: bool = True) -> np.ndarray:
        """The given rows (any order, repeats allowed) as one float32 array [len(rows), d]:
        shard by shard through the memmaps, so only the requested rows are read."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_tokens):
            raise IndexError(f"rows must be in [0, {self.n_tokens}), got [{rows.min()}, {rows.max()}]")
        bounds = np.cumsum([0] + [s["rows"] for s in self.manifest["shards"]])
        shard_of = np.searchsorted(bounds, rows, side="right") - 1
        out = np.empty((rows.size, self.d_model), dtype=np.float32)
        for shard in np.unique(shard_of):
            at = np.flatnonzero(shard_of == shard)
            out[at] = self.shard(int(shard))[rows[at] - bounds[shard]]
        if normalise:
            out *= self.scale
        return out

    def sample_ordinary(self, rows: int, seed: int) -> np.ndarray:
        """``rows`` ordinary rows (massive activations left out, as in training), normalised,
        drawn without replacement with ``seed``; read through the memmaps, never the whole split."""
        ordinary = np.flatnonzero(self.ordinary_mask())
        pick = np.random.default_rng(seed).choice(ordinary, size=min(rows, ordinary.size), replace=False)
        return self.take(np.sort(pick))

    def _rows(self, shard: int, exclude_outliers: bool) -> np.ndarray:
        rows = np.asarray(self.shard(shard), dtype=np.float32)
        if not exclude_outliers:
            return rows
        start = sum(s["rows"] for s in self.manifest["shards"][:shard])
        return rows[self.ordinary_mask(start, start + rows.shape[0])]

    def _to_tensor(self, rows: np.ndarray, normalise: bool, device: str | torch.device) -> torch.Tensor:
        # np.array copies: the rows may be a read-only memmap, which must never be written.
        out = torch.from_numpy(np.array(rows, dtype=np.float32))
        if normalise:
            out.mul_(self.scale)
        return out.to(device)

    def iter_sequential(self, batch_size: int, normalise: bool = True,
                        device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
        """Rows in stored order (for evaluation), ``batch_size`` at a time."""
        carry: np.ndarray | None = None
        for i in range(self.n_shards):
            shard = self.shard(i)
            start = 0
            if carry is not None:
                need = batch_size - carry.shape[0]
                carry = np.concatenate([carry, shard[:need]])
                start = need
                if carry.shape[0] == batch_size:
                    yield self._to_tensor(carry, normalise, device)
                    carry = None
            while carry is None and start + batch_size <= shard.shape[0]:
                yield self._to_tensor(shard[start:start + batch_size], normalise, device)
                start += batch_size
            if carry is None and start < shard.shape[0]:
                carry = np.array(shard[start:])
        if carry is not None and carry.shape[0]:
            yield self._to_tensor(carry, normalise, device)

    def batches_per_epoch(self, batch_size: int, exclude_outliers: bool = False) -> int:
        """How many full batches ``minibatches`` yields per epoch."""
        rows = int(self.ordinary_mask().sum()) if exclude_outliers else self.n_tokens
        return rows // batch_size

    def minibatches(self, batch_size: int, seed: int, epoch: int = 0, buffer_shards: int = 4,
                    normalise: bool = True, device: str | torch.device = "cpu",
                    exclude_outliers: bool = False, skip: int = 0) -> Iterator[torch.Tensor]:
        """Shuffled minibatches with memory bounded by ``buffer_shards`` shards.

        Shards are visited in a seeded random order, ``buffer_shards`` at a time; the rows of
        each group are shuffled together. Rows left over at the end of a group (fewer than
        ``batch_size``) carry over into the next, so one epoch uses every row except at most
        ``batch_size - 1`` at the very end. The order depends only on (seed, epoch).
        ``exclude_outliers`` leaves out the massive-activation rows (see ``ordinary_mask``).
        ``skip`` drops the first batches without copying them (a resumed run continues the epoch).
        """
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(self.n_shards)
        carry = np.empty((0, self.d_model), dtype=np.float32)
        for g in range(0, len(order), buffer_shards):
            group = [self._rows(int(i), exclude_outliers) for i in order[g:g + buffer_shards]]
            pool = np.concatenate([carry, *group])
            pool = pool[rng.permutation(pool.shape[0])]
            n_full = pool.shape[0] // batch_size
            for b in range(n_full):
                if skip:
                    skip -= 1
                    continue
                yield self._to_tensor(pool[b * batch_size:(b + 1) * batch_size], normalise, device)
            carry = pool[n_full * batch_size:].copy()  # a view would pin the whole pool

