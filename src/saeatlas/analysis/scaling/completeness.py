"""Feature completeness: does a latent specific to a concept exist at each size (judging), the
Firth-penalised logistic curve of that in x = log10(frequency x alive) and its 50% point with a
bootstrap over concepts, and whether the per-size curves collapse onto one (see the package
docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import sparse, special, stats

from saeatlas.progress import bar
from saeatlas.analysis.scaling.concepts import TokenizedConcept
from saeatlas.analysis.scaling.firing import binary
from saeatlas.analysis.scaling.matching import ConceptCounts, Occurrences


def num(v: Any) -> float | int | None:
    """Plain Python number for tables/documents; None for missing or non-finite."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------------
# Judging (concept, size)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Per concept, for one size: the best latent and whether it is specific to the concept."""

    best_feature: np.ndarray  # int64 [C], -1 when no latent fires on the concept at all
    precision: np.ndarray  # float [C]
    recall: np.ndarray  # float [C]
    exists: np.ndarray  # bool [C]


def judge_concepts(codes: Any, occurrences: Occurrences, precision_threshold: float, recall_threshold: float,
                   fires: np.ndarray | None = None) -> Judgement:
    """Does a latent specific to each concept exist in these codes [N, n]?

    Criterion (per latent j and concept c; "fires" = activation > 0):

        precision(j, c) = #{rows where j fires that are tokens of an occurrence of c} / #{rows where j fires}
        recall(j, c)    = #{occurrences of c on any of whose tokens j fires} / #{occurrences of c}
        exists(c)       = some j has precision >= precision_threshold and recall >= recall_threshold

    Precision counts tokens, recall counts occurrences: a latent firing on the last token of
    " Papua New Guinea" only, or on all three tokens, is equally specific and equally complete;
    marking only the last token would call the second imprecise, marking all tokens for
    recall would call the first incomplete. The best latent reported is, among those that
    qualify (else among all), the one with the largest F1 = 2PR / (P + R).
    Sparse throughout: U [C, N] (concept token rows) @ B [N, n] and O [m, N] (occurrence rows)
    @ B; nothing dense of size N x n.
    """
    b = binary(codes)
    C = occurrences.n_concepts
    if fires is None:
        fires = np.bincount(b.indices, minlength=b.shape[1])
    best = np.full(C, -1, dtype=np.int64)
    prec = np.zeros(C)
    rec = np.zeros(C)
    exists = np.zeros(C, dtype=bool)
    if len(occurrences.start) == 0:
        return Judgement(best, prec, rec, exists)
    concept_of, cols, tok_count, occ_count = _hits(b, occurrences)
    p = tok_count / fires[cols]
    r = occ_count / occurrences.counts()[concept_of]
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    qualifies = (p >= precision_threshold) & (r >= recall_threshold)
    order = np.lexsort((-f1, ~qualifies, concept_of))  # per concept: qualifying first, then best F1
    first = order[np.r_[True, concept_of[order][1:] != concept_of[order][:-1]]] if len(order) else order
    cs = concept_of[first]
    best[cs], prec[cs], rec[cs], exists[cs] = cols[first], p[first], r[first], qualifies[first]
    return Judgement(best, prec, rec, exists)


def _hits(b: Any, occurrences: Occurrences) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (concept c, latent j) pair where j fires on a token of c: c, j, the number of c's
    token rows j fires on, and the number of c's occurrences j fires on (any of its tokens)."""
    N = b.shape[0]
    C = occurrences.n_concepts
    m = len(occurrences.start)
    occ, rows = occurrences.token_rows()
    if rows.max() >= N:
        raise ValueError(f"occurrence rows reach {rows.max()}, codes have {N} rows")
    ones = np.ones(len(rows), dtype=np.float32)
    U = sparse.csr_matrix((ones, (occurrences.concept[occ], rows)), shape=(C, N))
    U.sum_duplicates()
    U.data[:] = 1.0  # a token shared by two occurrences of c counts once
    O = sparse.csr_matrix((ones, (occ, rows)), shape=(m, N))
    G = sparse.csr_matrix((np.ones(m, dtype=np.float32), (occurrences.concept, np.arange(m))), shape=(C, m))
    tok_hits = (U @ b).tocsr()
    tok_hits.sum_duplicates()
    tok_hits.sort_indices()
    occ_fired = (O @ b).tocsr()
    occ_fired.data[:] = 1.0  # occurrence hit or not
    occ_hits = (G @ occ_fired).tocsr()
    occ_hits.sum_duplicates()
    occ_hits.sort_indices()
    concept_of = np.repeat(np.arange(C), np.diff(tok_hits.indptr))
    cols = tok_hits.indices.astype(np.int64)
    if np.array_equal(tok_hits.indptr, occ_hits.indptr) and np.array_equal(tok_hits.indices, occ_hits.indices):
        occ_count = occ_hits.data.astype(np.float64)  # same pattern: j hits c's tokens <=> j hits an occurrence
    else:  # pragma: no cover - the patterns agree by construction; keep an exact fallback anyway
        occ_count = np.asarray(occ_hits[concept_of, cols]).ravel().astype(np.float64)
    return concept_of, cols, tok_hits.data.astype(np.float64), occ_count


