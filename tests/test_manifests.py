"""The two on-disk stores (activations, codes) refuse a damaged or foreign manifest with a
StoreError naming the file (the CLI prints it and exits 2), never a JSON traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saeatlas.activations import MANIFEST as STORE_MANIFEST, ActivationStore
from saeatlas.codes import MANIFEST as CODES_MANIFEST, SparseCodes
from saeatlas.errors import StoreError

OPENERS = [(ActivationStore.open, STORE_MANIFEST), (SparseCodes.open, CODES_MANIFEST)]


@pytest.mark.parametrize("open_, name", OPENERS)
@pytest.mark.parametrize("text, message", [
    (None, "no {name}"),
    ('{"format": ', "not valid JSON"),
    ("[1, 2]", "format 'list'"),
    ('{"format": "something/9"}', "format 'something/9'"),
])
def test_a_damaged_manifest_is_a_store_error_naming_the_file(tmp_path: Path, open_, name: str, text: str | None,
                                                             message: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(StoreError, match=message.format(name=name)) as err:
        open_(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_a_good_format_with_missing_files_is_still_refused(tmp_path: Path) -> None:
    from saeatlas.activations import FORMAT

    (tmp_path / STORE_MANIFEST).write_text(json.dumps({"format": FORMAT, "complete": False, "shards": []}))
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore.open(tmp_path)
