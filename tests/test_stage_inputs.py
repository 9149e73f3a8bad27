"""Input helpers of the analysis stages, fed bad input: the error must say what to re-run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from saeatlas.corpus import row_domains
from saeatlas.errors import StoreError


def write_documents(corpus: Path, domains: list[str]) -> Path:
    corpus.mkdir(parents=True)
    lines = [json.dumps({"doc_id": i, "domain": d}) for i, d in enumerate(domains)]
    (corpus / "documents.jsonl").write_text("\n".join(lines) + "\n")
    return corpus


def test_row_domains_map_each_row_through_its_document(tmp_path: Path) -> None:
    corpus = write_documents(tmp_path / "corpus", ["wiki", "code", "wiki"])
    domains, names = row_domains(np.array([2, 1, 1, 0]), corpus, tmp_path / "store")
    assert names == ["code", "wiki"] and domains.tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize("doc_ids", [[0, 3], [-1, 0]])
def test_row_domains_refuse_a_store_out_of_step_with_the_corpus(tmp_path: Path, doc_ids: list[int]) -> None:
    corpus = write_documents(tmp_path / "corpus", ["wiki", "code", "wiki"])
    with pytest.raises(StoreError, match=r"store: names documents.*re-run the corpus and activations stages"):
        row_domains(np.array(doc_ids), corpus, tmp_path / "store")