# --------------------------------------------------------------------------------------
# The logistic fit (Firth) and its 50% point
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogisticFit:
    """P(y=1 | x) = sigmoid(intercept + slope * x), by Firth-penalised maximum likelihood."""

    intercept: float
    slope: float
    penalized_loglik: float
    converged: bool
    n: int
    n_pos: int

    @property
    def x50(self) -> float:
        """sigmoid(a + b x50) = 1/2  <=>  x50 = -a / b."""
        return -self.intercept / self.slope if self.slope != 0 else math.inf


def fit_logistic(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, max_iter: int = 200,
                 tol: float = 1e-9) -> LogisticFit:
    """Firth's penalised logistic regression of y on [1, x].

    Maximises  l*(beta) = sum_i [y_i eta_i - log(1 + e^eta_i)] + 1/2 sum_g log det I_g(beta),
    eta = beta0 + beta1 x, I_g = X_g' W_g X_g, W = diag(p (1 - p)); one block per group
    (``groups``; one block if None). Blocks are what the collapse test needs: the
    per-size model's information is block-diagonal over sizes, so a shared curve penalised
    with the same blocks is nested in it (see ``_collapse``). Newton steps with the Fisher
    information on the modified score  U*_j = sum_i (y_i - p_i + h_i (1/2 - p_i)) x_ij,
    h_i = w_i x_i' I_g^{-1} x_i (the leverage), halving the step until l* does not decrease.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    g = np.zeros(len(x), dtype=np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    G = int(g.max()) + 1 if len(g) else 1
    X = np.column_stack([np.ones_like(x), x])

    def evaluate(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        eta = X @ beta
        p = special.expit(eta)
        w = p * (1 - p)
        ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        s0 = np.bincount(g, w, minlength=G)
        s1 = np.bincount(g, w * x, minlength=G)
        s2 = np.bincount(g, w * x * x, minlength=G)
        det = np.maximum(s0 * s2 - s1 * s1, 1e-300)  # det I_g of [[s0, s1], [s1, s2]]
        h = w * (s2[g] - 2 * s1[g] * x + s0[g] * x * x) / det[g]
        score = X.T @ (y - p + h * (0.5 - p))
        info = X.T @ (X * w[:, None])
        return ll + 0.5 * float(np.log(det).sum()), score, info

    beta = np.zeros(2)
    obj, score, info = evaluate(beta)
    converged = False
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(info + 1e-12 * np.eye(2), score)
        except np.linalg.LinAlgError:
            break
        for _ in range(40):
            new_obj, new_score, new_info = evaluate(beta + step)
            if new_obj >= obj - 1e-10:
                break
            step = step / 2
        beta = beta + step
        obj, score, info = new_obj, new_score, new_info
        if np.max(np.abs(step)) < tol:
            converged = True
            break
    return LogisticFit(float(beta[0]), float(beta[1]), obj, converged, int(len(y)), int(y.sum()))


def _x50_problem(fit: LogisticFit, x: np.ndarray, min_events: int, require_in_range: bool = True) -> str:
    """Why x50 cannot be estimated from ``fit`` on points x ("" if it can)."""
    n_neg = fit.n - fit.n_pos
    if fit.n_pos < min_events:
        return (f"only {fit.n_pos} of {fit.n} (concept, size) pairs have a concept-specific feature; "
                f"a 50% point needs >= {min_events} with and >= {min_events} without")
    if n_neg < min_events:
        return (f"{fit.n_pos} of {fit.n} (concept, size) pairs have a concept-specific feature, only {n_neg} lack one; "
                f"a 50% point needs >= {min_events} of each")
    if not fit.converged:
        return "the penalised logistic fit did not converge"
    if fit.slope <= 0:
        return f"P(feature exists) does not increase with log10(frequency x alive) (slope {fit.slope:.3g} <= 0)"
    if require_in_range and not (x.min() <= fit.x50 <= x.max()):
        return (f"the fitted 50% point ({fit.x50:.3g}) lies outside the observed range of "
                f"log10(frequency x alive) [{x.min():.3g}, {x.max():.3g}]: an extrapolation, not reported")
    return ""


def _collapse(x: np.ndarray, u: np.ndarray, y: np.ndarray, size_idx: np.ndarray, log_alive: np.ndarray,
              min_events: int) -> dict[str, Any]:
    """Do the per-size completeness curves collapse onto one curve in x = log10(f A_n)?

    Penalised likelihood-ratio tests (Heinze & Schemper 2002) of nested models, all with the
    per-size Jeffreys blocks: per-size curves (2S parameters) vs one curve in x (2), and vs
    one curve in u = log10 f (2). LR = 2 (l*_per-size - l*_shared) ~ chi2(2S - 2) under the
    shared model. (x = u + log10 A_n, so per-size curves are the same model in x or u.)
    Per-size 50% points give the descriptive version: SD over sizes of x50_n (rescaled) and
    of u50_n = x50_n - log10 A_n (unrescaled); collapse means SD_x << SD_u.
    Caveat: a concept's judgements at different sizes are correlated, so the chi2 p-value is
    optimistic (too small); read it with the spreads.
    """
    sizes = np.unique(size_idx)
    out: dict[str, Any] = {"per_size": {}}
    usable = [s for s in sizes if len(np.unique(x[size_idx == s])) >= 2]
    per_fits = {}
    for s in usable:
        sel = size_idx == s
        fit = fit_logistic(x[sel], y[sel])
        per_fits[s] = fit
        problem = _x50_problem(fit, x[sel], min_events)
        out["per_size"][int(s)] = {"fit": fit, "problem": problem,
                                   "x50": fit.x50 if not problem else None,
                                   "u50": fit.x50 - log_alive[s] if not problem else None}
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if len(usable) >= 2 and n_pos >= min_events and n_neg >= min_events:
        sel = np.isin(size_idx, usable)
        full = sum(f.penalized_loglik for f in per_fits.values())
        shared_x = fit_logistic(x[sel], y[sel], groups=size_idx[sel])
        shared_u = fit_logistic(u[sel], y[sel], groups=size_idx[sel])
        df = 2 * (len(usable) - 1)
        lr_x = max(0.0, 2 * (full - shared_x.penalized_loglik))
        lr_u = max(0.0, 2 * (full - shared_u.penalized_loglik))
        out.update(lr_estimated=True, lr_df=df, lr_stat=lr_x, lr_pvalue=float(stats.chi2.sf(lr_x, df)),
                   lr_stat_unrescaled=lr_u, lr_pvalue_unrescaled=float(stats.chi2.sf(lr_u, df)))
    else:
        out.update(lr_estimated=False,
                   lr_reason=f"needs >= 2 sizes and >= {min_events} pairs with and without a feature "
                             f"(have {len(usable)} sizes, {n_pos} with, {n_neg} without)")
    x50s = np.array([v["x50"] for v in out["per_size"].values() if v["x50"] is not None])
    u50s = np.array([v["u50"] for v in out["per_size"].values() if v["u50"] is not None])
    out["sizes_with_x50"] = int(len(x50s))
    if len(x50s) >= 2:
        sd_x, sd_u = float(x50s.std(ddof=1)), float(u50s.std(ddof=1))
        out.update(spread_estimated=True, x50_sd_rescaled=sd_x, x50_sd_unrescaled=sd_u,
                   spread_ratio=sd_x / sd_u if sd_u > 0 else None)
    else:
        out.update(spread_estimated=False)
    return out



# --------------------------------------------------------------------------------------
# The experiment: exclusions, the (concept, size) grid, the shared curve, the collapse
# --------------------------------------------------------------------------------------


@dataclass
class Completeness:
    """What the completeness experiment reports (metrics, tables, notes, the summary document)
    and what its figures draw: the [J, S] grids of judged concepts x sizes (x = log10(f A_n),
    u = log10 f, y = exists), the shared curve (None when its 50% point is not estimable) and
    the collapse result."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    xs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    us: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    ys: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    names: list[str] = field(default_factory=list)  # the judged concepts, rows of the grids
    shared: LogisticFit | None = None
    collapse: dict[str, Any] = field(default_factory=dict)


