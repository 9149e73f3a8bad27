"""Text sources -> tokenised, fixed-length contexts with document ids and domain labels.

How the budget is met, exactly and visibly:
1. Each source gets a share of the tokens by its weight: ``quota = weight / sum(weights) *
   (train_tokens + eval_tokens)`` (rounded up), split between eval and train in the same ratio.
2. A source's documents are shuffled with the seed, then consumed in that order: the first go
   to the held-out split until its quota is met, the next to training. The split is by
   *document*, so no text is shared between train and eval.
3. The last document a split takes from a source is cut to fit its quota (logged, and flagged
   in ``documents.jsonl``). A source that runs out of text before its quota is an error
   naming the source; nothing is silently shortened.
4. Each split's documents are shuffled together, joined with the separator token, and cut into
   rows of ``positions_per_context`` tokens; BOS is put in front of every row. The tokens left
   over after the last whole row are dropped and counted in the metrics.

Outputs (``results/corpus/``): ``{train,eval}_contexts.npy`` int32 [n, context_length] (what
the model reads), ``{train,eval}_doc_ids.npy`` int32 [n, context_length] (-1 at BOS),
``documents.jsonl`` (one line per document: id, split, source, domain, title, tokens) and
``metrics.json``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from saeatlas.artifacts import sha256_file, write_bytes_atomic, write_json_atomic, write_npy_atomic
from saeatlas.config import CorpusParams, SourceParams
from saeatlas.errors import CorpusError
from saeatlas.sources import Document, SkipCounter, iter_documents, provenance
from saeatlas.tokenise import PATTERNS, count_text, encode_texts, special_strings
from saeatlas.progress import bar as progress_bar

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")
TOKENIZE_BATCH = 64


@dataclass
class TokenisedDoc:
    doc: Document
    ids: np.ndarray  # int32: a tenth of the memory of a list of Python ints
    truncated_from: int | None = None


@dataclass
class SourceTake:
    """What one source contributed to one split."""

    docs: list[TokenisedDoc] = field(default_factory=list)
    tokens: int = 0


def source_quotas(cfg: CorpusParams, n_train: int, n_eval: int) -> list[dict[str, int]]:
    """Token quota per source and split, proportional to the weights.

    Rounded up, plus one token of slack, so that the sources together always hold at least
    ``n_train``/``n_eval`` tokens even when a separator does not fit at the end of a quota.
    """
    total_w = sum(s.weight for s in cfg.sources)
    return [
        {"eval": math.ceil(n_eval * s.weight / total_w) + 1,
         "train": math.ceil(n_train * s.weight / total_w) + 1}
        for s in cfg.sources
    ]


def _shuffled_docs(src: SourceParams, cfg: CorpusParams, skips: SkipCounter, index: int) -> Iterator[Document]:
    """A source's documents in a seeded random order.

    Local and built-in sources are read whole and permuted (the seed mixes the corpus seed,
    the source's identity and its position in the list). A Hugging Face dataset is streamed,
    shuffled by the datasets library's seeded buffer, and read only as far as its quota needs.
    """
    if src.kind == "huggingface":
        return iter_documents(src, cfg.min_chars, skips, seed=cfg.seed)
    docs = list(iter_documents(src, cfg.min_chars, skips))
    rng = np.random.default_rng([cfg.seed, zlib.crc32(f"{src.kind}:{src.name}".encode()), index])
    return (docs[i] for i in rng.permutation(len(docs)))


def _tokenise_stream(docs: Iterator[Document], tokenizer: Any) -> Iterator[TokenisedDoc]:
    while batch := list(itertools.islice(docs, TOKENIZE_BATCH)):
        enc = encode_texts(tokenizer, [d.text for d in batch], [d.title for d in batch])
        for doc, ids in zip(batch, enc):
            yield TokenisedDoc(doc, ids)


def take_from_source(
    src: SourceParams,
    cfg: CorpusParams,
    tokenizer: Any,
    quota: dict[str, int],
    skips: SkipCounter,
    index: int,
    sep: int | None,
) -> dict[str, SourceTake]:
    """Fill the eval then the train quota of one source with whole (last one cut) documents."""
    docs = _shuffled_docs(src, cfg, skips, index)
    takes = {split: SourceTake() for split in SPLITS}
    order = ("eval", "train")
    split_i = 0
    extra = 1 if sep is not None else 0
    stream = _tokenise_stream(docs, tokenizer)
    bar = progress_bar(total=quota["eval"] + quota["train"], desc=f"tokenise {src.name}", unit="tok")
    for td in stream:
        if len(td.ids) == 0:
            skips.skip("no_tokens", f"{src.name}:{td.doc.title}")
            continue
        split = order[split_i]
        take = takes[split]
        room = quota[split] - take.tokens - extra
        if len(td.ids) > room:
            log.info("%s: cut the last %s document %r to %d of %d tokens to fit its quota",
                     src.name, split, td.doc.title, room, len(td.ids))
            td = TokenisedDoc(td.doc, td.ids[:room], truncated_from=len(td.ids))
        take.docs.append(td)
        take.tokens += len(td.ids) + extra
        bar.update(len(td.ids) + extra)
        # Full once no further document could add a token (the quota has one token of slack).
        if take.tokens >= quota[split] - extra:
            split_i += 1
            if split_i == len(order):
                break
    bar.close()
    have = takes["eval"].tokens + takes["train"].tokens
    if have == 0:
        raise CorpusError(f"{src.key}: source {src.name!r} has no usable documents "
                          f"(skipped: {dict(skips) or 'none'})")
    if split_i < len(order):
        want = quota["eval"] + quota["train"]
        raise CorpusError(
            f"{src.key}: source {src.name!r} ran out of text after {have:,} tokens, but its weight "
            f"asks for {want:,}; lower its weight or corpus.train_tokens/eval_tokens"
        )
    return takes


def pack(
    docs: list[tuple[int, TokenisedDoc]],
    n_contexts: int,
    positions: int,
    bos: int | None,
    sep: int | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenate documents (with separators) into rows of ``positions`` tokens, BOS in front.

    Returns (contexts, doc_ids, dropped_tail_tokens).
    """
    stream_len = sum(len(td.ids) + (1 if sep is not None else 0) for _, td in docs)
    need = n_contexts * positions
    if stream_len < need:  # quotas are rounded up, so this is a bug, not bad input
        raise AssertionError(f"packed stream has {stream_len} tokens, need {need}")
    ids = np.empty(stream_len, dtype=np.int32)
    owners = np.empty(stream_len, dtype=np.int32)
    pos = 0
    for doc_id, td in docs:
        n = len(td.ids)
        ids[pos:pos + n] = td.ids
        owners[pos:pos + n] = doc_id
        pos += n
        if sep is not None:
            ids[pos] = sep
            owners[pos] = doc_id
            pos += 1
    body = ids[:need].reshape(n_contexts, positions)
    owner = owners[:need].reshape(n_contexts, positions)
    if bos is not None:
        body = np.concatenate([np.full((n_contexts, 1), bos, np.int32), body], axis=1)
        owner = np.concatenate([np.full((n_contexts, 1), -1, np.int32), owner], axis=1)
    return np.ascontiguousarray(body), np.ascontiguousarray(owner), stream_len - need


def special_ids(cfg: CorpusParams, tokenizer: Any) -> tuple[int | None, int | None]:
    """(BOS id or None, separator id or None), checked against the vocabulary."""
    bos = None
    if cfg.prepend_bos:
        bos = tokenizer.bos_token_id
        if bos is None:
            raise CorpusError("corpus.prepend_bos: the tokenizer defines no BOS token; set it to false")
    sep = None
    if cfg.separator_token is not None:
        sep = tokenizer.convert_tokens_to_ids(cfg.separator_token)
        if sep is None or sep == tokenizer.unk_token_id and cfg.separator_token != tokenizer.unk_token:
            raise CorpusError(
                f"corpus.separator_token: {cfg.separator_token!r} is not a single token of this tokenizer"
            )
    return bos, sep


def build_corpus(cfg: CorpusParams, tokenizer: Any, out_dir: Path) -> dict[str, Any]:
    """Build the corpus outputs in ``out_dir`` and return flat metrics."""
    positions = cfg.positions_per_context
    n_ctx = {"train": cfg.train_tokens // positions, "eval": cfg.eval_tokens // positions}
    for split, key in (("train", "corpus.train_tokens"), ("eval", "corpus.eval_tokens")):
        if n_ctx[split] < 1:
            raise CorpusError(
                f"{key}: must hold at least one context of {positions} tokens, got {getattr(cfg, split + '_tokens')}"
            )
    bos, sep = special_ids(cfg, tokenizer)
    quotas = source_quotas(cfg, n_ctx["train"] * positions, n_ctx["eval"] * positions)

    skips = SkipCounter()
    per_split: dict[str, list[tuple[SourceParams, TokenisedDoc]]] = {s: [] for s in SPLITS}
    for i, src in enumerate(progress_bar(cfg.sources, desc="corpus sources", unit="source", leave=True)):
        takes = take_from_source(src, cfg, tokenizer, quotas[i], skips, i, sep)
        for split in SPLITS:
            per_split[split].extend((src, td) for td in takes[split].docs)

    out_dir.mkdir(parents=True, exist_ok=True)
    # manifest.json is the commit marker: removed before anything is rewritten, written last,
    # so a killed run never leaves new arrays beside an old manifest that later stages trust.
    (out_dir / "manifest.json").unlink(missing_ok=True)
    documents: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    specials = special_strings(tokenizer)
    text_counts: Counter = Counter()
    for split_i, split in enumerate(SPLITS):
        rng = np.random.default_rng([cfg.seed, 1000 + split_i])
        items = per_split[split]
        order = rng.permutation(len(items))
        numbered = []
        for j in order:
            src, td = items[j]
            doc_id = len(documents)
            documents.append({
                "doc_id": doc_id, "split": split, "source": src.name, "domain": src.domain,
                "title": td.doc.title, "tokens": len(td.ids),
                "truncated_from": td.truncated_from,
            })
            numbered.append((doc_id, td))
            text_counts.update(count_text(td.doc.text, specials))
        contexts, doc_ids, dropped = pack(numbered, n_ctx[split], positions, bos, sep)
        write_npy_atomic(out_dir / f"{split}_contexts.npy", contexts)
        write_npy_atomic(out_dir / f"{split}_doc_ids.npy", doc_ids)
        metrics[f"{split}.contexts"] = int(n_ctx[split])
        metrics[f"{split}.tokens"] = int(n_ctx[split] * positions)
        metrics[f"{split}.documents"] = len(numbered)
        metrics[f"{split}.dropped_tail_tokens"] = int(dropped)
        # Domain mix actually achieved, from the packed tokens themselves.
        body = doc_ids[:, 1:] if bos is not None else doc_ids
        domains = np.array([documents[d]["domain"] for d in range(len(documents))])
        counts = dict(zip(*np.unique(domains[body.ravel()], return_counts=True)))
        for dom, c in sorted(counts.items()):
            metrics[f"{split}.domain_fraction.{dom}"] = round(float(c) / body.size, 6)
        log.info("%s: %d contexts x %d tokens from %d documents (%d tail tokens dropped)",
                 split, n_ctx[split], cfg.context_length, len(numbered), dropped)

    write_bytes_atomic(out_dir / "documents.jsonl",
                       "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents).encode("utf-8"))

    metrics["documents.truncated"] = sum(1 for d in documents if d["truncated_from"] is not None)
    counted = _input_counts(skips, text_counts, metrics)
    manifest = {
        "context_length": cfg.context_length,
        "positions_per_context": positions,
        "bos_token_id": bos,
        "separator_token_id": sep,
        "seed": cfg.seed,
        "sources": [
            {"key": s.key, "kind": s.kind, "name": s.name, "domain": s.domain, "weight": s.weight,
             **provenance(s)} for s in cfg.sources
        ],
        "files": {p.name: sha256_file(p) for p in sorted(out_dir.glob("*.npy"))},
        "special_tokens_in_text": "encoded as text (split_special_tokens)",
        "text_counts": counted,
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return metrics


def _input_counts(skips: SkipCounter, text_counts: Counter, metrics: dict[str, Any]) -> dict[str, int]:
    """Skipped documents and the invisible characters of the text taken, into ``metrics``, logged.
    The text counts are over the whole text of every document taken (a cut document's tail too)."""
    metrics["skipped.total"] = int(sum(skips.values()))
    for reason, count in sorted(skips.items()):
        metrics[f"skipped.{reason}"] = int(count)
    if skips:
        log.warning("skipped %d documents: %s", sum(skips.values()), dict(skips))
    counted = {name: int(text_counts[name]) for name in (*PATTERNS, "special_token_strings")}
    metrics.update({f"text.{name}": count for name, count in counted.items()})
    if any(counted.values()):
        log.warning("the corpus text holds %s (kept as text; special-token strings encoded as ordinary "
                    "tokens, not as special ids)", {k: v for k, v in counted.items() if v})
    return counted


@dataclass(frozen=True)
class CorpusSplit:
    """Read side of the corpus stage's output for one split (memory-mapped)."""

    contexts: np.ndarray
    doc_ids: np.ndarray
    manifest: dict[str, Any]

    @classmethod
    def open(cls, corpus_dir: Path, split: str) -> "CorpusSplit":
        manifest_path = corpus_dir / "manifest.json"
        if not manifest_path.is_file():
            raise CorpusError(f"{corpus_dir}: no manifest.json; run the corpus stage first")
        manifest = json.loads(manifest_path.read_text())
        return cls(
            contexts=np.load(corpus_dir / f"{split}_contexts.npy", mmap_mode="r"),
            doc_ids=np.load(corpus_dir / f"{split}_doc_ids.npy", mmap_mode="r"),
            manifest=manifest,
        )


def read_documents(corpus_dir: Path) -> list[dict[str, Any]]:
    with open(corpus_dir / "documents.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def row_domains(doc_ids: np.ndarray, corpus_dir: Path, where: Any) -> tuple[np.ndarray, list[str]]:
    """The domain (wiki, code, ...) of every row whose document id is in ``doc_ids``, as codes into
    a sorted list of names. A row naming a document the corpus does not list means the store
    ``where`` is out of step with the corpus: a StoreError saying what to re-run."""
    from saeatlas.errors import StoreError

    docs = read_documents(corpus_dir)
    names = sorted({d["domain"] for d in docs})
    code = {name: i for i, name in enumerate(names)}
    doc_ids = np.asarray(doc_ids)
    domain_of_doc = np.full(max(int(d["doc_id"]) for d in docs) + 1, -1, dtype=np.int64)
    for d in docs:
        domain_of_doc[int(d["doc_id"])] = code[d["domain"]]
    known = (doc_ids >= 0) & (doc_ids < domain_of_doc.size)
    domains = np.where(known, domain_of_doc[np.where(known, doc_ids, 0)], -1)
    if (domains < 0).any():
        raise StoreError(f"{where}: names documents the corpus does not list; re-run the corpus and "
                         "activations stages")
    return domains, names
