"""The galaxy analysis of one layer: every size's decoder cloud and the activation sample, each
beside an isotropic Gaussian cloud of the same n and d (methods: the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saeatlas.analysis.common.inputs import check_decoders
from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.progress import bar
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.analysis.galaxy.clouds import (ACTIVATIONS, ACTIVATIONS_NULL, DECODER, NULL, GocNulls, Pair,
                                             References, analyse_cloud, gaussian_null_cloud, prepared,
                                             published_entropy, published_entropy_null)
from saeatlas.analysis.galaxy.config import GalaxyConfig
from saeatlas.analysis.galaxy.figures import spectrum_figure, spectrum_plotly
from saeatlas.analysis.galaxy.results import fits_table, metrics, spectra_table, summary_document


@dataclass
class GalaxyInputs:
    """One layer: the decoders of every size and a sample of that layer's activation rows."""

    layer: int
    sizes: tuple[int, ...]
    decoders: dict[int, np.ndarray]  # size -> [size, d], rows of any norm
    activations: np.ndarray  # [M, d] sample of activation rows (any dtype; a memmap is fine)

    def validate(self, config: GalaxyConfig) -> int:
        """Check shapes against each other and against the config; return d."""
        d = check_decoders(self.sizes, self.decoders)
        act = self.activations
        if act.ndim != 2 or act.shape[1] != d:
            raise ValueError(f"activations shape {act.shape}, expected [M, {d}]")
        for key in ("rank_max", "published_rank_max"):
            if getattr(config, key) > d:
                raise ValueError(f"galaxy.{key} = {getattr(config, key)} exceeds the width d = {d}")
        if config.goc_dims > d:
            raise ValueError(f"galaxy.goc_dims = {config.goc_dims} exceeds the width d = {d}")
        if config.entropy_dims >= d:
            raise ValueError(f"galaxy.entropy_dims = {config.entropy_dims} must be < the width d = {d} "
                             "(unit-norm points have no full-dimensional density)")
        return int(d)


def run(config: GalaxyConfig, inputs: GalaxyInputs, *, blas_threads: int | None = 1) -> AnalysisOutput:
    """Spectrum slope and clustering negentropy of every size's decoder cloud, each beside an
    isotropic Gaussian cloud of the same n and d, and of the activation sample.

    Metrics (layer-free names, so layers compare key by key): ``layer``, ``d``;
    ``n<size>.<name>`` and ``activations.<name>``: ``slope``, ``slope_ci_low/high``,
    ``slope_r2``, ``slope_se_fit``, ``slope_bootstrap_shift``, ``slope_estimated``,
    ``negentropy``, ``negentropy_ci_low/high``, ``negentropy_estimated``,
    ``participation_ratio``, and the same for the isotropic null with ``_gaussian`` after the
    quantity (``slope_gaussian``, ``slope_gaussian_ci_low``, ``negentropy_gaussian_ci_high``,
    ``participation_ratio_gaussian`` ...); ``entropy``, ``entropy_closed_form``,
    ``entropy_reference_bias``, ``entropy_dims_variance_fraction``, ``n_points``,
    ``zero_rows``; ``largest.*`` repeats the largest size's headline numbers; ``config.*`` echoes
    the window and entropy settings; ``reference.*`` the published numbers. Tables ``spectra``
    and ``fits``; figure ``galaxy_spectrum``; interactive ``galaxy_spectrum``; document
    ``galaxy_summary``.

    ``blas_threads`` (not a parameter of the analysis: the numbers do not depend on it) caps
    the BLAS and OpenMP threads of the whole run, 1 by default (on shared cores BLAS threads
    spin-wait on each other: the whole real-scale ``run`` took 147 s with two and 46 s with one,
    same numbers); None (or 0) leaves them as they are.
    """
    d = inputs.validate(config)
    with limit_threads(blas_threads or None, None):
        return _run(config, inputs, d)


def _run(config: GalaxyConfig, inputs: GalaxyInputs, d: int) -> AnalysisOutput:
    """The body of ``run``, with the thread cap in place."""
    layer, sizes = int(inputs.layer), tuple(int(s) for s in inputs.sizes)
    references: References = {}  # one bias-cancelling k-NN reference per cloud size n
    nulls: GocNulls = {}  # one published-protocol entropy null per number of points it sees
    pairs = [analyse_size(config, inputs.decoders[s], s, d, references, nulls)
             for s in bar(sizes, desc="galaxy (sizes)")]
    act = analyse_activations(config, inputs.activations, d, references, nulls)
    clouds = [c for pair in [*pairs, act] for c in pair]
    fits = fits_table(layer, clouds)
    return AnalysisOutput(
        metrics=metrics(config, layer, d, sizes, pairs, act),
        tables={"spectra": spectra_table(config, layer, d, pairs, act), "fits": fits},
        figures={"galaxy_spectrum": spectrum_figure(layer, pairs, act, config)},
        interactive={"galaxy_spectrum": spectrum_plotly(layer, pairs, act, config)},
        documents={"galaxy_summary": summary_document(config, layer, d, sizes, fits, clouds)},
    )


def analyse_size(config: GalaxyConfig, decoder: np.ndarray, size: int, d: int, references: References,
                 nulls: GocNulls) -> Pair:
    """One dictionary's decoder cloud and its isotropic Gaussian null of the same n and d."""
    pts, zero = prepared(decoder, config, DECODER, size)
    res = analyse_cloud("decoder", size, pts, zero, config, DECODER, references,
                        published_entropy(pts, config, DECODER))
    null_pts = gaussian_null_cloud(len(pts), d, config, NULL)
    return res, analyse_cloud("gaussian", size, null_pts, 0, config, NULL, references,
                              published_entropy_null(len(pts), d, config, nulls))


def analyse_activations(config: GalaxyConfig, activations: np.ndarray, d: int, references: References,
                        nulls: GocNulls) -> Pair:
    """The activation sample's cloud, processed like a decoder's, and its isotropic null."""
    pts, zero = prepared(activations, config, ACTIVATIONS, len(activations))
    act = analyse_cloud("activations", 0, pts, zero, config, ACTIVATIONS, references,
                        published_entropy(pts, config, ACTIVATIONS))
    null_pts = gaussian_null_cloud(len(pts), d, config, ACTIVATIONS_NULL)
    return act, analyse_cloud("activations_gaussian", 0, null_pts, 0, config, ACTIVATIONS_NULL, references,
                              published_entropy_null(len(pts), d, config, nulls))
