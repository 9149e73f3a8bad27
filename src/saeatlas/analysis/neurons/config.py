"""Settings of the neurons analysis (params.yaml section ``neurons:``): the only home of their
defaults and bounds (the schema section is generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param, seed


@dataclass(frozen=True)
class NeuronsConfig(AnalysisConfig, section="neurons",
                    summary="Features vs MLP neurons: each feature's largest Pearson correlation with any neuron, "
                    "vs random residual directions and rotated neurons (analysis/neurons/)."):
    """Settings of the neurons analysis (params.yaml section ``neurons:``, same key names)."""

    # Templeton et al. 2024 (Scaling Monosemanticity) count features whose most-correlated
    # neuron has r <= 0.3 (82% of theirs); the same cut makes our fraction comparable.
    threshold: float = param(0.3, "A feature counts as 'not a neuron' when its largest |Pearson r| with any "
                                  "neuron is at most this.", exclusiveMinimum=0, exclusiveMaximum=1)
    # Directions of each null (random unit directions in the residual stream; random
    # orthonormal directions in neuron space, at most one per neuron). The null's fraction is a
    # binomial proportion over them: 1024 pin it to about ±3 points (95%).
    random_directions: int = count(1024, "Directions of each null (random residual directions; rotated "
                                         "neurons, at most one per neuron).")
    # Token rows per chunk of the streaming estimator. Memory of one chunk: the neuron rows
    # (chunk x neurons float32) and the sparse codes' product [features x neurons] float32 (the
    # accumulator itself, float64 [features x neurons], does not depend on it). 8192 rows of
    # 1536 neurons are 50 MB.
    chunk_rows: int = count(8192, "Token rows per chunk of the streaming estimator.")
    # of the null directions (residual directions and the rotation)
    seed: int = seed(0, "Seed of the null directions.")
    # Neurons per feature in the feature browser's table (most correlated first).
    top_neurons: int = count(3, "Most-correlated neurons listed per feature (table for the feature browser).")
    # Bins of the max-|r| histograms on [0, 1] (figure and table).
    histogram_bins: int = param(50, "Bins of the max-|r| histograms on [0, 1].", minimum=2)
