"""``python -m saeatlas verify [DIR]``: check a results tree against what its writers recorded.

Every stage records checksums as it publishes: the activation stores and code stores list the
sha256 of every file in their manifests, the corpus lists its arrays', the model its weights'.
Stages check the stores they read once per process; this command checks everything at once
(after a copy, a restore from a DVC remote, a disk scare), and also that every SAE folder loads
(finite weights, a coherent ``cfg.json``) and that every JSON file is strict JSON (no ``NaN``).
Work in progress (``*.partial``) is left out: it is not a result yet.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from saeatlas.errors import SaeAtlasError, StoreError

log = logging.getLogger(__name__)

Check = Callable[[Path], None]


def _activation_store(manifest: Path) -> None:
    from saeatlas.activations import ActivationStore

    ActivationStore.open(manifest.parent, verify=True)


def _code_store(manifest: Path) -> None:
    from saeatlas.codes import SparseCodes

    SparseCodes.open(manifest.parent, verify=True)


def _listed_files(manifest: Path) -> None:
    """A manifest with a ``files: {name: sha256}`` table (the corpus): every file whole and equal."""
    from saeatlas.artifacts import check_npy, sha256_file

    listed = json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
    for name, sha in sorted(listed.items()):
        path = manifest.parent / name
        if path.suffix == ".npy":
            check_npy(path)
        elif not path.is_file():
            raise StoreError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != sha:
            raise StoreError(f"{path}: checksum does not match {manifest.name}")


def _model(info: Path) -> None:
    from saeatlas.lm import _weights_sha256

    recorded = json.loads(info.read_text(encoding="utf-8")).get("weights_sha256")
    if recorded and _weights_sha256(info.parent) != recorded:
        raise StoreError(f"{info.parent}: the weights' checksum does not match {info.name}")


def _sae(cfg: Path) -> None:
    from saeatlas.sae.io import load_sae

    load_sae(cfg.parent)


def _strict_json(path: Path) -> None:
    def refuse(constant: str) -> None:
        raise StoreError(f"{path}: holds {constant}, which is not JSON")

    try:
        json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: not valid JSON ({exc})") from exc


def _checks(root: Path) -> list[tuple[str, Path, Check]]:
    """(what, file, check) for everything under ``root`` that records how to check it."""
    from saeatlas.activations import FORMAT as STORE_FORMAT
    from saeatlas.codes import MANIFEST as CODES_MANIFEST
    from saeatlas.lm import MODEL_INFO
    from saeatlas.sae.io import CONFIG_FILE, WEIGHTS_FILE

    found: list[tuple[str, Path, Check]] = []
    for path in sorted(root.rglob("*.json")):
        if any(part.endswith((".partial", ".old")) for part in path.relative_to(root).parts):
            continue
        found.append(("json", path, _strict_json))
        if path.name == "manifest.json":
            try:
                fmt = json.loads(path.read_text(encoding="utf-8")).get("format")
            except (ValueError, UnicodeDecodeError, AttributeError):
                continue  # reported by the strict-JSON check
            found.append(("activation store", path, _activation_store) if fmt == STORE_FORMAT
                         else ("checksummed files", path, _listed_files))
        elif path.name == CODES_MANIFEST:
            found.append(("code store", path, _code_store))
        elif path.name == MODEL_INFO:
            found.append(("model weights", path, _model))
        elif path.name == CONFIG_FILE and (path.parent / WEIGHTS_FILE).is_file():
            found.append(("SAE", path, _sae))
    return found


def verify_tree(root: Path) -> dict[str, int]:
    """Check everything under ``root``; log each problem; raise StoreError if there was any.
    Returns how many things of each kind were checked."""
    from saeatlas.progress import bar as progress_bar

    if not root.is_dir():
        raise StoreError(f"{root}: no such results directory")
    checks = _checks(root)
    problems: list[str] = []
    counts: dict[str, int] = {}
    for what, path, check in progress_bar(checks, desc="verify", unit="check"):
        counts[what] = counts.get(what, 0) + 1
        try:
            check(path)
        except SaeAtlasError as exc:
            problems.append(str(exc))
            log.error("%s: %s", what, exc)
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    if problems:
        raise StoreError(f"{root}: {len(problems)} problem(s) in {summary}; first: {problems[0]}")
    if not checks:
        raise StoreError(f"{root}: nothing to verify (no results written yet?)")
    log.info("%s: all good (%s)", root, summary)
    return counts
