"""What the absorption analysis writes: flat metrics, the ``summary`` (per size) and ``letters``
(per size and letter) tables and the ``absorption_summary`` document. Means are over the
measured letters (each letter weighs the same, however common it is), with percentile intervals
from a bootstrap over letters (paired: the rate, its null and their difference share the draws)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from saeatlas.analysis.absorption.compute import BOOT, AbsorptionResult, LetterSize, stream
from saeatlas.analysis.absorption.config import AbsorptionConfig

# per-size quantities: name -> the per-letter value
PER_LETTER = {
    "absorption_rate": lambda s: s.rate,
    "absorption_rate_null": lambda s: s.null_rate,
    "absorption_minus_null": lambda s: s.rate - s.null_rate,
    "false_negative_rate": lambda s: s.fn_rate,
}


def size_summary(config: AbsorptionConfig, letters: list[LetterSize], size: int) -> dict[str, float]:
    """Means over letters of every per-letter rate with bootstrap intervals; the main latents'
    mean test F1, mean count and the letters with more than one (split features)."""
    if not letters:
        return {}
    values = {name: np.array([fn(s) for s in letters]) for name, fn in PER_LETTER.items()}
    out: dict[str, float] = {name: float(v.mean()) for name, v in values.items()}
    if config.n_bootstrap and len(letters) > 1:
        rng = stream(config.seed, BOOT, size)
        draws = rng.integers(0, len(letters), (config.n_bootstrap, len(letters)))
        tail = 100 * (1 - config.ci_level) / 2
        for name, v in values.items():
            low, high = np.percentile(v[draws].mean(axis=1), [tail, 100 - tail])
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    out.update({"main_latent_f1": float(np.mean([s.main.f1_test for s in letters])),
                "main_latents": float(np.mean([len(s.main.latents) for s in letters])),
                "split_letters": sum(len(s.main.latents) > 1 for s in letters), "letters": len(letters),
                "true_positives": sum(s.true_positives for s in letters),
                "false_negatives": sum(s.false_negatives for s in letters),
                "absorbed": sum(s.absorbed for s in letters)})
    return out


def change_summary(config: AbsorptionConfig, result: AbsorptionResult) -> dict[str, float]:
    """Largest minus smallest size's absorption rate, per letter (the same letters at every size),
    averaged, with a bootstrap interval over letters: the paired test of a trend with size."""
    first, last = result.per_size[result.sizes[0]], result.per_size[result.sizes[-1]]
    if len(result.sizes) < 2 or not last:
        return {}
    diff = np.array([b.rate - a.rate for a, b in zip(first, last)])
    out = {"absorption_rate_change": float(diff.mean())}
    if config.n_bootstrap and len(diff) > 1:
        draws = stream(config.seed, BOOT, 0).integers(0, len(diff), (config.n_bootstrap, len(diff)))
        tail = 100 * (1 - config.ci_level) / 2
        low, high = np.percentile(diff[draws].mean(axis=1), [tail, 100 - tail])
        out.update({"absorption_rate_change_ci_low": float(low), "absorption_rate_change_ci_high": float(high)})
    return out


def gate_metrics(config: AbsorptionConfig, result: AbsorptionResult) -> dict[str, float]:
    g = result.gate
    out: dict[str, float] = {"gate.estimated": int(g.estimated), "gate.passes": int(result.passes)}
    if g.estimated and g.score is not None and g.shuffled is not None:
        out.update({"gate.accuracy": g.score.accuracy, "gate.accuracy_ci_low": g.score.ci_low,
                    "gate.accuracy_ci_high": g.score.ci_high, "gate.majority": g.majority, "gate.chance": g.chance,
                    "gate.shuffled": g.shuffled.accuracy, "gate.shuffled_ci_high": g.shuffled.ci_high,
                    "gate.letters": len(g.letters), "gate.n_train": g.n_train, "gate.n_test": g.score.n})
    return out


def metrics(config: AbsorptionConfig, result: AbsorptionResult) -> dict[str, float]:
    out: dict[str, float] = {"layer": result.layer, **gate_metrics(config, result)}
    if result.passes:
        out.update({"letters": len(result.probes), "letters_skipped": len(result.skipped)})
        for size in result.sizes:
            out.update({f"n{size}.{k}": v for k, v in size_summary(config, result.per_size[size], size).items()})
        largest = result.sizes[-1]
        out["largest.size"] = largest
        out.update({f"largest.{k}": v for k, v in size_summary(config, result.per_size[largest], largest).items()})
        out.update(change_summary(config, result))
    out.update({"config.gate_factor": config.gate_factor, "config.probe_cos": config.probe_cos,
                "config.split_threshold": config.split_threshold, "config.absorption_share": config.absorption_share,
                "config.tokens_per_letter": config.tokens_per_letter})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def summary_table(config: AbsorptionConfig, result: AbsorptionResult) -> list[dict[str, Any]]:
    """One row per size: the means over letters with their intervals (empty below the gate)."""
    if not result.passes:
        return []
    return [{"layer": result.layer, "size": size, **size_summary(config, result.per_size[size], size)}
            for size in result.sizes]


def letters_table(result: AbsorptionResult) -> list[dict[str, Any]]:
    """One row per size and measured letter: counts, rates, the main latents (with the training
    F1 at each k tried) and the latent that absorbs the most of the letter's tokens."""
    rows = []
    for size in result.sizes if result.passes else ():
        for s in result.per_size[size]:
            rows.append({"layer": result.layer, "size": size, "letter": s.letter,
                         "true_positives": s.true_positives, "false_negatives": s.false_negatives,
                         "absorbed": s.absorbed, "absorbed_null": s.absorbed_null, "absorption_rate": s.rate,
                         "absorption_rate_null": s.null_rate, "false_negative_rate": s.fn_rate,
                         "main_latents": " ".join(str(int(i)) for i in s.main.latents),
                         "f1_train_by_k": " ".join(f"{v:.3f}" for v in s.main.f1_train),
                         "main_latent_f1": s.main.f1_test, "top_absorber": s.top_absorber,
                         "top_absorber_tokens": s.top_absorber_tokens, "letter_signal": s.signal})
    return rows


