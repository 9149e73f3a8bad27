"""The crystals section of the report: are word-pair offsets parallel (a crystal) beyond what
shuffled pairs give, in the activations and in each SAE's codes, before and after LDA?"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _spaces(metrics: Mapping[str, float]) -> list[str]:
    """``act`` first, then ``sae_<size>`` by size (every analysed space writes its LDA axes)."""
    names = [k[: -len(".lda_directions")] for k in metrics if k.endswith(".lda_directions")]
    return sorted(names, key=lambda s: (s != "act", int(s[4:]) if s.startswith("sae_") else 0))


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    tasks = [k[: -len(".evaluated")] for k in metrics if k.endswith(".evaluated")]
    done = [t for t in tasks if metrics[f"{t}.evaluated"]]
    skipped = tuple(f"not evaluated: {t} ({int(metrics[f'{t}.n_pairs'])} usable pairs, fewer than min_pairs)"
                    for t in tasks if t not in done)
    spaces = _spaces(metrics)
    numbers = tuple(Number(f"mean {q.replace('_', ' ')}, {s}{' after LDA' if v else ''}",
                           metric(metrics, f"mean.{s}.{q}{v}"), metric(metrics, f"mean.{s}.{q}{v}_null"))
                    for s in spaces for q in ("cos_mean", "silhouette") for v in ("", "_lda"))
    if not done:
        summary = (f"No word-pair task had enough usable pairs ({len(tasks)} tasks, 0 evaluated): "
                   "crystal quality was not estimated.")
        return Section("Word-pair crystals", summary, numbers, (), _tables(), order=50, notes=skipped)
    act = {v: (metric(metrics, f"mean.act.cos_mean{v}"), metric(metrics, f"mean.act.cos_mean{v}_null"))
           for v in ("", "_lda")}
    sig = {v: metric(metrics, f"act.cos_mean{v}_significant") for v in ("", "_lda")}
    summary = (f"Over {len(done)} word-pair task{'s' if len(done) != 1 else ''}, the mean pairwise cosine of a task's offsets in the LM's "
               f"activations is {_f(act[''][0])} (shuffled-pair null {_f(act[''][1])}), and "
               f"{_f(act['_lda'][0])} (null {_f(act['_lda'][1])}) after LDA removes the distractors' "
               f"axes. {int(sig[''] or 0)} of {len(done)} tasks are more "
               f"parallel than shuffled pairs after Holm correction, {int(sig['_lda'] or 0)} after LDA.")
    sae = [s for s in spaces if s != "act"]
    if sae:
        parts = [f"{s[4:]}: {_f(metric(metrics, f'mean.{s}.cos_mean_lda'))} "
                 f"(null {_f(metric(metrics, f'mean.{s}.cos_mean_lda_null'))}, "
                 f"{int(metric(metrics, f'{s}.cos_mean_lda_significant') or 0)} tasks significant)" for s in sae]
        summary += " In the SAE codes after LDA, by dictionary size: " + "; ".join(parts) + "."
    if not any(sig.values()):
        summary += " No task is a crystal above its null in the activations."
    figures = []
    if (out_dir / "figures/crystals_quality.png").is_file():
        figures.append(Figure("figures/crystals_quality.png",
                              "Per task (columns) and space (x): mean pairwise offset cosine (top) and silhouette "
                              "against the other tasks' offsets (bottom), raw (filled) and after LDA (open) with "
                              "bootstrap CIs, over the shuffled-pair null's mean ± 2 SD; activations' mean cosine "
                              f"{_f(act[''][0])} vs null {_f(act[''][1])}."))
    if (out_dir / "figures/crystals_pca.plotly.json").is_file():
        figures.append(Figure("figures/crystals_pca.plotly.json",
                              "Interactive: 2-D PCA of one task's words in activation space, arrows a -> b; "
                              "buttons switch between the raw and the LDA-cleaned vectors."))
    return Section("Word-pair crystals", summary, numbers, tuple(figures), _tables(), order=50, notes=skipped)


def _tables() -> tuple[Table, ...]:
    return (Table("tables/crystals.csv", "Per task, space and variant: cos_mean and silhouette with the "
                  "shuffled-pair null (mean, SD, excess, z, p, Holm p), bootstrap CI, norm retained by LDA."),
            Table("tables/crystal_pairs.csv", "Per pair: offset norm and leave-one-out cosine with the task's "
                  "other offsets (how well the pair follows the common direction)."),
            Table("tables/lda.csv", "Per space and distractor: classes and discriminant axes removed."))
