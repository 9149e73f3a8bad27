"""Progress bars for the loops that take seconds to minutes.

Whether bars show is a display choice, not a study parameter: changing it must not re-run a
stage, so it is read from the environment (``SAEATLAS_PROGRESS=0`` hides them; the CLI's
``--no-progress`` sets it), never from params.yaml.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
ENV = "SAEATLAS_PROGRESS"


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def bar(iterable: Iterable[T] | None = None, desc: str = "", show: bool = True, **kwargs: object) -> Any:
    """``tqdm`` (over ``iterable``, or a manual bar with ``total=``) when bars are enabled here
    and by the environment; ``show=False`` hides it (e.g. inside tests). One refresh every 5 s
    at most, so a bar in a log file stays readable."""
    options = {"mininterval": 5, "leave": False, **kwargs}
    return tqdm(iterable, desc=desc, disable=not (show and enabled()), **options)  # type: ignore[arg-type]