def completeness(config: Any, concepts: Sequence[TokenizedConcept], train: ConceptCounts, occ: Occurrences,
                 n_eval_tokens: int, sizes: Sequence[int], alive: np.ndarray, judgements: Mapping[int, Judgement],
                 boundaries_checked: bool, rng: np.random.Generator) -> Completeness:
    """The completeness experiment on the judgements of every size (``config``: ScalingConfig).

    A concept's frequency is counted on all the study's tokens: its occurrences in the training
    split plus those in the ``n_eval_tokens`` evaluation tokens, over both token counts (Scaling
    Monosemanticity counts on its training data; the evaluation split is more of the same text,
    and the rare concepts' frequencies are the noisiest). Concepts without forms or with fewer
    than ``min_eval_occurrences`` evaluation occurrences are excluded (and counted); the others
    are judged at every size, one Firth curve is fitted to all (concept, size) pairs in x with a
    concept bootstrap for its 50% point, and per-size curves are tested for collapse."""
    out = Completeness()
    n_occ = occ.counts()
    everywhere = ConceptCounts(train.counts + n_occ, train.n_tokens + int(n_eval_tokens))
    judged = _exclusions(out, config, concepts, train, everywhere, n_occ, boundaries_checked)
    jidx = np.flatnonzero(judged)
    log_alive = np.log10(np.maximum(alive, 1)).astype(float)
    _grids(out, concepts, everywhere.frequency, n_occ, jidx, sizes, alive, log_alive, judgements)
    J, S = len(jidx), len(sizes)
    x, u, y = out.xs.ravel(), out.us.ravel(), out.ys.ravel()
    size_idx = np.tile(np.arange(S), J)
    _pair_counts(out, concepts, jidx, sizes)
    if J:
        logf = np.log10(everywhere.frequency[jidx])
        out.metrics.update({"completeness.log10_frequency_min": float(logf.min()),
                            "completeness.log10_frequency_max": float(logf.max()),
                            "completeness.frequency_span_decades": float(logf.max() - logf.min()),
                            "completeness.log10_freq_times_alive_min": float(x.min()),
                            "completeness.log10_freq_times_alive_max": float(x.max())})
    _shared_curve(out, config, x, y, J, rng)
    col = _collapse(x, u, y, size_idx, log_alive, config.min_events) if J else {
        "per_size": {}, "lr_estimated": False, "spread_estimated": False, "sizes_with_x50": 0,
        "lr_reason": "no concept judged"}
    _report_collapse(out, col, sizes, alive, J)
    return out


