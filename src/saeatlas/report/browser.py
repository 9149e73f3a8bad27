"""The feature browser under ``results/report/features/``: every feature of every size and layer,
opened from disk.

Chromium refuses ``fetch()`` on ``file://``, so the data are ``.js`` files that pass a literal to
a global callback; a page adds the one it needs as a ``<script>`` tag. The pages are static
(``assets/browser/``); only the data are written here:

- ``data/vocab.js``: ``saeatlasVocab([...])``, every token's raw bytes as a Latin-1 string (the
  page joins a context's bytes and decodes them as UTF-8, so a character split over tokens shows);
- ``data/sizes.js``: ``saeatlasSizes({...})``, the layers, sizes, chunk size and UMAP extents;
- ``data/layer<L>/n<N>/chunk-<c>.js``: ``saeatlasChunk(L, N, c, [record, ...])``, ``CHUNK``
  features per file (records: ``browser_records``), so a feature page loads ~1/CHUNK of a size;
- ``data/layer<L>/n<N>/search.js``: ``saeatlasSearch(L, N, [...])``, loaded only when searching;
- ``data/layer<L>/umap.png``: the joint UMAP as a thumbnail on which a page marks its feature.

Every literal goes through ``js_literal`` (no ``<``, ``>``, ``&``, U+2028/9 survive), and the
pages build their DOM with ``textContent``: corpus text never becomes markup.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saeatlas.artifacts import write_bytes_atomic
from saeatlas.progress import bar
from saeatlas.report.browser_data import (activation_histograms, children_for, cofiring, lobes_for, neighbours_for,
                                          neurons_for, parents_for, read_contexts, read_csv, read_features, umap_for)
from saeatlas.report.browser_records import SizeData, chunk_records, search_entry
from saeatlas.report.escape import js_literal

log = logging.getLogger(__name__)

CHUNK = 64
PAGES = Path(__file__).with_name("assets") / "browser"


@dataclass(frozen=True)
class SizeInputs:
    """One dictionary size's outputs: the features stage's tables and codes, the lobes table."""

    size: int
    features: Path
    contexts: Path
    codes: Path
    lobes: Path | None
    neurons: Path | None = None  # the neurons analysis's top_neurons_n<size>.csv


@dataclass(frozen=True)
class LayerInputs:
    """One layer: its sizes (ascending) and the cross-size tables of the analyses (None: not run)."""

    layer: int | str  # the layer, or "<layer>-<arch>" in a study of several architectures (assemble.block_key)
    sizes: tuple[SizeInputs, ...]
    matches: Path | None
    neighbours: Path | None
    umap: Path | None
    lobe_k: int  # the lobe partition a page names (the nearest k the lobes table has)


def existing(path: Path | None) -> Path | None:
    return path if path is not None and Path(path).is_file() else None


def write_call(path: Path, function: str, *args: Any) -> int:
    """``function(arg, ...);`` as a .js file; returns its size in bytes."""
    data = f"{function}({','.join(js_literal(a) for a in args)});\n".encode("utf-8")
    write_bytes_atomic(path, data)
    return len(data)


def vocab_strings(token_bytes: list[bytes]) -> list[str]:
    """Each token's bytes as a Latin-1 string (code point = byte), the compact form for JS."""
    return [b.decode("latin-1") for b in token_bytes]


def token_words(token_bytes: list[bytes]) -> list[str]:
    """Each token's text alone (what search matches; a partial character becomes U+FFFD)."""
    return [b.decode("utf-8", errors="replace") for b in token_bytes]


