"""Published reference (Li et al. 2024, Gemma-2-2B, Gemma Scope layer 12; read from their
figures, approximate): written beside our numbers as ``reference.li2024_*``."""

from __future__ import annotations

LI2024_AMI_K2 = 0.06
LI2024_AMI_K128_256 = 0.23
LI2024_BALANCED_ACCURACY_K2 = 0.85
LI2024_BALANCED_ACCURACY_RANDOM_K2 = 0.50


def reference_metrics() -> dict[str, float]:
    return {"reference.li2024_ami_k2": LI2024_AMI_K2, "reference.li2024_ami_k128_256": LI2024_AMI_K128_256,
            "reference.li2024_balanced_accuracy_k2": LI2024_BALANCED_ACCURACY_K2,
            "reference.li2024_balanced_accuracy_random_k2": LI2024_BALANCED_ACCURACY_RANDOM_K2}