def _exclusions(out: Completeness, config: Any, concepts: Sequence[TokenizedConcept], train: ConceptCounts,
                everywhere: ConceptCounts, n_occ: np.ndarray, boundaries_checked: bool) -> np.ndarray:
    """Which concepts are judged (the others excluded, with the reason); the ``concepts`` table.
    A judged concept has >= 1 evaluation occurrence, so its frequency on all tokens is > 0."""
    C = len(concepts)
    no_forms = np.array([len(c.forms) == 0 for c in concepts], dtype=bool)
    few_eval = ~no_forms & (n_occ < config.min_eval_occurrences)
    judged = ~(no_forms | few_eval)
    concept_rows = []
    for ci, tc in enumerate(concepts):
        status = ("judged" if judged[ci] else "excluded: no surface form" if no_forms[ci]
                  else f"excluded: < {config.min_eval_occurrences} evaluation occurrences")
        concept_rows.append({"concept": tc.name, "category": tc.category, "surfaces": "; ".join(map(repr, tc.surfaces)),
                             "dropped_surfaces": "; ".join(map(repr, tc.dropped)),
                             "train_count": int(train.counts[ci]), "eval_occurrences": int(n_occ[ci]),
                             "frequency": float(everywhere.frequency[ci]),
                             "train_frequency": float(train.frequency[ci]), "status": status})
    out.tables["concepts"] = concept_rows
    out.metrics.update({"completeness.concepts_total": C, "completeness.concepts_judged": int(judged.sum()),
                        "completeness.concepts_excluded": int(C - judged.sum()),
                        "completeness.concepts_excluded_few_eval": int(few_eval.sum()),
                        "completeness.concepts_excluded_no_forms": int(no_forms.sum()),
                        "completeness.train_tokens": train.n_tokens,
                        "completeness.frequency_tokens": everywhere.n_tokens,
                        "completeness.word_boundaries_checked": int(boundaries_checked)})
    return judged


