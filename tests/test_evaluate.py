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


class _RowsStore:
    """The three things ``reconstruction_metrics`` reads of a store, over rows held in memory."""

    def __init__(self, x: torch.Tensor):
        self.x, self.n_tokens = x, x.shape[0]

    def iter_sequential(self, batch_size: int, normalise: bool = False, device: object = None):
        for i in range(0, self.n_tokens, batch_size):
            yield self.x[i:i + batch_size]

    def ordinary_mask(self, start: int, stop: int) -> np.ndarray:
        return np.ones(stop - start, dtype=bool)


def test_a_matryoshka_sae_reports_each_nested_prefix_as_a_dictionary() -> None:
    """prefix<m>.fvu is the FVU of the code kept to latents below m (dense recomputation);
    prefix<m>.l0 counts only those latents; a TopK SAE has no prefix keys."""
    from saeatlas.evaluate import reconstruction_metrics
    from saeatlas.sae.model import build

    torch.manual_seed(0)
    sae = build("matryoshka", 8, 64, k=6, prefixes=[4, 16])
    with torch.no_grad():
        sae.threshold.fill_(0.05)
    x = torch.randn(300, 8)
    metrics, _ = reconstruction_metrics(sae, _RowsStore(x), 64, 0.1, torch.device("cpu"), progress=False)
    with torch.no_grad():
        dense = sae.encode(x).dense(64)
    for m in (4, 16):
        x_hat = dense[:, :m] @ sae.decoder[:m].detach() + sae.b_dec.detach()
        expected = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        assert metrics[f"prefix{m}.fvu"] == pytest.approx(expected, rel=1e-4)
        assert metrics[f"prefix{m}.l0"] == pytest.approx(float((dense[:, :m] > 0).sum(1).float().mean()), rel=1e-6)
    assert len({metrics["prefix4.fvu"], metrics["prefix16.fvu"], metrics["fvu"]}) == 3
    assert metrics["prefix4.l0"] < metrics["prefix16.l0"] < metrics["l0"]
    topk, _ = reconstruction_metrics(build("topk", 8, 64, k=6), _RowsStore(x), 64, 0.1, torch.device("cpu"),
                                     progress=False)
    assert not any(key.startswith("prefix") for key in topk)
