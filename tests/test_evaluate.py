"""Evaluation formulas on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saeatlas.evaluate import _Moments, density_histogram


def test_streamed_fvu_equals_the_centred_formula() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=g) + 5.0  # a large mean: an uncentred FVU would be far off
    x_hat = x + 0.3 * torch.randn(1000, 8, generator=g)
    m = _Moments()
    for chunk in range(0, 1000, 128):
        m.add(x[chunk:chunk + 128], x_hat[chunk:chunk + 128])
    expected = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert m.fvu() == pytest.approx(expected, rel=1e-6)  # expected is float32
    assert m.fvu() == pytest.approx(0.09, abs=0.01)  # noise variance 0.09 over unit variance


def test_density_histogram_counts_every_alive_latent_once() -> None:
    counts = np.array([0, 0, 1, 10, 100, 1000, 10000])
    rows = density_histogram(counts, n_tokens=10000)
    assert sum(r["latents"] for r in rows) == 5  # the two dead latents are not in it
    assert rows[0]["log10_density"] == -4.0  # the rarest measurable density, 1/n_tokens
    by_edge = {r["log10_density"]: r["latents"] for r in rows}
    assert by_edge[-4.0] == 1 and by_edge[-1.0] == 1 and by_edge[-0.25] == 1  # density 1 in the last bin