def _pair_counts(out: Completeness, concepts: Sequence[TokenizedConcept], jidx: np.ndarray,
                 sizes: Sequence[int]) -> None:
    """Judged (concept, size) pairs with and without a concept-specific latent: overall, per size
    and per category (a 50% point needs both outcomes; the categories show where they come from)."""
    ys = out.ys
    out.metrics["completeness.pairs_judged"] = int(ys.size)
    out.metrics["completeness.pairs_exist"] = int(ys.sum())
    out.metrics["completeness.pairs_absent"] = int(ys.size - ys.sum())
    for si, n in enumerate(sizes):
        out.metrics[f"n{n}.completeness.pairs_exist"] = int(ys[:, si].sum())
    cats = np.array([concepts[c].category for c in jidx], dtype=object)
    for cat in sorted(set(cats.tolist())):
        sel = cats == cat
        out.metrics[f"completeness.{cat}.concepts_judged"] = int(sel.sum())
        out.metrics[f"completeness.{cat}.pairs_exist"] = int(ys[sel].sum())
        out.metrics[f"completeness.{cat}.pairs_absent"] = int(ys[sel].size - ys[sel].sum())
    out.summary.update({"pairs_judged": int(ys.size), "pairs_exist": int(ys.sum()),
                        "pairs_absent": int(ys.size - ys.sum())})


def _grids(out: Completeness, concepts: Sequence[TokenizedConcept], freq: np.ndarray, n_occ: np.ndarray,
           jidx: np.ndarray, sizes: Sequence[int], alive: np.ndarray, log_alive: np.ndarray,
           judgements: Mapping[int, Judgement]) -> None:
    """The [J, S] grids x = log10(f * A_n), u = log10 f, y = exists; the ``concept_judgements`` table."""
    J, S = len(jidx), len(sizes)
    out.xs = np.log10(freq[jidx])[:, None] + log_alive[None, :] if J else np.zeros((0, S))
    out.us = np.repeat(np.log10(freq[jidx])[:, None], S, axis=1) if J else np.zeros((0, S))
    out.ys = np.column_stack([judgements[n].exists[jidx] for n in sizes]).astype(float) if J else np.zeros((0, S))
    out.names = [concepts[c].name for c in jidx]
    judgement_rows = []
    for jj, ci in enumerate(jidx):
        for si, n in enumerate(sizes):
            jd = judgements[n]
            judgement_rows.append({"concept": concepts[ci].name, "category": concepts[ci].category, "size": n,
                                   "alive": int(alive[si]), "frequency": float(freq[ci]),
                                   "log10_freq_times_alive": float(out.xs[jj, si]), "eval_occurrences": int(n_occ[ci]),
                                   "best_feature": int(jd.best_feature[ci]), "precision": float(jd.precision[ci]),
                                   "recall": float(jd.recall[ci]), "exists": int(jd.exists[ci])})
    out.tables["concept_judgements"] = judgement_rows