def umap_thumbnail(coords: np.ndarray, sizes: list[int], path: Path) -> dict[str, Any] | None:
    """The joint UMAP of all sizes as a small PNG (grey points, denser = darker); returns the axis
    extents and pixel box a page needs to place its feature's marker, or None without a map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = np.isfinite(coords).all(axis=1)
    if not finite.any():
        return None
    pts = coords[finite]
    # The central 99% sets the frame (a few far outliers would squeeze the cloud into a strip);
    # a page pins a feature outside it to the edge.
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    pad = (hi - lo) * 0.03 + 1e-9
    lo, hi = lo - pad, hi + pad
    width, height, dpi = 360, 300, 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    # Points shrink as the map fills, so that a thousand and forty thousand features both read.
    ax.scatter(pts[:, 0], pts[:, 1], s=float(np.clip(3000 / len(pts), 0.5, 5)), c="#5a6679", alpha=0.4,
               linewidths=0, rasterized=True)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return {"png": path.name, "width": width, "height": height, "x": [float(lo[0]), float(hi[0])],
            "y": [float(lo[1]), float(hi[1])], "sizes": sizes}


def size_data(si: SizeInputs, layer: LayerInputs, tables: dict[str, Any]) -> SizeData:
    """Everything the pages show about one size, read and computed (histograms, co-firing)."""
    from saeatlas.codes import SparseCodes

    codes = SparseCodes.open(si.codes)
    n = codes.n_latents
    hist, peak = activation_histograms(codes)
    return SizeData(size=si.size, features=read_features(si.features, n), contexts=read_contexts(si.contexts, n),
                    hist=hist, hist_max=peak, cofiring=cofiring(codes),
                    neighbours=neighbours_for(tables["neighbours"], si.size, n, layer.neighbours),
                    parents=parents_for(tables["matches"], si.size, n, layer.matches),
                    children=children_for(tables["matches"], si.size, n, layer.matches),
                    umap=umap_for(tables["umap"], si.size, n, layer.umap),
                    lobes=lobes_for(existing(si.lobes), n, layer.lobe_k),
                    neurons=neurons_for(existing(si.neurons), n))


def write_size(out: Path, layer: int | str, data: SizeData, words: list[str], raw: list[bytes]) -> dict[str, Any]:
    """The chunk files and the search index of one size; its line in ``sizes.js``."""
    folder = out / "data" / f"layer{layer}" / f"n{data.size}"
    folder.mkdir(parents=True, exist_ok=True)
    search, written = [], 0
    chunks = -(-data.n // CHUNK)
    for c in bar(range(chunks), desc=f"browser layer {layer} n={data.size}", unit="chunk"):
        first, stop = c * CHUNK, min((c + 1) * CHUNK, data.n)
        records = chunk_records(data, first, stop)
        written += write_call(folder / f"chunk-{c:05d}.js", "saeatlasChunk", layer, data.size, c, records)
        search.extend(search_entry(r, words, raw) for r in records)
    written += write_call(folder / "search.js", "saeatlasSearch", layer, data.size, search)
    alive = int((data.features.count > 0).sum())
    first_alive = int(np.argmax(data.features.count)) if data.n else 0
    return {"size": data.size, "n": data.n, "alive": alive, "chunks": chunks, "busiest": first_alive,
            "bytes": written, "has_parents": data.parents is not None, "has_children": data.children is not None,
            "lobe_k": None if data.lobes is None else data.lobes[0]}


def build_layer(out: Path, layer: LayerInputs, words: list[str], raw: list[bytes]) -> dict[str, Any]:
    tables = {name: (read_csv(p, ()) if (p := existing(getattr(layer, name))) else None)
              for name in ("matches", "neighbours", "umap")}
    entries = []
    for si in layer.sizes:
        data = size_data(si, layer, tables)
        entries.append(write_size(out, layer.layer, data, words, raw))
        del data
    umap = None
    if tables["umap"] is not None and "joint_x" in tables["umap"]:
        coords = np.stack([tables["umap"]["joint_x"].astype(np.float64),
                           tables["umap"]["joint_y"].astype(np.float64)], axis=1)
        umap = umap_thumbnail(coords, [e["size"] for e in entries], out / "data" / f"layer{layer.layer}" / "umap.png")
    return {"layer": layer.layer, "sizes": entries, "umap": umap}


def build_browser(out: Path, layers: tuple[LayerInputs, ...], token_bytes: list[bytes]) -> dict[str, Any]:
    """Write the whole browser under ``out`` (pages, vocabulary, per-layer data); returns the
    index written to ``sizes.js`` (bytes per size included, for the report's benchmark)."""
    out.mkdir(parents=True, exist_ok=True)
    for page in sorted(PAGES.iterdir()):
        shutil.copyfile(page, out / page.name)
    (out / "data").mkdir(exist_ok=True)
    write_call(out / "data" / "vocab.js", "saeatlasVocab", vocab_strings(token_bytes))
    words = token_words(token_bytes)
    index = {"chunk": CHUNK, "layers": [build_layer(out, layer, words, token_bytes) for layer in layers]}
    write_call(out / "data" / "sizes.js", "saeatlasSizes", index)
    log.info("feature browser: %d features in %s",
             sum(s["n"] for layer in index["layers"] for s in layer["sizes"]), out)
    return index
