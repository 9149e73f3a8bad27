"""Input helpers of the analysis stages, fed bad input: the error must say what to re-run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from saeatlas.errors import StoreError
from saeatlas.stages import _row_domains


def fake_store(path: Path, doc_ids: list[int]) -> SimpleNamespace:
    return SimpleNamespace(path=path, doc_ids=lambda: np.array(doc_ids))


def write_documents(root: Path, domains: list[str]) -> None:
    corpus = root / "results/corpus"
    corpus.mkdir(parents=True)
    lines = [json.dumps({"doc_id": i, "domain": d}) for i, d in enumerate(domains)]
    (corpus / "documents.jsonl").write_text("\n".join(lines) + "\n")


def test_row_domains_map_each_row_through_its_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_documents(tmp_path, ["wiki", "code", "wiki"])
    domains, names = _row_domains(fake_store(tmp_path, [2, 1, 1, 0]))
    assert names == ["code", "wiki"] and domains.tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize("doc_ids", [[0, 3], [-1, 0]])
def test_row_domains_refuse_a_store_out_of_step_with_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                doc_ids: list[int]) -> None:
    monkeypatch.chdir(tmp_path)
    write_documents(tmp_path, ["wiki", "code", "wiki"])
    with pytest.raises(StoreError, match="re-run the corpus and activations stages"):
        _row_domains(fake_store(tmp_path / "store", doc_ids))