def _shared_curve(out: Completeness, config: Any, x: np.ndarray, y: np.ndarray, J: int,
                  rng: np.random.Generator) -> None:
    """One Firth curve in x over all (concept, size) pairs; its 50% point where estimable, with
    a percentile CI from the bootstrap over concepts where enough resamples give one."""
    fit = fit_logistic(x, y) if J and len(np.unique(x)) >= 2 else None
    problem = ("no concept could be judged" if not J else "all judged points have the same x" if fit is None
               else _x50_problem(fit, x, config.min_events))
    out.metrics["completeness.x50_estimated"] = int(not problem)
    if problem:
        out.summary["x50"] = None
        out.summary["x50_reason"] = problem
        out.notes.append(f"completeness 50% point not estimated: {problem}")
        return
    assert fit is not None
    out.shared = fit
    out.metrics["completeness.x50"] = fit.x50
    out.metrics["completeness.slope"] = fit.slope
    out.metrics["completeness.freq50_times_alive"] = 10.0 ** fit.x50
    out.summary.update(x50=fit.x50, slope=fit.slope, intercept=fit.intercept, freq50_times_alive=10.0 ** fit.x50)
    boot_x50 = _bootstrap_x50(out.xs, out.ys, config.n_bootstrap, config.min_events, rng)
    frac = len(boot_x50) / config.n_bootstrap if config.n_bootstrap else 0.0
    out.metrics["completeness.bootstrap_estimable_fraction"] = frac
    ci_ok = config.n_bootstrap > 0 and frac >= config.min_estimable_fraction and len(boot_x50) >= 2
    out.metrics["completeness.x50_ci_estimated"] = int(ci_ok)
    if ci_ok:
        tail = 100 * (1 - config.ci_level) / 2
        lo, hi = np.percentile(boot_x50, [tail, 100 - tail])
        out.metrics["completeness.x50_ci_low"], out.metrics["completeness.x50_ci_high"] = float(lo), float(hi)
        out.metrics["completeness.freq50_times_alive_ci_low"] = 10.0 ** float(lo)
        out.metrics["completeness.freq50_times_alive_ci_high"] = 10.0 ** float(hi)
        out.summary.update(x50_ci=[float(lo), float(hi)])
    else:
        out.notes.append(f"completeness x50 CI not reported: only {len(boot_x50)} of {config.n_bootstrap} concept "
                         f"resamples gave an estimable 50% point (need {config.min_estimable_fraction:.0%})")


def _bootstrap_x50(xs: np.ndarray, ys: np.ndarray, n_bootstrap: int, min_events: int,
                   rng: np.random.Generator) -> list[float]:
    """Cluster bootstrap over concepts: resample concepts, keep each one's S judgements together;
    the 50% points of the resamples that give one (in range or not)."""
    J = len(xs)
    boot_x50 = []
    for _ in bar(range(n_bootstrap), desc="bootstrap (concepts)"):
        pick = rng.integers(0, J, J)
        bx, by = xs[pick].ravel(), ys[pick].ravel()
        if len(np.unique(bx)) < 2:
            continue
        bf = fit_logistic(bx, by)
        if not _x50_problem(bf, bx, min_events, require_in_range=False):
            boot_x50.append(bf.x50)
    return boot_x50


def _report_collapse(out: Completeness, col: dict[str, Any], sizes: Sequence[int], alive: np.ndarray,
                     J: int) -> None:
    """Metrics, notes, the ``completeness_per_size`` table and the summary of the collapse."""
    out.collapse = col
    out.metrics["completeness.collapse.lr_estimated"] = int(col["lr_estimated"])
    if col["lr_estimated"]:
        for k in ("lr_stat", "lr_df", "lr_pvalue", "lr_stat_unrescaled", "lr_pvalue_unrescaled"):
            out.metrics[f"completeness.collapse.{k}"] = col[k]
    else:
        out.notes.append(f"collapse likelihood-ratio test not run: {col['lr_reason']}")
    out.metrics["completeness.collapse.sizes_with_x50"] = col["sizes_with_x50"]
    out.metrics["completeness.collapse.spread_estimated"] = int(col["spread_estimated"])
    if col["spread_estimated"]:
        out.metrics["completeness.collapse.x50_sd_rescaled"] = col["x50_sd_rescaled"]
        out.metrics["completeness.collapse.x50_sd_unrescaled"] = col["x50_sd_unrescaled"]
        if col["spread_ratio"] is not None:
            out.metrics["completeness.collapse.spread_ratio"] = col["spread_ratio"]
    per_size_rows = []
    for si, n in enumerate(sizes):
        entry = col["per_size"].get(si)
        est = entry is not None and entry["x50"] is not None
        out.metrics[f"n{n}.completeness.x50_estimated"] = int(est)
        if est:
            out.metrics[f"n{n}.completeness.x50"] = entry["x50"]
        per_size_rows.append({"size": n, "alive": int(alive[si]), "pairs": J,
                              "exist": int(out.ys[:, si].sum()) if J else 0,
                              "x50": num(entry["x50"]) if entry else None,
                              "u50_log10_frequency": num(entry["u50"]) if entry else None,
                              "slope": num(entry["fit"].slope) if entry else None,
                              "reason": (entry["problem"] if entry else "fewer than 2 distinct x values")})
    out.tables["completeness_per_size"] = per_size_rows
    out.summary["collapse"] = {k: num(v) if not isinstance(v, str) else v for k, v in col.items() if k != "per_size"}
