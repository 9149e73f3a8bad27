"""Settings of the seed-spread analysis (params.yaml section ``seeds:``)."""

from __future__ import annotations

from dataclasses import dataclass

from saeatlas.analysis.common.config import AnalysisConfig, count, param


@dataclass(frozen=True)
class SeedsConfig(AnalysisConfig, section="seeds",
                  summary="Headline numbers over extra training seeds: mean and spread beside the within-seed "
                  "intervals (analysis/seeds/)."):
    """Settings of the seed-spread analysis (params.yaml section ``seeds:``, same key names)."""

    # Training seeds besides sae.seed. Each costs one training of every size up to max_size
    # (default study, 2 cores: ~9 min per seed for 1152, 2304 and 4608), plus the analyses.
    extra: tuple[int, ...] = param((1, 2), "Training seeds besides sae.seed (empty: the study's seed alone, no "
                                           "spread).", items={"type": "integer", "minimum": 0}, uniqueItems=True)
    # Sizes up to this one are retrained with every seed (the "sizes up to 4608").
    max_size: int = count(4608, "Largest dictionary size retrained with every extra seed.")
    # The lobe AMI compared across seeds (one k, on the largest retrained size).
    lobes_k: int = count(128, "Number of lobes at which the lobe AMI is compared across seeds.")
