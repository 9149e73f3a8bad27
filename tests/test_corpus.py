"""Corpus stage: real embedded text, exact budgets, clean splits, and loud failures on bad input."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saeatlas import config
from saeatlas.config import BUILTIN_SOURCES
from saeatlas.corpus import CorpusSplit, build_corpus, read_documents
from saeatlas.errors import CorpusError
from saeatlas.sources import SkipCounter, iter_documents, strip_markdown

from conftest import REPO


def corpus_params(sources: list[dict], train: int = 2000, eval_: int = 500, ctx: int = 32, **kw) -> config.CorpusParams:
    raw = config.validate({"study": {}, "model": {}, "activations": {}, "sae": {"batch_size": 1}, "tracking": {},
                           "evaluate": {"ce_contexts": 1},
                           "corpus": {"sources": sources, "train_tokens": train, "eval_tokens": eval_,
                                      "context_length": ctx, **kw}})
    return config.from_mapping(raw).corpus


def one_source(kind: str, **fields) -> config.SourceParams:
    return corpus_params([{"kind": kind, "weight": 1, "domain": "test", **fields}]).sources[0]


# --------------------------------------------------------------------------------------
# Built-in sources: installed, real, labelled
# --------------------------------------------------------------------------------------

EXPECTED_TEXT = {
    "wiki": ("Paris", 9000),
    "shakespeare": ("Macbeth", 700),
    "bbc_news": ("said", 2200),
    "chatterbot": ("you", 100),
    "python_stdlib": ("def ", 300),
    "pydoc_topics": ("statement", 50),
}


@pytest.mark.parametrize("name", sorted(BUILTIN_SOURCES))
def test_builtin_sources_hold_real_text(name: str) -> None:
    src = corpus_params([{"kind": "builtin", "name": name, "weight": 1}]).sources[0]
    skips = SkipCounter()
    docs = list(iter_documents(src, 20, skips))
    word, min_docs = EXPECTED_TEXT[name]
    assert len(docs) >= min_docs, f"{name}: only {len(docs)} documents"
    assert all(d.domain == BUILTIN_SOURCES[name] and d.source == name for d in docs)
    text = " ".join(d.text for d in docs)
    assert word in text
    # Real English-like text: mostly letters and spaces, long enough on average.
    letters = sum(ch.isalpha() or ch.isspace() for ch in text[:200_000]) / min(len(text), 200_000)
    assert letters > 0.75, f"{name}: {letters:.2f} letters/space"
    assert np.mean([len(d.text) for d in docs]) > 60


def test_shakespeare_markdown_is_stripped() -> None:
    src = corpus_params([{"kind": "builtin", "name": "shakespeare", "weight": 1}]).sources[0]
    doc = next(d for d in iter_documents(src, 20, SkipCounter()) if d.title.startswith("Macbeth"))
    assert "**" not in doc.text and not doc.text.startswith("#")
    assert strip_markdown("## SCENE I.\n\n**First Witch**  \nWhen shall we _three_ meet") == \
        "SCENE I.\n\nFirst Witch\nWhen shall we three meet"


def test_bbc_news_non_utf8_file_is_counted_not_dropped_silently() -> None:
    src = corpus_params([{"kind": "builtin", "name": "bbc_news", "weight": 1}]).sources[0]
    skips = SkipCounter()
    docs = list(iter_documents(src, 20, skips))
    assert skips["not_utf8"] == 1  # sports/199.txt is Latin-1 in the shipped package
    articles = {re.sub(r" \[\d+/\d+\]$", "", d.title) for d in docs}  # long ones are segmented
    assert len(articles) == 2225 - 1


# --------------------------------------------------------------------------------------
# Building the corpus: budgets, mix, split, determinism, round trip
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer):
    cfg = config.load(REPO / "params/smoke.yaml").corpus
    out = tmp_path_factory.mktemp("corpus")
    metrics = build_corpus(cfg, tokenizer, out)
    return cfg, out, metrics


def test_budget_is_met_exactly_in_whole_contexts(built) -> None:
    cfg, out, metrics = built
    for split, budget in (("train", cfg.train_tokens), ("eval", cfg.eval_tokens)):
        data = CorpusSplit.open(out, split)
        n = budget // cfg.positions_per_context
        assert data.contexts.shape == (n, cfg.context_length)
        assert data.contexts.dtype == np.int32 and data.doc_ids.dtype == np.int32
        assert metrics[f"{split}.tokens"] == n * cfg.positions_per_context
        assert (data.contexts[:, 0] == data.manifest["bos_token_id"]).all()
        assert (data.doc_ids[:, 0] == -1).all() and (data.doc_ids[:, 1:] >= 0).all()


def test_domain_mix_follows_the_weights(built) -> None:
    cfg, out, metrics = built
    total = sum(s.weight for s in cfg.sources)
    for src in cfg.sources:
        for split in ("train", "eval"):
            got = metrics[f"{split}.domain_fraction.{src.domain}"]
            assert abs(got - src.weight / total) < 0.01, (split, src.domain, got)


def test_train_and_eval_share_no_document(built) -> None:
    _, out, _ = built
    docs = read_documents(out)
    train = {d["doc_id"] for d in docs if d["split"] == "train"}
    eval_ = {d["doc_id"] for d in docs if d["split"] == "eval"}
    assert set(np.unique(CorpusSplit.open(out, "train").doc_ids[:, 1:])) <= train
    assert set(np.unique(CorpusSplit.open(out, "eval").doc_ids[:, 1:])) <= eval_
    titles = lambda ids: {(docs[i]["source"], docs[i]["title"]) for i in ids}  # noqa: E731
    assert not titles(train) & titles(eval_)


def test_token_ids_decode_back_to_the_source_text(built, tokenizer) -> None:
    cfg, out, _ = built
    docs = read_documents(out)
    data = CorpusSplit.open(out, "train")
    sources = {s.name: s for s in cfg.sources}
    texts = {}
    for name in {d["source"] for d in docs}:
        texts[name] = {doc.title: doc.text for doc in iter_documents(sources[name], cfg.min_chars, SkipCounter())}
    sep = data.manifest["separator_token_id"]
    checked = 0
    flat_ids, flat_owner = data.contexts[:, 1:].ravel(), data.doc_ids[:, 1:].ravel()
    for d in docs:
        if d["split"] != "train" or d["truncated_from"] is not None:
            continue
        ids = flat_ids[flat_owner == d["doc_id"]]
        if len(ids) < d["tokens"] + 1:  # the document runs past the last context (tail dropped)
            continue
        assert ids[-1] == sep
        assert tokenizer.decode(ids[:-1].tolist()) == texts[d["source"]][d["title"]]
        checked += 1
    assert checked >= 10


def test_same_seed_same_bytes_other_seed_other_order(built, tokenizer, tmp_path) -> None:
    cfg, out, _ = built
    again = tmp_path / "again"
    build_corpus(cfg, tokenizer, again)
    for name in ("train_contexts.npy", "eval_contexts.npy", "train_doc_ids.npy", "documents.jsonl", "manifest.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = tmp_path / "other"
    build_corpus(replace(cfg, seed=cfg.seed + 1), tokenizer, other)
    assert (other / "train_contexts.npy").read_bytes() != (out / "train_contexts.npy").read_bytes()


# --------------------------------------------------------------------------------------
# User sources and bad input
# --------------------------------------------------------------------------------------

LOREM = ("The quick brown fox jumps over the lazy dog while the committee reviews the budget "
         "for the coming year and the river slowly rises after a week of rain. ")


def test_local_text_jsonl_and_parquet_sources(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "notes").mkdir()
    for i in range(5):
        (tmp_path / "notes" / f"n{i}.txt").write_text(f"Note {i}. " + LOREM * 3)
    with open(tmp_path / "d.jsonl", "w") as fh:
        for i in range(5):
            fh.write(json.dumps({"body": f"Record {i}. " + LOREM * 3, "name": f"r{i}"}) + "\n")
    pq.write_table(pa.table({"text": [f"Row {i}. " + LOREM * 3 for i in range(5)]}), tmp_path / "t.parquet")
    cfg = corpus_params([
        {"kind": "text", "path": str(tmp_path / "notes"), "domain": "notes", "weight": 1},
        {"kind": "jsonl", "path": str(tmp_path / "d.jsonl"), "text_field": "body", "title_field": "name",
         "domain": "records", "weight": 1},
        {"kind": "parquet", "path": str(tmp_path / "*.parquet"), "domain": "rows", "weight": 1},
    ], train=300, eval_=60)
    metrics = build_corpus(cfg, tokenizer, tmp_path / "out")
    assert {k.split(".")[-1] for k in metrics if ".domain_fraction." in k} == {"notes", "records", "rows"}
    titles = {d["title"] for d in read_documents(tmp_path / "out")}
    assert titles & {f"r{i}" for i in range(5)}


def test_missing_path_names_the_source() -> None:
    with pytest.raises(CorpusError, match=r"corpus.sources\[0\].path: '/no/such/dir' does not exist"):
        list(iter_documents(one_source("text", path="/no/such/dir"), 1, SkipCounter()))


def test_empty_corpus_is_an_error(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "a.txt").write_text("tiny")
    cfg = corpus_params([{"kind": "text", "path": str(tmp_path / "a.txt"), "domain": "x", "weight": 1}])
    with pytest.raises(CorpusError, match=r"corpus.sources\[0\]: source .* has no usable documents.*too_short"):
        build_corpus(cfg, tokenizer, tmp_path / "out")


def test_undecodable_and_malformed_input_is_counted(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text(LOREM)
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait " * 10)
    skips = SkipCounter()
    docs = list(iter_documents(one_source("text", path=str(tmp_path / "*.txt")), 1, skips))
    assert len(docs) == 1 and skips == {"not_utf8": 1}

    lines = [json.dumps({"text": LOREM}), "{not json", json.dumps([1, 2]), json.dumps({"other": 1})]
    (tmp_path / "d.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    skips = SkipCounter()
    docs = list(iter_documents(one_source("jsonl", path=str(tmp_path / "d.jsonl")), 1, skips))
    assert len(docs) == 1
    assert skips == {"bad_json": 1, "not_object": 1, "no_text": 1, "not_utf8": 1}


def test_parquet_without_the_text_column_is_an_error(tmp_path: Path) -> None:
    pq.write_table(pa.table({"body": ["x" * 50]}), tmp_path / "t.parquet")
    with pytest.raises(CorpusError, match=r"column 'text' not in t.parquet \(columns: body\)"):
        list(iter_documents(one_source("parquet", path=str(tmp_path / "t.parquet")), 1, SkipCounter()))


def test_source_smaller_than_its_share_is_an_error(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "a.txt").write_text(LOREM * 2)
    cfg = corpus_params([{"kind": "text", "path": str(tmp_path / "a.txt"), "domain": "x", "weight": 1}],
                        train=5000, eval_=500)
    with pytest.raises(CorpusError, match=r"corpus.sources\[0\]: source .* ran out of text after \d+ tokens, but its weight asks for 5,\d{3}"):
        build_corpus(cfg, tokenizer, tmp_path / "out")


def test_budget_smaller_than_one_context_is_an_error(tokenizer, tmp_path: Path) -> None:
    cfg = corpus_params([{"kind": "builtin", "name": "wiki", "weight": 1}], train=10, ctx=64)
    with pytest.raises(CorpusError, match="corpus.train_tokens: must hold at least one context of 63 tokens"):
        build_corpus(cfg, tokenizer, tmp_path)


def test_unknown_separator_token_is_an_error(tokenizer, tmp_path: Path) -> None:
    cfg = corpus_params([{"kind": "builtin", "name": "wiki", "weight": 1}], separator_token="<|nope|>")
    with pytest.raises(CorpusError, match="corpus.separator_token"):
        build_corpus(cfg, tokenizer, tmp_path)


def test_huggingface_source_without_datasets_package_says_how_to_fix() -> None:
    try:
        import datasets  # noqa: F401
        pytest.skip("'datasets' is installed; the missing-package message cannot be shown")
    except ImportError:
        pass
    src = corpus_params([{"kind": "huggingface", "dataset": "org/set", "domain": "web", "weight": 1}]).sources[0]
    with pytest.raises(CorpusError, match=r"pip install 'saeatlas\[hf\]'"):
        list(iter_documents(src, 1, SkipCounter()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["params.yaml", "params/paper.yaml"])
def test_committed_budgets_fit_the_embedded_corpus(name: str, tokenizer, builtin_token_counts) -> None:
    """Every source holds the tokens its weight asks for, so the default and paper studies run."""
    from saeatlas.corpus import source_quotas

    cfg = config.load(REPO / name).corpus
    pos = cfg.positions_per_context
    quotas = source_quotas(cfg, cfg.train_tokens // pos * pos, cfg.eval_tokens // pos * pos)
    for src, quota in zip(cfg.sources, quotas):
        have = builtin_token_counts[src.name]
        assert quota["train"] + quota["eval"] <= have, (src.name, quota, have)


@pytest.fixture(scope="module")
def builtin_token_counts(tokenizer) -> dict[str, int]:
    """Tokens (plus one separator per document) each built-in source can give."""
    counts = {}
    for name in BUILTIN_SOURCES:
        src = corpus_params([{"kind": "builtin", "name": name, "weight": 1}]).sources[0]
        texts = [d.text for d in iter_documents(src, 20, SkipCounter())]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        counts[name] = sum(len(i) + 1 for i in ids)
    return counts


def test_long_texts_become_paragraph_bounded_segments() -> None:
    from saeatlas.sources import segments

    paras = [f"Paragraph {i}. " + "word " * 300 for i in range(30)]  # ~1.5k chars each
    text = "\n\n".join(paras)
    pieces = segments(text, max_chars=8000)
    assert len(pieces) > 1 and all(len(p) <= 8000 for p in pieces)
    assert "\n\n".join(pieces) == text  # nothing lost, cut only at paragraph breaks
    assert segments("short", 8000) == ["short"]
    hard = segments("x" * 20000, max_chars=8000)
    assert [len(p) for p in hard] == [8000, 8000, 4000]


def test_a_single_long_file_feeds_both_splits(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "novel.txt").write_text("\n\n".join(f"Chapter {i}. " + LOREM * 20 for i in range(40)))
    cfg = corpus_params([{"kind": "text", "path": str(tmp_path / "novel.txt"), "domain": "books", "weight": 1}],
                        train=20000, eval_=2000)
    metrics = build_corpus(cfg, tokenizer, tmp_path / "out")
    assert metrics["train.documents"] > 1 and metrics["eval.documents"] >= 1
    titles = {d["split"]: set() for d in read_documents(tmp_path / "out")}
    for d in read_documents(tmp_path / "out"):
        titles[d["split"]].add(d["title"])
    assert not titles["train"] & titles["eval"]
    assert all(t.startswith("novel.txt [") for t in titles["train"])


def test_shakespeare_prologues_are_kept() -> None:
    src = corpus_params([{"kind": "builtin", "name": "shakespeare", "weight": 1}]).sources[0]
    docs = {d.title: d.text for d in iter_documents(src, 20, SkipCounter())}
    prologue = next(text for title, text in docs.items() if title.startswith("Romeo And Juliet, front matter"))
    assert "Two households" in prologue


def test_special_token_strings_in_text_stay_text_and_invisible_characters_are_counted(
        tmp_path: Path, tokenizer) -> None:
    """A document containing the literal strings of the separator and BOS tokens must not produce
    those ids (the pipeline reads them as document boundaries and flags massive activations by
    them); they are encoded as ordinary text. NUL, other controls and bidi overrides are kept and
    counted in the metrics and the corpus manifest."""
    hostile = ("Chat log: <|endoftext|> then <|im_start|>user hello<|im_end|> and a NUL \x00 here, "
               "a bell \x07, an override \u202e. ")
    (tmp_path / "chat.txt").write_text("\n\n".join(f"Part {i}. " + hostile + LOREM * 2 for i in range(30)))
    cfg = corpus_params([{"kind": "text", "path": str(tmp_path / "chat.txt"), "domain": "chat", "weight": 1}],
                        train=1000, eval_=300)
    metrics = build_corpus(cfg, tokenizer, tmp_path / "out")
    sep, bos = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>"])
    documents = read_documents(tmp_path / "out")
    for split in ("train", "eval"):
        contexts = np.asarray(CorpusSplit.open(tmp_path / "out", split).contexts)
        # BOS only in column 0; one separator at most between two documents (not one per string).
        assert (contexts[:, 0] == bos).all() and not (contexts[:, 1:] == bos).any()
        assert (contexts == sep).sum() <= sum(d["split"] == split for d in documents)
    n_parts = len(documents)
    assert metrics["text.nul_chars"] >= n_parts and metrics["text.control_chars"] >= n_parts
    assert metrics["text.bidi_controls"] >= n_parts and metrics["text.special_token_strings"] >= 3 * n_parts
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["text_counts"]["nul_chars"] == metrics["text.nul_chars"]
    # The strings themselves decode back from the stored ids, character for character.
    ids = np.asarray(CorpusSplit.open(tmp_path / "out", "train").contexts)[:, 1:].ravel()
    decoded = tokenizer.decode(ids[ids != sep].tolist())
    assert "<|endoftext|>" in decoded and "<|im_start|>user" in decoded and "\x00" in decoded
