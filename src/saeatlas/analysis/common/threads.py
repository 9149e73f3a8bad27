"""The one way an analysis limits BLAS, OpenMP and torch threads.

Why limit at all: on a small or shared machine (the default study runs on 2 cores, stages side
by side) BLAS threads spin-wait on each other, and on small operands hand-offs cost more than
they save. Measured at load ≈ 4 on 2 cores: a 576 x 576 ``eigvalsh`` took 5 s with two threads
and 0.05 s with one; a 240 x 240 ``eigh`` 0.7 s on two contended threads, 0.02 s on one.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

_CONTROLLER = None
_SCANNED_AT = -1  # len(sys.modules) when the controller scanned the loaded libraries


@contextlib.contextmanager
def limit_threads(n: int | None = 1, user_api: str | None = None, torch_too: bool = False) -> Iterator[None]:
    """Inside the block, BLAS (``user_api="blas"``) or every pool (``None``: BLAS and OpenMP) runs
    on ``n`` threads, and torch too with ``torch_too``. ``n=None`` changes nothing. The
    controller (a scan of the loaded libraries, ~5 ms) is rebuilt only when modules were imported
    since the last scan: a library loaded later (scipy.linalg's OpenBLAS, scikit-learn's OpenMP)
    would otherwise escape the limit."""
    if n is None:
        yield
        return
    global _CONTROLLER, _SCANNED_AT
    import sys

    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None or _SCANNED_AT != len(sys.modules):
        _CONTROLLER, _SCANNED_AT = ThreadpoolController(), len(sys.modules)
    previous = None
    if torch_too:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        with _CONTROLLER.limit(limits=n, user_api=user_api):
            yield
    finally:
        if previous is not None:
            import torch

            torch.set_num_threads(previous)
