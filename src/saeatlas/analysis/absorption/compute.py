"""The absorption analysis of one layer (methods: the package docstring): the first-letter rows and
their split, the gate, one residual probe per letter, then per dictionary size each letter's main
latents and the absorption rule on the probe's true positives, beside a random-direction null."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from saeatlas.analysis.absorption.absorb import MainLatents, absorption, main_fires, main_latents
from saeatlas.analysis.absorption.config import AbsorptionConfig
from saeatlas.analysis.common.first_letter import (GateResult, LetterSplit, first_letter_gate, letter_split,
                                                   read_rows)
from saeatlas.analysis.common.output import AnalysisOutput
from saeatlas.analysis.common.probes import fit_probe
from saeatlas.analysis.common.threads import limit_threads
from saeatlas.codes import csr_from_code
from saeatlas.progress import bar

# Independent random streams, one per purpose, keyed by (seed, purpose, ...).
SPLIT, GATE, NULL, BOOT = range(4)


def stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


@dataclass
class AbsorptionInputs:
    """One layer's held-out split: per row its token and whether it is ordinary; the tokenizer's
    string of every token id; a reader of residual rows; every size's codes and decoder rows."""

    layer: int
    sizes: tuple[int, ...]
    tokens: np.ndarray  # [N] token id of each row
    ordinary: np.ndarray  # [N] bool: False for massive-activation rows (left out)
    strings: Mapping[int, str]  # token id -> the tokenizer's string of it
    # sorted row ids -> their residual rows [len, d], float32, normalised by the store scale
    take: Callable[[np.ndarray], np.ndarray]
    codes: Mapping[int, Any]  # size -> code store: ``indices``, ``values`` [N, width], ``n_latents``
    decoders: Mapping[int, np.ndarray]  # size -> decoder rows [n_latents, d]

    def validate(self) -> int:
        """Check lengths and shapes against each other; return N."""
        n = len(self.tokens)
        if len(self.ordinary) != n:
            raise ValueError(f"ordinary has {len(self.ordinary)} rows, tokens {n}")
        sizes = tuple(self.sizes)
        if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes must be one or more strictly ascending dictionary sizes, got {sizes}")
        for s in sizes:
            c, dec = self.codes.get(s), self.decoders.get(s)
            if c is None or dec is None:
                raise ValueError(f"size {s}: no codes or no decoder given (have codes {sorted(self.codes)}, "
                                 f"decoders {sorted(self.decoders)})")
            if c.indices.shape[0] != n or c.values.shape != c.indices.shape:
                raise ValueError(f"size {s}: codes of shape {c.indices.shape} / {c.values.shape}, expected "
                                 f"[{n}, width] each (rows aligned with the store)")
            if dec.shape[0] != int(c.n_latents):
                raise ValueError(f"size {s}: decoder has {dec.shape[0]} rows, codes {c.n_latents} latents")
        return n


@dataclass
class LetterProbe:
    """One letter's residual probe: its unit direction, the null's direction, and the test rows it
    classifies as the letter correctly (true positives, positions into the test rows)."""

    letter: str
    index: int  # class index in the split
    direction: np.ndarray  # [d] unit
    null_direction: np.ndarray  # [d] unit
    n_test: int  # test rows of the letter
    true_positives: np.ndarray  # positions into the split's test rows


@dataclass
class LetterSize:
    """One letter at one size: its main latents, and the counts the rates are built from."""

    letter: str
    main: MainLatents
    true_positives: int
    false_negatives: int  # probe true positives on which no main latent fires
    absorbed: int
    absorbed_null: int
    top_absorber: int  # the latent that absorbs most of the letter's tokens (-1: none)
    top_absorber_tokens: int
    signal: float  # the letter's mean reconstruction projection on p above the other letters' (decoder units)

    @property
    def rate(self) -> float:
        return self.absorbed / self.true_positives

    @property
    def null_rate(self) -> float:
        return self.absorbed_null / self.true_positives

    @property
    def fn_rate(self) -> float:
        return self.false_negatives / self.true_positives


