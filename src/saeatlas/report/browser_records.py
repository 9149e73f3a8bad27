"""One chunk of the feature browser's data as plain lists and dicts, ready for ``js_literal``.

The record of a feature (what ``assets/browser/browser.js`` reads; every number rounded so that
the files stay small, every string raw: escaping happens once, when the chunk is serialised):

- ``id, count, density, mean, max``; ``hist``: ``{"max": m, "counts": [...]}`` (linear bins 0..m);
- ``logit_top`` / ``logit_bottom``: ``[[token_id, value], ...]`` (token text from ``vocab.js``);
- ``top``: ``[context, ...]``; ``quantiles``: ``[[bin, [context, ...]], ...]``, where a context is
  ``[activation, doc_id, position, centre, [token_id, ...], [token_activation, ...]]``;
- ``neighbours``: ``[[feature, cos], ...]`` (null without the neighbours table); ``cofiring``:
  ``[[feature, shared, p_other_given_this, jaccard], ...]`` (empty when it never fired);
  ``parent``: ``{"size", "id", "cos", "class"}`` (null for the smallest size, without the
  splitting table, or without a match); ``children``: ``{"size", "items": [[feature, cos,
  class], ...]}`` (null for the largest size or without the table); ``umap``: ``[x, y,
  joint_x, joint_y]`` (null without the table; a coordinate is null where no map placed it);
  ``lobe`` (null without the lobes table or for a feature the lobes stage did not analyse);
  ``neurons``: ``[[mlp_neuron, pearson_r], ...]`` most correlated first (empty for a feature that
  never fired; null without the neurons analysis's table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from saeatlas.report.browser_data import Cofiring, ContextTable, FeatureTable, Related

ACT_DECIMALS = 3  # token activations: 3 decimals (the hover value); a firing token never rounds to 0
COS_DECIMALS = 4


@dataclass(frozen=True)
class SizeData:
    """Everything the browser shows about one dictionary size."""

    size: int
    features: FeatureTable
    contexts: ContextTable
    hist: np.ndarray  # int64 [n, bins]
    hist_max: np.ndarray  # float32 [n]
    cofiring: Cofiring
    neighbours: Related | None
    parents: Related | None
    children: Related | None
    umap: np.ndarray | None
    lobes: tuple[int, np.ndarray] | None  # (k of the partition shown, lobe per feature)
    neurons: tuple[np.ndarray, np.ndarray] | None = None  # (neuron ids [n, t], signed r [n, t])

    @property
    def n(self) -> int:
        return int(self.hist.shape[0])


def sig(x: float, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits (None for NaN: JSON has no NaN)."""
    x = float(x)
    return None if not math.isfinite(x) else float(f"{x:.{digits}g}")


