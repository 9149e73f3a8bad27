"""The SAE codes of every evaluation token, on disk: the one encode pass the analyses share.

Why a store: the feature statistics, the splitting analysis (activation correlation on shared
tokens), the completeness experiment and the co-occurrence lobes all need each latent's
activation on each evaluation token. Encoding is the expensive part (a dense [N x n] matmul);
the codes themselves are k numbers per token. So the ``features`` stage encodes once and writes
them here, and everything downstream reads them as memmaps or as a ``scipy.sparse`` matrix.

Layout of a code directory:
- ``code_indices.npy`` int32 [N, width]: latent ids, one row per row of the activation store;
- ``code_values.npy`` float32 [N, width]: their activations (0 = unused slot, or a row the SAE
  was not applied to: the massive-activation outliers, see ``activations.py``);
- ``decoder.npy`` float32 [n, d]: the SAE's decoder rows, so the analyses need only this folder;
- ``codes.json``: n_latents, n_tokens, width, how many active latents did not fit (only for
  architectures without a fixed k), and the sha256 of every file (checked once per process on open).
Files are written under ``*.partial`` names and renamed once complete; the manifest comes last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from saeatlas.artifacts import (ManifestBacked, check_npy, fsync_dir, read_manifest, sha256_file, write_json_atomic,
                                write_npy_atomic)
from saeatlas.errors import StoreError

INDICES = "code_indices.npy"
VALUES = "code_values.npy"
MANIFEST = "codes.json"
DECODER = "decoder.npy"  # float32 [n_latents, d]: the SAE's decoder rows (raw units) the codes refer to
FORMAT = "saeatlas.codes/1"


class CodeWriter:
    """Append fixed-width sparse codes row block by row block into preallocated memmaps."""

    def __init__(self, directory: Path, n_tokens: int, width: int, n_latents: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.n_tokens, self.width, self.n_latents = n_tokens, width, n_latents
        self._indices = np.lib.format.open_memmap(directory / (INDICES + ".partial"), mode="w+",
                                                  dtype=np.int32, shape=(n_tokens, width))
        self._values = np.lib.format.open_memmap(directory / (VALUES + ".partial"), mode="w+",
                                                 dtype=np.float32, shape=(n_tokens, width))
        self.row = 0
        self.truncated = 0  # active latents dropped because a row had more than ``width``

    def append(self, indices: np.ndarray, values: np.ndarray) -> None:
        """One block of rows; narrower blocks are zero-padded, wider ones keep the largest values."""
        rows, m = values.shape
        if self.row + rows > self.n_tokens:
            raise StoreError(f"{self.directory}: more rows than the {self.n_tokens} announced")
        if m > self.width:
            order = np.argsort(-values, axis=1)[:, :self.width]
            self.truncated += int((values > 0).sum() - (np.take_along_axis(values, order, 1) > 0).sum())
            indices, values = np.take_along_axis(indices, order, 1), np.take_along_axis(values, order, 1)
            m = self.width
        sl = slice(self.row, self.row + rows)
        self._indices[sl, :m] = indices
        self._values[sl, :m] = values
        if m < self.width:
            self._indices[sl, m:] = 0
            self._values[sl, m:] = 0.0
        self.row += rows

    def finish(self, extra: dict[str, Any] | None = None, decoder: np.ndarray | None = None) -> dict[str, Any]:
        """Publish the arrays (and the SAE's ``decoder`` rows beside them), then the manifest
        with every file's sha256: the manifest is written last, so it never vouches for a file
        that is not whole."""
        if self.row != self.n_tokens:
            raise StoreError(f"{self.directory}: {self.row} rows written, {self.n_tokens} announced")
        for arr in (self._indices, self._values):
            arr.flush()
        del self._indices, self._values
        for name in (INDICES, VALUES):
            with open(self.directory / (name + ".partial"), "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.directory / (name + ".partial"), self.directory / name)
        if decoder is not None:
            write_npy_atomic(self.directory / DECODER, np.asarray(decoder, dtype=np.float32))
        files = {name: sha256_file(self.directory / name) for name in (INDICES, VALUES, DECODER)
                 if (self.directory / name).is_file()}
        manifest = {"format": FORMAT, "n_tokens": self.n_tokens, "width": self.width,
                    "n_latents": self.n_latents, "truncated_activations": self.truncated,
                    "files": files, **(extra or {})}
        write_json_atomic(self.directory / MANIFEST, manifest)
        fsync_dir(self.directory)
        return manifest


@dataclass(frozen=True)
class SparseCodes(ManifestBacked):
    """Read side: memmapped indices/values, and conversions to ``scipy.sparse``."""

    directory: Path
    manifest: dict[str, Any]
    indices: np.ndarray  # int32 [N, width], memmap
    values: np.ndarray  # float32 [N, width], memmap

    MANIFEST_NAME = MANIFEST

    @classmethod
    def open(cls, directory: str | Path, verify: bool = True) -> "SparseCodes":
        """Open a code store: file sizes, shapes and dtypes checked against the manifest, and with
        ``verify`` (the default) every file's sha256, once per process."""
        directory = Path(directory)
        manifest = read_manifest(directory, MANIFEST, FORMAT, "run the features stage first")
        if not isinstance(manifest.get("files"), dict):
            raise StoreError(f"{directory / MANIFEST}: lists no checksums (written by an older saeatlas); "
                             "re-run the features stage")
        shape = (manifest["n_tokens"], manifest["width"])
        check_npy(directory / INDICES, shape, np.int32)
        check_npy(directory / VALUES, shape, np.float32)
        if (directory / DECODER).is_file():
            check_npy(directory / DECODER, None, np.float32)
        store = cls(directory, manifest, np.load(directory / INDICES, mmap_mode="r"),
                    np.load(directory / VALUES, mmap_mode="r"))
        if verify:
            store.verify(once=True)
        return store

    @property
    def root(self) -> Path:
        return self.directory

    def checksums(self) -> dict[str, str]:
        return dict(self.manifest["files"])

    @property
    def n_latents(self) -> int:
        return int(self.manifest["n_latents"])

    def csr(self, start: int = 0, stop: int | None = None) -> Any:
        """Rows ``start:stop`` as a ``scipy.sparse.csr_matrix`` [rows, n_latents] (zeros dropped)."""
        from scipy import sparse

        stop = self.n_tokens if stop is None else min(stop, self.n_tokens)
        idx = np.asarray(self.indices[start:stop])
        val = np.asarray(self.values[start:stop])
        keep = val > 0
        counts = keep.sum(axis=1)
        indptr = np.zeros(stop - start + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        mat = sparse.csr_matrix((val[keep], idx[keep], indptr), shape=(stop - start, self.n_latents))
        mat.sum_duplicates()
        return mat

    def decoder(self) -> np.ndarray:
        """The dictionary directions (decoder rows) of the SAE that produced these codes."""
        path = self.directory / DECODER
        if not path.is_file():
            raise StoreError(f"{self.directory}: no {DECODER}")
        return np.load(path, mmap_mode="r")

    def iter_blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(start, indices, values)`` blocks of at most ``rows`` rows, read from the memmaps."""
        for start in range(0, self.n_tokens, rows):
            stop = min(start + rows, self.n_tokens)
            yield start, np.asarray(self.indices[start:stop]), np.asarray(self.values[start:stop])


def csr_from_code(values: np.ndarray, indices: np.ndarray, n_latents: int) -> Any:
    """Fixed-width codes (``values``, ``indices`` [rows, width]) as a SciPy CSR matrix
    [rows, n_latents], explicit zeros dropped."""
    from scipy import sparse

    rows = np.repeat(np.arange(values.shape[0]), values.shape[1])
    out = sparse.csr_matrix((values.ravel(), (rows, indices.ravel())), shape=(values.shape[0], n_latents))
    out.eliminate_zeros()
    return out
