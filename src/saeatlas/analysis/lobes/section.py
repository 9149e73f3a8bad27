"""The lobes analysis in the report: do features that fire together also point the same way?"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from saeatlas.analysis.common.published import label
from saeatlas.analysis.common.section import Figure, Number, Section, Table, metric

ORDER = 60


def _ks(metrics: Mapping[str, float], suffix: str, prefix: str = "") -> list[int]:
    return sorted(int(m.group(1)) for key in metrics
                  if (m := re.fullmatch(rf"{re.escape(prefix)}k(\d+)\.{suffix}", key)))


def _ami(metrics: Mapping[str, float], k: int, published: str | None, prefix: str = "",
         what: str = "") -> Number:
    return Number(f"AMI{what} at k={k}", metric(metrics, f"{prefix}k{k}.ami"),
                  null=metric(metrics, f"{prefix}k{k}.ami_null_mean"), published=published)


def _published_ami(k: int) -> str | None:
    """The published figure a k is read against: k = 2, or the 128-256 plateau."""
    if k == 2:
        return label("lobes", "li2024_ami_k2")
    return label("lobes", "li2024_ami_k128_256") if 128 <= k <= 256 else None


def _protocol(metrics: Mapping[str, float]) -> tuple[list[Number], str]:
    """The published protocol's AMI at k = 2 and at its largest k up to 256, and a sentence."""
    ks = _ks(metrics, r"ami", prefix="goc.")
    if not ks:
        return [], ""
    upto = [k for k in ks if k <= 256] or ks  # the paper's plateau is at 128-256
    nums = [_ami(metrics, k, _published_ami(k), "goc.", " (published protocol)") for k in sorted({ks[0], upto[-1]})]
    ba_ks = _ks(metrics, "balanced_accuracy", prefix="goc.")
    if ba_ks:
        k = ba_ks[0]
        nums.append(Number(f"Balanced accuracy of the lobe from the direction at k={k} (published protocol: one "
                           "80/20 split)", metric(metrics, f"goc.k{k}.balanced_accuracy"),
                           null=metric(metrics, f"goc.k{k}.balanced_accuracy_random_mean"),
                           published=label("lobes", "li2024_balanced_accuracy_k2") if k == 2 else None))
    window, n_win = metric(metrics, "goc.window"), metric(metrics, "goc.n_windows")
    thr = metric(metrics, "goc.threshold")
    how = (f"windows of {int(window)} tokens of one document ({int(n_win)} windows)" if window and n_win is not None
           else "document windows")
    text = (f" Published protocol ({how}, firing above {thr:g} of each feature's largest code, "
            f"{int(metric(metrics, 'goc.n_analysed') or 0)} features): "
            + "; ".join(num.text() for num in nums) + ".")
    return nums, text


def _verdict(metrics: Mapping[str, float], k: int) -> str:
    p, dens_p = metric(metrics, f"k{k}.ami_p"), metric(metrics, f"k{k}.ami_density_p")
    if p is None:
        return "not estimated"
    if p > 0.05:
        return f"not above the label-shuffle null (p = {p:.3g})"
    if dens_p is None or dens_p > 0.05:
        return "above the label-shuffle null but not above the density-matched null"
    return f"above both nulls (p = {p:.3g}, density-matched p = {dens_p:.3g})"


def section(metrics: Mapping[str, float], out_dir: Path) -> Section:
    ks = _ks(metrics, "ami")
    n, total = metric(metrics, "n_analysed"), metric(metrics, "n_latents")
    head = (f"{n if n is None else int(n)} of {total if total is None else int(total)} features were clustered by "
            "block co-occurrence and, separately, by decoder direction.")
    numbers: list[Number] = []
    if not ks:
        summary = head + " No number of clusters had enough features: agreement was not estimated."
    else:
        lo, hi = ks[0], ks[-1]
        numbers.append(_ami(metrics, lo, _published_ami(lo)))
        if hi != lo:
            numbers.append(_ami(metrics, hi, _published_ami(hi)))
        agreement = "; ".join(f"{num.text()}, {_verdict(metrics, k)}" for num, k in zip(numbers, (lo, hi)))
        summary = f"{head} Lobes vs geometric clusters: {agreement}."
        proto, proto_text = _protocol(metrics)
        numbers.extend(proto)
        summary += proto_text
        ba_ks = _ks(metrics, "balanced_accuracy")
        if ba_ks:
            k = ba_ks[0]
            ba = Number(f"Balanced accuracy of predicting a feature's lobe from its decoder direction at k={k}",
                        metric(metrics, f"k{k}.balanced_accuracy"),
                        null=metric(metrics, f"k{k}.balanced_accuracy_random"),
                        published=(f"{label('lobes', 'li2024_balanced_accuracy_k2')} vs "
                                   f"{label('lobes', 'li2024_balanced_accuracy_random_k2')} for random vectors"
                                   if k == 2 else None))
            numbers.append(ba)
            summary += f" {ba.text()}; its null is the same classifier on random vectors."
        else:
            summary += " The lobe classifier was not fitted."
    dom_ks = _ks(metrics, "domain_enrichment_max")
    if dom_ks:
        k = dom_ks[-1]
        dom = Number(f"Largest lobe x domain enrichment at k={k}", metric(metrics, f"k{k}.domain_enrichment_max"),
                     null=metric(metrics, f"k{k}.domain_enrichment_max_null_mean"))
        numbers.append(dom)
        summary += f" {dom.text()}, against lobe labels shuffled."
    return Section(
        title="Functional lobes vs geometric clusters",
        summary=summary,
        numbers=tuple(numbers),
        figures=(Figure("figures/lobes_ami.png",
                        "Left: AMI between co-occurrence lobes and geometric clusters against k, beside the "
                        "label-shuffle and density-matched nulls (mean ± 2 sd) and Li et al.'s values. Right: "
                        "balanced accuracy of predicting a feature's lobe from its decoder direction, beside random "
                        "vectors and chance (1/k)."),
                 Figure("figures/lobes_domains.plotly.json",
                        "Log2 enrichment of each lobe's firings on each corpus domain (0 = the base rate); hover for "
                        "the label-shuffle null.")),
        tables=(Table("tables/lobes_summary.csv", "One row per k: AMI, its two nulls, classifier accuracy."),
                Table("tables/lobe_domain_enrichment.csv", "Lobe x domain firing share, enrichment and its null."),
                Table("tables/lobe_assignments.csv", "Every analysed feature's lobe and geometric cluster per k."))
        + ((Table("tables/lobes_protocol_summary.csv", "The published protocol (document windows): one row per k."),)
           if _ks(metrics, "ami", prefix="goc.") else ()),
        order=ORDER,
    )