def rounded(values: np.ndarray, decimals: int) -> list[Any]:
    """``values`` rounded to ``decimals`` as a list; zeros as int 0 (``0`` not ``0.0``: most window
    tokens are zeros), and a positive value never rounds down to 0 (it fired)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.round(values, decimals)
    out = np.where((values > 0) & (out == 0), 10.0 ** -decimals, out)
    return [v or 0 for v in out.tolist()]


def ints(values: np.ndarray) -> list[int]:
    return np.asarray(values, dtype=np.int64).tolist()


def word(vocab: list[str], token: int) -> str:
    """The text of a token id ('' for an id the vocabulary does not have)."""
    return vocab[token] if 0 <= token < len(vocab) else ""


# --------------------------------------------------------------------------------------
# Contexts of a chunk
# --------------------------------------------------------------------------------------


def context_lists(contexts: ContextTable, first: int, stop: int) -> list[tuple[list[Any], list[Any]]]:
    """For features first..stop-1: (top contexts, quantile contexts grouped by bin)."""
    a, b = contexts.groups.span(first, stop)
    rows = contexts.groups.rows[a:b]
    f = contexts.fields
    ids = contexts.token_ids.take(rows, ints)
    acts = contexts.token_acts.take(rows, lambda v: rounded(v, ACT_DECIMALS))
    act = rounded(f["activation"][rows], ACT_DECIMALS)
    doc, pos, centre = ints(f["doc_id"][rows]), ints(f["position"][rows]), ints(f["centre"][rows])
    is_top, bins = f["is_top"][rows].tolist(), ints(f["bin"][rows])
    records = [[act[i], doc[i], pos[i], centre[i], ids[i], acts[i]] for i in range(rows.size)]
    offsets = (contexts.groups.offsets[first:stop + 1] - a).tolist()
    out = []
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        top = [records[i] for i in range(lo, hi) if is_top[i]]
        quantiles: list[list[Any]] = []
        for i in range(lo, hi):
            if not is_top[i]:
                if not quantiles or quantiles[-1][0] != bins[i]:
                    quantiles.append([bins[i], []])
                quantiles[-1][1].append(records[i])
        out.append((top, quantiles))
    return out


# --------------------------------------------------------------------------------------
# Relations
# --------------------------------------------------------------------------------------


def neighbour_list(related: Related | None, feature: int) -> list[list[Any]] | None:
    if related is None:
        return None
    rows = related.groups.of(feature)
    return [[int(g), sig(c)] for g, c in zip(related.table["neighbour"][rows], related.table["cos"][rows])]


def parent_of(related: Related | None, feature: int) -> dict[str, Any] | None:
    if related is None:
        return None
    rows = related.groups.of(feature)
    if rows.size == 0:
        return None
    r = int(rows[0])
    t = related.table
    return {"size": related.size, "id": int(t["dec_parent"][r]), "cos": sig(t["dec_cos"][r]),
            "class": str(t["class"][r])}


def children_of(related: Related | None, feature: int) -> dict[str, Any] | None:
    if related is None:
        return None
    rows = related.groups.of(feature)
    t = related.table
    items = [[int(t["feature"][r]), sig(t["dec_cos"][r]), str(t["class"][r])] for r in rows]
    return {"size": related.size, "items": items}


def cofiring_list(cof: Cofiring, feature: int) -> list[list[Any]]:
    """``[[partner, shared, P(partner | this), jaccard], ...]`` of the partners found."""
    out = []
    for g, shared, jac in zip(cof.partner[feature], cof.shared[feature], cof.jaccard[feature]):
        if g >= 0:
            out.append([int(g), int(shared), sig(shared / max(int(cof.firings[feature]), 1)), sig(jac)])
    return out


def neuron_list(neurons: tuple[np.ndarray, np.ndarray] | None, feature: int) -> list[list[Any]] | None:
    """``[[neuron, r], ...]`` most correlated first (empty for a dead feature; None without the table)."""
    if neurons is None:
        return None
    ids, corr = neurons
    return [[int(i), sig(c)] for i, c in zip(ids[feature], corr[feature]) if i >= 0]


def optional_row(array: np.ndarray | None, feature: int) -> Any:
    """A feature's UMAP coordinates or lobe, or None (no table, or the table lacks it)."""
    if array is None:
        return None
    value = array[feature]
    if np.ndim(value):
        return None if np.isnan(value).all() else [sig(v, 6) for v in value]
    return None if value < 0 else int(value)


# --------------------------------------------------------------------------------------
# Records and the search index
# --------------------------------------------------------------------------------------


def pairs(ids: list[int], values: list[Any]) -> list[list[Any]]:
    return [[i, v] for i, v in zip(ids, values)]


def chunk_records(data: SizeData, first: int, stop: int) -> list[dict[str, Any]]:
    """The records of features first..stop-1 (see the module doc)."""
    ft = data.features
    rows = np.arange(first, stop)
    logit = {key: ft.logit[key].take(rows, ints if key.endswith("ids") else lambda v: [sig(x) for x in v])
             for key in ft.logit}
    contexts = context_lists(data.contexts, first, stop)
    out = []
    for j, f in enumerate(range(first, stop)):
        out.append({
            "id": f, "count": int(ft.count[f]), "density": sig(ft.density[f]), "mean": sig(ft.mean[f]),
            "max": sig(ft.max[f]),
            "hist": {"max": sig(data.hist_max[f]), "counts": ints(data.hist[f])},
            "logit_top": pairs(logit["top_ids"][j], logit["top_values"][j]),
            "logit_bottom": pairs(logit["bottom_ids"][j], logit["bottom_values"][j]),
            "top": contexts[j][0], "quantiles": contexts[j][1],
            "neighbours": neighbour_list(data.neighbours, f), "cofiring": cofiring_list(data.cofiring, f),
            "parent": parent_of(data.parents, f), "children": children_of(data.children, f),
            "umap": optional_row(data.umap, f),
            "lobe": None if data.lobes is None else optional_row(data.lobes[1], f),
            "neurons": neuron_list(data.neurons, f),
        })
    return out


def search_entry(record: dict[str, Any], vocab: list[str], token_bytes: list[bytes]) -> list[Any]:
    """``[id, count, tokens, text]``: the logit-lens top tokens and the tokens where the feature
    fires in its top context; the text of that context's window (its bytes decoded once, so a
    character split over tokens is whole)."""
    tokens = [word(vocab, t) for t, _ in record["logit_top"]]
    text = ""
    if record["top"]:
        _, _, _, _, ids, acts = record["top"][0]
        text = b"".join(token_bytes[t] for t in ids if 0 <= t < len(token_bytes)).decode("utf-8", errors="replace")
        tokens += [word(vocab, t) for t, a in zip(ids, acts) if a]
    return [record["id"], record["count"], list(dict.fromkeys(tokens)), text]
