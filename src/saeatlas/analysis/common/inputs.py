"""Checks shared by the analyses' input dataclasses, so every analysis refuses the same bad input
with the same message."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def check_decoders(sizes: Sequence[int], decoders: Mapping[int, np.ndarray]) -> int:
    """One decoder ``[size, d]`` per size, sizes strictly ascending, one common width d ≥ 2, all
    values finite. Returns d."""
    sizes = tuple(int(s) for s in sizes)
    if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"sizes must be one or more strictly ascending dictionary sizes, got {sizes}")
    d: int | None = None
    for s in sizes:
        if s not in decoders:
            raise ValueError(f"size {s}: no decoder given (have sizes {sorted(decoders)})")
        dec = np.asarray(decoders[s])
        if dec.ndim != 2 or dec.shape[0] != s:
            raise ValueError(f"size {s}: decoder shape {dec.shape}, expected [{s}, d]")
        d = dec.shape[1] if d is None else d
        if dec.shape[1] != d or d < 2:
            raise ValueError(f"size {s}: decoder width {dec.shape[1]} differs from the first size's {d} (or is < 2)")
        if not np.isfinite(dec).all():
            raise ValueError(f"size {s}: decoder has non-finite values")
    assert d is not None
    return int(d)