def notes(result: AbsorptionResult) -> list[str]:
    g = result.gate
    out = [] if g.estimated else [f"first-letter gate not run: {g.reason}"]
    out += [f"letter {letter} dropped from the gate: {why}" for letter, why in sorted(g.dropped.items())]
    out += [f"letter {letter} not measured: {why}" for letter, why in sorted(result.skipped.items())]
    return out


def summary_document(config: AbsorptionConfig, result: AbsorptionResult) -> dict[str, Any]:
    return {
        "layer": result.layer, "sizes": list(result.sizes), "config": asdict(config), "passes": result.passes,
        "letters": [p.letter for p in result.probes], "notes": notes(result),
        "methods": {
            "rows": "word-initial tokens (space + ASCII letter) of the held-out split, ordinary rows, at most "
                    f"{config.max_per_token} per token id and {config.tokens_per_letter} per letter, split by token id "
                    f"({config.train_fraction:g} of each letter's ids for training)",
            "gate": "multinomial probe on the residual (shared with probing) beside majority, chance and shuffled "
                    f"labels; absorption is measured only above {config.gate_factor:g}x the majority baseline",
            "letter_probe": "per letter a class-balanced one-vs-rest L2 logistic regression on the residual (store "
                            "scale, standardised); its direction w / sd in the residual space, unit length; true "
                            "positives = test rows of the letter it classifies as the letter",
            "main_latents": "latents ranked by the signed class-mean difference on the training rows; k-sparse "
                            f"balanced probe; the (k+1)-th latent joins while training F1 rises by more than "
                            f"{config.split_threshold} (split features), at most {config.max_main_latents}",
            "absorption": f"a probe true positive on which no main latent fires is absorbed if an active latent with "
                          f"decoder cosine >= {config.probe_cos} to the probe carries the largest positive "
                          f"contribution a_i (d_i . p), at least {config.absorption_share} of the larger of the positive "
                          "projection "
                          "sum_j max(0, a_j (d_j . p)) and the letter's signal (mean projection of its training "
                          "reconstructions on p minus the other letters'); rate = absorbed / probe true positives "
                          "per letter",
            "null": "the same rule on the same tokens along a seeded random unit direction per letter, with the span "
                    "of the letter directions projected out",
            "intervals": f"percentile bootstrap over letters ({config.n_bootstrap} replicates), level "
                         f"{config.ci_level}",
        },
    }