@dataclass
class AbsorptionResult:
    layer: int
    sizes: tuple[int, ...]
    gate: GateResult
    passes: bool
    split: LetterSplit | None = None
    probes: list[LetterProbe] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # letter -> why it is not measured
    per_size: dict[int, list[LetterSize]] = field(default_factory=dict)


def null_directions(directions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One seeded random unit direction per letter, with the span of the letter directions
    projected out (where d leaves room): the rule run along a direction that is no letter."""
    k, d = directions.shape
    r = rng.standard_normal((k, d))
    if k < d:
        q, _ = np.linalg.qr(directions.T)
        r -= (r @ q) @ q.T
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def letter_probes(config: AbsorptionConfig, split: LetterSplit, x_train: np.ndarray,
                  x_test: np.ndarray) -> tuple[list[LetterProbe], dict[str, str]]:
    """A balanced one-vs-rest probe per letter on the training rows; its direction and true
    positives on the test rows. Letters with fewer than ``min_true_positives`` are skipped."""
    directions, tps, n_test = [], [], []
    for c, _ in enumerate(split.letters):
        probe = fit_probe(x_train, split.y_train == c, config.inverse_l2, config.max_iter, balanced=True)
        directions.append(probe.direction())
        tps.append(np.flatnonzero((split.y_test == c) & probe.predict(x_test).astype(bool)))
        n_test.append(int((split.y_test == c).sum()))
    dirs = np.array(directions)
    nulls = null_directions(dirs, stream(config.seed, NULL))
    probes, skipped = [], {}
    for c, letter in enumerate(split.letters):
        if len(tps[c]) < config.min_true_positives:
            skipped[letter] = (f"{len(tps[c])} probe true positives among {n_test[c]} test rows, fewer than "
                               f"min_true_positives = {config.min_true_positives}")
            continue
        probes.append(LetterProbe(letter, c, dirs[c], nulls[c], n_test[c], tps[c]))
    return probes, skipped


def measure_size(config: AbsorptionConfig, split: LetterSplit, probes: list[LetterProbe], codes: Any,
                 decoder: np.ndarray) -> list[LetterSize]:
    """Every measured letter at one size. Only the first-letter rows' codes are read (sparse)."""
    n = int(codes.n_latents)
    idx_train, val_train = np.asarray(codes.indices[split.rows_train]), np.asarray(codes.values[split.rows_train])
    idx_test, val_test = np.asarray(codes.indices[split.rows_test]), np.asarray(codes.values[split.rows_test])
    train, test = csr_from_code(val_train, idx_train, n), csr_from_code(val_test, idx_test, n)
    dec = np.asarray(decoder, dtype=np.float64)
    norms = np.linalg.norm(dec, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    proj = dec @ np.array([p.direction for p in probes]).T  # [n, letters]
    null_proj = dec @ np.array([p.null_direction for p in probes]).T
    cos, null_cos = proj / safe[:, None], null_proj / safe[:, None]
    out = []
    for j, p in enumerate(probes):
        main = main_latents(train, split.y_train == p.index, test, split.y_test == p.index,
                            split_threshold=config.split_threshold, max_k=config.max_main_latents,
                            c=config.inverse_l2, max_iter=config.max_iter)
        tp = p.true_positives
        silent = tp[~main_fires(idx_test[tp], val_test[tp], main.latents)]
        # the letter's signal along p: mean projection of its training reconstructions minus the
        # other letters' (the same threshold serves the null, so the null asks the same of a random direction)
        recon = np.asarray(train @ proj[:, j]).ravel()
        is_l = split.y_train == p.index
        signal = float(recon[is_l].mean() - recon[~is_l].mean())
        rule = dict(probe_cos=config.probe_cos, share=config.absorption_share, signal=signal)
        real = absorption(idx_test[silent], val_test[silent], proj[:, j], cos[:, j], **rule)
        null = absorption(idx_test[silent], val_test[silent], null_proj[:, j], null_cos[:, j], **rule)
        ids, counts = np.unique(real.absorber[real.absorbed], return_counts=True)
        top = int(ids[counts.argmax()]) if len(ids) else -1
        out.append(LetterSize(p.letter, main, len(tp), len(silent), int(real.absorbed.sum()),
                              int(null.absorbed.sum()), top, int(counts.max()) if len(ids) else 0, signal))
    return out


def run_absorption(config: AbsorptionConfig, inputs: AbsorptionInputs) -> AbsorptionResult:
    """The split and the gate; past the gate the letter probes and every size."""
    split = letter_split(inputs.tokens, inputs.strings, inputs.ordinary, per_letter=config.tokens_per_letter,
                         max_per_token=config.max_per_token, min_per_letter=config.min_tokens_per_letter,
                         train_fraction=config.train_fraction, rng=stream(config.seed, SPLIT),
                         min_key="min_tokens_per_letter")
    sizes = tuple(inputs.sizes)
    if isinstance(split, str):
        return AbsorptionResult(int(inputs.layer), sizes, GateResult(False, split), False)
    x = read_rows(inputs.take, np.r_[split.rows_train, split.rows_test])
    x_train, x_test = x[:len(split.rows_train)], x[len(split.rows_train):]
    gate = first_letter_gate(x_train, split.y_train, x_test, split.y_test, c=config.inverse_l2,
                             max_iter=config.max_iter, ci_level=config.ci_level, rng=stream(config.seed, GATE),
                             letters=split.letters, dropped=split.dropped)
    result = AbsorptionResult(int(inputs.layer), sizes, gate, gate.passes(config.gate_factor), split)
    if not result.passes:
        return result
    result.probes, result.skipped = letter_probes(config, split, x_train, x_test)
    for size in bar(sizes, desc="absorption (sizes)"):
        result.per_size[size] = measure_size(config, split, result.probes, inputs.codes[size],
                                             inputs.decoders[size])
    return result


def run(config: AbsorptionConfig, inputs: AbsorptionInputs, *, blas_threads: int | None = 1) -> AnalysisOutput:
    """Feature absorption on the first-letter task at every size, beside the random-direction null,
    after the first-letter gate.

    Metrics: ``layer``; ``gate.accuracy`` (+ ``_ci_low/high``), ``gate.majority``, ``gate.chance``,
    ``gate.shuffled``, ``gate.letters``, ``gate.passes``; past the gate ``letters`` (measured) and
    ``letters_skipped``; per size ``n<size>.absorption_rate`` (+ ``_ci_low/high``),
    ``n<size>.absorption_rate_null`` (+ CI), ``n<size>.absorption_minus_null`` (+ CI),
    ``n<size>.false_negative_rate`` (+ CI), ``n<size>.main_latent_f1``, ``n<size>.main_latents``,
    ``n<size>.split_letters``; ``largest.*`` repeats the largest size's; ``absorption_rate_change``
    (+ CI): largest minus smallest size, paired over letters; ``config.*``. Tables
    ``summary``, ``letters``; figure ``absorption``; document ``absorption_summary``.

    ``blas_threads`` caps BLAS and OpenMP threads (1 by default: small fits on shared cores);
    None leaves them as they are. The numbers do not depend on it.
    """
    from saeatlas.analysis.absorption.figures import absorption_figure
    from saeatlas.analysis.absorption.results import letters_table, metrics, summary_document, summary_table

    inputs.validate()
    with limit_threads(blas_threads or None, None):
        result = run_absorption(config, inputs)
    return AnalysisOutput(
        metrics=metrics(config, result),
        tables={"summary": summary_table(config, result), "letters": letters_table(result)},
        figures={"absorption": absorption_figure(config, result)},
        documents={"absorption_summary": summary_document(config, result)},
    )
