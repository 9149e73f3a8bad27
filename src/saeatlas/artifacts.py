"""Writing outputs so that an interrupted run never leaves a half-written file behind.

Every file a stage writes goes to ``<name>.tmp``, is flushed and fsync'd, then renamed over
the final name (rename is atomic on POSIX), and the directory is fsync'd so the rename itself
survives a crash. Also: checksums, and the provenance block (git commit, versions, params
hash) that every stage records beside its metrics.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    fsync_dir(final.parent)


def replace_dir(partial: Path, final: Path) -> None:
    """Publish a finished directory: every file in ``partial`` is fsync'd, the old ``final`` (if
    any) is moved aside, ``partial`` renamed to ``final`` and the parent fsync'd, then the old
    copy removed. A crash leaves either the old directory, or the new one (plus a ``.old`` copy
    the next publish removes), never a half-written one under the final name."""
    import shutil

    for file in sorted(p for p in partial.rglob("*") if p.is_file()):
        with open(file, "rb") as fh:
            os.fsync(fh.fileno())
    for folder in sorted((p for p in partial.rglob("*") if p.is_dir()), reverse=True):
        fsync_dir(folder)
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)
    partial.replace(final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through ``<name>.tmp``: flushed and fsync'd, then renamed over ``path``
    (atomic on POSIX) and the directory fsync'd. An exception leaves ``path`` untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
    _commit(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Strict JSON with sorted keys and no timestamps, so identical content gives identical bytes.

    A NaN or infinity is refused (an error naming the file and the key) rather than written as
    ``NaN``, which is not JSON: DVC, MLflow and browsers would fail on the file later, or a stage
    would exit 0 having measured nothing."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as exc:
        from saeatlas.config import non_finite_errors
        from saeatlas.errors import OutputError

        where = "; ".join(non_finite_errors(obj)) or str(exc)
        raise OutputError(f"{path}: refusing to write a non-finite number ({where})") from exc
    write_bytes_atomic(path, text.encode("utf-8"))


def write_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def write_parquet_atomic(table: Any, path: Path) -> None:
    """A pyarrow Table as zstd Parquet, written like every other file (tmp, fsync, rename)."""
    import pyarrow.parquet as pq

    with atomic_file(path) as fh:  # streamed to the file: the table is never in memory twice
        pq.write_table(table, fh, compression="zstd")


def write_csv_atomic(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str]) -> None:
    """A CSV table (header + one line per row) that DVC plots and pandas read."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, buf.getvalue().encode())


# (resolved directory, sha256 of its manifest) of every store this process has checksummed: a
# store is hashed once per process however often it is opened, and again if its manifest changes.
_VERIFIED: set[tuple[str, str]] = set()


def check_npy(path: Path, shape: tuple[int, ...] | None = None, dtype: Any = None) -> tuple[int, ...]:
    """Check that ``path`` is a whole ``.npy`` file: its header parses, its size is exactly header +
    data (a truncated or padded file is caught without reading the data), and its shape and dtype
    are the expected ones. Returns the shape. A StoreError names the file and what is wrong."""
    from saeatlas.errors import StoreError

    if not path.is_file():
        raise StoreError(f"{path}: listed in the manifest but missing")
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            found_shape, fortran, found_dtype = read_header(fh)
            data_start = fh.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise StoreError(f"{path}: not a readable .npy file ({exc})") from exc
    if found_dtype.hasobject:
        raise StoreError(f"{path}: holds Python objects; refusing to read it")
    expected = data_start + int(np.prod(found_shape, dtype=np.int64)) * found_dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise StoreError(f"{path}: {size} bytes, its header {tuple(found_shape)} {found_dtype} needs {expected} "
                         f"({'truncated' if size < expected else 'trailing data'})")
    if shape is not None and tuple(found_shape) != tuple(shape):
        raise StoreError(f"{path}: shape {tuple(found_shape)}, the manifest says {tuple(shape)}")
    if dtype is not None and found_dtype != np.dtype(dtype):
        raise StoreError(f"{path}: dtype {found_dtype}, the manifest says {np.dtype(dtype)}")
    return tuple(found_shape)


class ManifestBacked:
    """An on-disk store described by a JSON manifest (activation store, code store).

    A store checks itself when opened: every file's size always (cheap, and catches truncation
    with the file named), and every file's sha256 against the manifest once per process
    (``verify``): a flipped byte would otherwise flow silently into NaN losses or wrong metrics.
    """

    manifest: dict[str, Any]
    MANIFEST_NAME = ""

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def root(self) -> Path:
        raise NotImplementedError

    def checksums(self) -> dict[str, str]:
        """``{file name: sha256}`` of every data file the manifest vouches for."""
        raise NotImplementedError

    def verify(self, once: bool = False) -> None:
        """Check every file against the sha256 in the manifest (StoreError naming the first file
        that differs). ``once``: skip if this process has already verified this manifest."""
        from saeatlas.errors import StoreError
        from saeatlas.progress import bar as progress_bar

        key = (str(self.root.resolve()), sha256_file(self.root / self.MANIFEST_NAME))
        if once and key in _VERIFIED:
            return
        expected = self.checksums()
        for name, sha in progress_bar(sorted(expected.items()), desc=f"verify {self.root.name}", unit="file"):
            if sha256_file(self.root / name) != sha:
                raise StoreError(f"{self.root / name}: checksum does not match {self.MANIFEST_NAME} "
                                 f"(the file is damaged or was changed; re-run the stage that wrote it)")
        _VERIFIED.add(key)


def read_manifest(directory: Path, name: str, fmt: str, missing: str) -> dict[str, Any]:
    """The JSON manifest ``directory/name`` of an on-disk store, checked to be of format ``fmt``.
    A missing, unreadable or foreign manifest is a StoreError naming the file (``missing`` says
    what to run when there is none)."""
    from saeatlas.errors import StoreError

    path = directory / name
    if not path.is_file():
        raise StoreError(f"{directory}: no {name}; {missing}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise StoreError(f"{path}: format {found!r}, expected {fmt!r}")
    return manifest


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("saeatlas", "torch", "transformers", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def provenance(params_hash: str) -> dict[str, Any]:
    return {"git_commit": git_commit(), "versions": versions(), "params_hash": params_hash}


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Flat ``{name: number}`` JSON that ``dvc metrics show/diff`` reads.

    Only numbers (and booleans) go in: DVC diffs numbers, and a flat file keeps keys stable.
    """
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, (bool, np.bool_)):
            flat[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            flat[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            flat[key] = float(value)
        else:
            raise TypeError(f"metric {key!r} is not a number: {value!r}")
    write_json_atomic(path, flat)
