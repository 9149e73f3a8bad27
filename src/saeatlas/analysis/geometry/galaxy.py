"""The galaxy scale of the feature cloud: its shape (covariance eigenvalue spectrum) and how
clustered it is (negentropy), per dictionary size, beside an isotropic null and the raw
activations. After Li, Michaud, Baek, Engels, Sun, Tegmark 2024, *The Geometry of Concepts:
Sparse Autoencoder Feature Structure* (arXiv:2410.19750; Entropy 27, 344, 2025), section 5.

The cloud. One point per SAE feature: its decoder row, scaled to unit norm (``normalize_rows``;
decoder norms are a parametrisation choice of the trainer, not part of a feature's direction),
all-zero rows dropped, at most ``max_points`` rows (a seeded subsample beyond that). The
activation sample ``[M, d]`` the stage hands in is processed the same way, so the two spectra
differ only in what the points are (unit rows matter there: a handful of massive-norm residual
rows would otherwise own the top eigenvalues).

(1) Shape. ``C = (X - x̄)^T (X - x̄) / (n - 1)`` (centred: ``center``; without centring the
    common mean direction of the features would sit in λ_1 and steepen the fit), eigenvalues
    ``λ_1 ≥ … ≥ λ_d``. Power law ``λ_r ∝ r^(-α)``: ordinary least squares of ``log λ_r`` on
    ``log r`` over the ranks ``rank_min ≤ r ≤ rank_max`` (``saeatlas.analysis.scaling.fit_power_law``,
    the project's one log-log fitter), ``α = -slope``.

    Null: an isotropic Gaussian cloud ``N(0, I_d)`` with the same n and d, processed identically
    (unit rows, centred). Its population spectrum is flat (α = 0), but a finite sample spreads
    the eigenvalues over the Marchenko-Pastur range ``(1 ± √(d/n))²``, so the null has a small
    positive α that grows with d/n: over ranks 1..100 it is ≈ 0.13 at n = 1152, d = 576, and
    ≈ 0.04 at n = 18432. For the paper's setting (n = 16384, d = 2304) the same window gives
    0.0295, which is their "≈ 0.03 for a Gaussian"; hence the default window [1, 100]. The
    same finite-n distortion acts on a real spectrum: unit rows drawn with a planted
    ``λ_r = r^-0.5`` (d = 576) read α = 0.43 at n = 1152 and 0.49 at n = 18432. A trend of α
    with dictionary size is therefore read against the null of each size, not on its own.

    Uncertainty: bootstrap over points (rows drawn with replacement, the spectrum recomputed,
    the slope refitted). A resample holds only ~63% distinct points, which widens the
    Marchenko-Pastur spread and biases every bootstrap slope *up* (El Karoui & Purdom 2018: the
    bootstrap of eigenvalues is not consistent when d/n is not small). As in ``scaling``, the
    bootstrap gives the spread only: CI = estimate ± z·sd(bootstrap); the shift
    (median(bootstrap) - estimate) and the percentile interval are in the ``fits`` table. The
    null and the activations get the same treatment, so their intervals are comparable.

(2) Clustering. Differential entropy by the Kozachenko-Leonenko k-nearest-neighbour estimator
    (Kozachenko & Leonenko 1987; Kraskov, Stögbauer & Grassberger 2004, eq. 20):

        Ĥ = ψ(n) - ψ(k) + log V_D + (D / n) Σ_i log r_i,   V_D = π^(D/2) / Γ(D/2 + 1),

    ``r_i`` the Euclidean distance from point i to its k-th nearest other point, ψ the digamma
    function, D the dimension. Negentropy ``J = H(Gaussian with the same covariance) - H(cloud)``
    ≥ 0, with 0 only for a Gaussian; it is invariant under invertible linear maps, so it measures
    what the spectrum cannot: structure beyond second moments (clusters, lobes, holes).

    Where it is computed, and why: in the top ``entropy_dims`` principal components, whitened
    (scores divided by √λ). Two reasons. (a) The full-dimensional density of unit-norm points
    lives on the sphere S^(d-1): its differential entropy is -∞, so "H(cloud)" in d = 576 is
    not a finite quantity an estimator could converge to; a projection to D << d dimensions
    has a proper density. (b) k-NN estimators need n to grow exponentially with D; with n of
    10³-10⁴, D in the tens is the most that is meaningful. The remaining bias is cancelled, not
    ignored: the Gaussian term is estimated by *the same estimator* on a sample of ``N(0, I_D)``
    of the same n (whitening makes "the same covariance" the identity), so

        J = Ĥ_kNN(N(0, I_D) sample of n points) - Ĥ_kNN(whitened cloud),

    and the closed-form Gaussian entropy ``(D/2) log(2πe) + ½ Σ_{r≤D} log λ_r`` is reported
    beside it, with the estimator's bias on the Gaussian (``entropy_reference_bias``) as a
    diagnostic. The cloud's entropy in its own units is ``Ĥ(whitened) + ½ Σ_{r≤D} log λ_r``.
    Null: the same computation on the isotropic Gaussian cloud of (1) (after unit
    normalisation its projection is not exactly Gaussian, so this null is ≈ 0, not exactly 0).

    Uncertainty: Ĥ is a constant plus the mean of per-point terms ``t_i = D log r_i``; the
    bootstrap resamples terms (cloud and reference independently) with the neighbourhoods
    held fixed, and CI = estimate ± z·sd as above. Refinding neighbours on a resample is not an
    option (a duplicated point has r = 0). One correction makes it honest: a resampled cloud
    would be whitened again, which pins mean ``½||z_i||²`` to ``D(n-1)/(2n)``; so the
    resampled quantity is ``u_i = t_i - ½||z_i||²`` and the pinned part is added back. For a
    Gaussian, ``t_i ≈ const + ½||z_i||² + noise``, and without the correction the interval is
    ~2.3x too wide (measured: bootstrap sd 0.019 vs 0.020 across fresh samples with it, 0.047
    without, n = 1500, D = 4; the tests check the coverage).

    What the estimator gets wrong, measured (D = 10, k = 5, truths from closed forms): it is
    accurate for heavy or Gaussian-like tails (Laplace product 0.69 for a truth of 0.72,
    Student-t(10) 0.12 for 0.09, Gaussian 0.00) and *underestimates* structure on scales
    below the k-NN radius: bounded supports (uniform cube: 0.42 for 1.77) and tight clusters
    (four separated clusters in 2 of 6 dimensions: 1.1 for 1.56). Light-tailed shapes can
    even read slightly negative: unit-normalised anisotropic Gaussian rows (n = 18432,
    d = 576) give -0.03 ± 0.007. Read J as a conservative, comparative number: across sizes
    and layers, and against the null, which goes through the same estimator, the same PCA
    selection and the same normalisation. That selection matters when n is not much larger
    than d (top sample PCs then follow the sample): the null reads -0.18 at n = 256, d = 576,
    and ≈ 0 (±0.05) from n = 1152 on.

What differs from the paper, and what we could not pin down. The reference numbers (slope
≈ 0.47 for Gemma-2-2B's Gemma Scope SAE at layer 12, ≈ 0.03 for a Gaussian) are the ones this
project cites. From the sources we could read we confirmed the qualitative claims: the
eigenvalues of the feature point cloud follow a power law rather than the Wishart
(Marchenko-Pastur) shape, more so than for raw activations, steepest in middle layers; and a
layer-wise "clustering entropy" from a k-nearest-neighbour estimate. Whether their cloud was
centred and unit-normalised, their exact rank window, and how their entropy was normalised
we could not verify; our choices are stated above. The [1, 100] window reproduces their
Gaussian baseline (see (1)), which suggests a window of about that size. We add what the
paper does not report: bootstrap CIs, a same-n isotropic null per size, the bias-cancelling
same-estimator Gaussian reference (negentropy rather than raw entropy), and several
dictionary sizes.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
from scipy import special, stats
from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm

from saeatlas.analysis.config import config_from_section
from saeatlas.analysis.inputs import check_decoders
from saeatlas.analysis.output import AnalysisOutput
from saeatlas.analysis.scaling import PowerLawFit, fit_power_law

# Published reference numbers (Li et al. 2024, Gemma-2-2B, Gemma Scope residual layer 12).
LI2024_SLOPE_LAYER12 = 0.47
LI2024_SLOPE_GAUSSIAN = 0.03

# Independent random streams, one per purpose, keyed by (seed, purpose, cloud, n): a cloud's
# numbers do not depend on which other sizes are analysed, or in which order.
_SUBSAMPLE, _NULL_SAMPLE, _SPECTRUM_BOOT, _REFERENCE, _ENTROPY_BOOT = range(5)
_DECODER, _NULL, _ACTIVATIONS, _ACTIVATIONS_NULL = range(4)
_CONTROLLER: ThreadpoolController | None = None


# ------------------------------------------------------------------------------------------
# Configuration and inputs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GalaxyConfig:
    """Settings of the galaxy analysis (params.yaml section ``galaxy:``, same key names)."""

    # Ranks of the power-law fit (1-based, inclusive). [1, 100] reproduces the paper's Gaussian
    # baseline (α = 0.0295 for an isotropic cloud at n = 16384, d = 2304); at d = 576 it is the
    # top sixth of the spectrum (the paper's window, if it was [1, 100], was the top 4%).
    rank_min: int = 1
    rank_max: int = 100
    # Bootstrap replicates of every CI. The CI is estimate ± z·sd, and 50 replicates pin the sd
    # to about ±10% (relative SE 1/√(2(R-1))). Each replicate recomputes a d x d covariance per
    # cloud: at real scale (five sizes up to 18432, their nulls, 20k activations; 2 shared
    # cores) about 0.6 s per replicate on top of ~14 s for everything else (45 s in all; 200
    # replicates, the paper parameter set, about 2.5 min).
    n_bootstrap: int = 50
    seed: int = 0  # of every subsample, null sample, reference sample and resample
    ci_level: float = 0.95  # two-sided level of every interval
    # Unit-norm rows (decoders and activations alike): directions, not trainer-dependent norms.
    normalize_rows: bool = True
    # Centred covariance (the paper's "eigenvalues of the point cloud" is a covariance spectrum).
    center: bool = True
    # k-th neighbour of the entropy estimator: k = 1 is the original Kozachenko-Leonenko; a few
    # neighbours lower the variance (per-point term variance ψ'(k): 1.64 at k = 1, 0.22 at
    # k = 5) at a bias that the same-estimator Gaussian reference cancels.
    knn_k: int = 5
    # Principal components the entropy is computed in (see the module docstring): with
    # n ≥ 10³ points, k-NN entropy stays usable up to D in the low tens.
    entropy_dims: int = 10
    # Rows per cloud at most (a seeded subsample beyond): bounds the k-NN pass (O(n² D)) and
    # the covariance (O(n d²)); the default keeps every row of the real study (≤ 18432
    # features, a 20k activation sample).
    max_points: int = 20000

    def __post_init__(self) -> None:
        if self.rank_min < 1:
            raise ValueError(f"galaxy.rank_min must be >= 1, got {self.rank_min}")
        if self.rank_max < self.rank_min + 2:
            raise ValueError(f"galaxy.rank_max must be >= galaxy.rank_min + 2 (a line through >= 3 ranks), "
                             f"got rank_min = {self.rank_min}, rank_max = {self.rank_max}")
        if self.n_bootstrap < 0:
            raise ValueError(f"galaxy.n_bootstrap must be >= 0, got {self.n_bootstrap}")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"galaxy.ci_level must be in (0, 1), got {self.ci_level}")
        if self.knn_k < 1:
            raise ValueError(f"galaxy.knn_k must be >= 1, got {self.knn_k}")
        if self.entropy_dims < 1:
            raise ValueError(f"galaxy.entropy_dims must be >= 1, got {self.entropy_dims}")
        if self.max_points < max(self.rank_max + 2, self.entropy_dims + self.knn_k + 2):
            raise ValueError(f"galaxy.max_points must leave room for the fit window and the k-NN estimate "
                             f"(>= {max(self.rank_max + 2, self.entropy_dims + self.knn_k + 2)}), got {self.max_points}")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> "GalaxyConfig":
        """From params.yaml's ``galaxy:`` section (missing keys take the defaults)."""
        return config_from_section(cls, section, "galaxy")


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
        if config.rank_max > d:
            raise ValueError(f"galaxy.rank_max = {config.rank_max} exceeds the width d = {d}")
        if config.entropy_dims >= d:
            raise ValueError(f"galaxy.entropy_dims = {config.entropy_dims} must be < the width d = {d} "
                             "(unit-norm points have no full-dimensional density)")
        return int(d)


# ------------------------------------------------------------------------------------------
# Pieces (pure functions, tested on planted truth)
# ------------------------------------------------------------------------------------------


def _blas_threads(n: int, user_api: str | None = "blas") -> Any:
    """Context limiting BLAS (or, with ``user_api=None``, every thread pool: BLAS and the
    OpenMP of scikit-learn's neighbour search) to ``n`` threads. Why: on cores shared with other processes (the
    default study runs on 2 cores, stages side by side), OpenBLAS threads spin-wait on each
    other. Measured at load ≈ 4 on 2 cores: a 576 x 576 ``eigvalsh`` took 5 s with two threads
    and 0.05 s with one; the whole real-scale ``run`` 147 s with two and 46 s with one (same
    numbers). The controller (a scan of the loaded libraries, ~5 ms) is built once."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n, user_api=user_api)


def _eigen_threads() -> Any:
    """One BLAS thread for the d x d eigen-decompositions, whoever calls them (LAPACK's
    tridiagonalisation is a chain of small level-2 steps: threads only add synchronisation)."""
    return _blas_threads(1)


def _rng(seed: int, purpose: int, cloud: int, n: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, cloud, n]))


def prepare_cloud(x: np.ndarray, normalize_rows: bool, max_points: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, int]:
    """Rows as float32 points: all-zero rows dropped (a zero decoder row is no direction), a
    seeded subsample of ``max_points`` rows if there are more, rows scaled to unit norm if
    asked. Returns (points, number of zero rows dropped)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("cloud has non-finite entries")
    norms = np.linalg.norm(x, axis=1)
    keep = norms > 0
    dropped = int((~keep).sum())
    x, norms = x[keep], norms[keep]
    if len(x) > max_points:
        pick = np.sort(rng.choice(len(x), max_points, replace=False))
        x, norms = x[pick], norms[pick]
    if normalize_rows:
        x = x / norms[:, None]
    return np.ascontiguousarray(x), dropped


def covariance_spectrum(x: np.ndarray, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigen-decomposition of the cloud's covariance, in float64.

    ``C = (X - x̄)^T (X - x̄) / (n - 1)`` if ``center`` else ``X^T X / n`` (second moments).
    Returns (eigenvalues descending [d], eigenvectors as columns [d, d], the centre [d]).
    Tiny negative round-off eigenvalues are clipped to 0.
    """
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0) if center else np.zeros(x64.shape[1])
    xc = x64 - mean
    cov = xc.T @ xc / (len(x64) - 1 if center else len(x64))
    with _eigen_threads():
        vals, vecs = np.linalg.eigh(cov)
    return np.clip(vals[::-1], 0.0, None), vecs[:, ::-1], mean


def bootstrap_spectra(x: np.ndarray, n_boot: int, rng: np.random.Generator, center: bool = True,
                      top: int | None = None, progress: bool = False, desc: str = "bootstrap spectra") -> np.ndarray:
    """Eigenvalues (descending, the first ``top``) of the covariance of ``n_boot`` resamples
    of the rows drawn with replacement: ``[n_boot, top]``.

    A resample is represented by its multiplicities ``c_i`` (how often row i was drawn), so
    ``Σ_i c_i (x_i - m)(x_i - m)^T = Y^T Y - n m m^T`` with ``Y = √c ⊙ X`` over the ~63% rows
    drawn at least once, ``m = Σ c_i x_i / n``: one float32 product of the drawn rows per
    replicate, in rows centred on the full-sample mean first (so the subtraction loses nothing).
    """
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    top = d if top is None else top
    xc = x - x.mean(axis=0, dtype=np.float64).astype(np.float32) if center else x
    out = np.empty((n_boot, top))
    for b in tqdm(range(n_boot), desc=desc, disable=not progress, mininterval=5, leave=False):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        drawn = np.flatnonzero(counts)
        root = np.sqrt(counts[drawn].astype(np.float32))
        y = xc[drawn]
        y *= root[:, None]
        second = (y.T @ y).astype(np.float64)  # NumPy hands A.T @ A to BLAS syrk
        if center:
            m = (root @ y).astype(np.float64) / n  # Σ c_i x_i = Σ √c_i (√c_i x_i)
            cov = (second - n * np.outer(m, m)) / (n - 1)
        else:
            cov = second / n
        with _eigen_threads():
            out[b] = np.linalg.eigvalsh(cov)[::-1][:top]
    return out


@dataclass
class SlopeFit:
    """α of ``λ_r ∝ r^(-α)`` over the window, with its bootstrap spread (see the module doc)."""

    estimated: bool
    reason: str = ""
    alpha: float | None = None
    log10_prefactor: float | None = None  # log10 λ at r = 1 on the fitted line
    r2: float | None = None
    se_fit: float | None = None  # OLS standard error (misfit of a straight line over the window)
    ci_low: float | None = None
    ci_high: float | None = None
    percentile_low: float | None = None
    percentile_high: float | None = None
    bootstrap_sd: float | None = None
    bootstrap_shift: float | None = None  # median(bootstrap α) - α: the resampling bias
    bootstrap_used: int = 0


def fit_spectrum_slope(eigenvalues: np.ndarray, rank_min: int, rank_max: int, boot: np.ndarray | None = None,
                       ci_level: float = 0.95) -> SlopeFit:
    """OLS of log λ_r on log r over ``rank_min ≤ r ≤ rank_max`` (1-based); α = -slope.

    ``boot`` [R, ≥ rank_max] are bootstrap spectra (descending); each is refitted over the same
    window. Uses ``scaling.fit_power_law`` (same OLS, same estimate ± z·sd interval) and turns
    its exponent around: a spectrum falling as r^(-α) has exponent -α.
    """
    ranks = np.arange(rank_min, rank_max + 1)
    vals = np.asarray(eigenvalues, dtype=np.float64)[rank_min - 1:rank_max]
    if len(vals) < len(ranks):
        return SlopeFit(False, f"only {len(vals)} eigenvalues, window needs ranks {rank_min}..{rank_max}")
    floor = 1e-12 * float(np.max(eigenvalues))
    if not np.all(vals > floor):
        return SlopeFit(False, f"eigenvalues in ranks {rank_min}..{rank_max} reach zero (rank-deficient cloud)")
    b = None if boot is None else np.asarray(boot, dtype=np.float64)[:, rank_min - 1:rank_max]
    if b is not None:
        b = np.where(b > floor, b, np.nan)  # a rank-deficient resample is dropped by fit_power_law
    fit: PowerLawFit = fit_power_law("eigenvalue", ranks.tolist(), vals, b, ci_level)
    if not fit.estimated:
        return SlopeFit(False, fit.reason)
    neg = (lambda v: None if v is None else -float(v))
    return SlopeFit(True, alpha=-float(fit.exponent), log10_prefactor=math.log10(fit.prefactor), r2=fit.r2,
                    se_fit=fit.se_fit, ci_low=neg(fit.ci_high), ci_high=neg(fit.ci_low),
                    percentile_low=neg(fit.percentile_high), percentile_high=neg(fit.percentile_low),
                    bootstrap_sd=fit.bootstrap_sd,
                    bootstrap_shift=None if fit.bootstrap_shift is None else -float(fit.bootstrap_shift),
                    bootstrap_used=fit.bootstrap_used)


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """Effective dimension ``(Σ λ)² / Σ λ²``: d for an isotropic cloud, 1 for a line."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return float(lam.sum() ** 2 / (lam ** 2).sum())


def knn_entropy_terms(y: np.ndarray, k: int) -> tuple[np.ndarray, float, int]:
    """Per-point terms and constant of the Kozachenko-Leonenko estimator:
    ``Ĥ = const + mean(terms)``, ``terms_i = D log r_i``, ``const = ψ(n) - ψ(k) + log V_D``,
    ``V_D = π^(D/2) / Γ(D/2 + 1)`` the volume of the unit D-ball (Euclidean distances).

    ``r_i`` = distance to the k-th nearest *other* point, by exact brute-force search (sklearn,
    chunked BLAS): KD-trees gain nothing beyond ~10 dimensions. A duplicate point has r = 0;
    it is floored at 1e-12 of the median distance and counted (returned third).
    """
    from sklearn.neighbors import NearestNeighbors

    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, dim = y.shape
    if n <= k:
        raise ValueError(f"k-NN entropy needs more than k = {k} points, got {n}")
    dist, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(y).kneighbors(y)
    # Column 0 is the point itself (distance 0) unless it has exact duplicates; in both cases the
    # (k+1)-th smallest distance to the whole set is the k-th smallest to the other points.
    r = dist[:, k]
    floor = 1e-12 * max(float(np.median(r)), 1e-300)
    zeros = int((r <= floor).sum())
    terms = dim * np.log(np.maximum(r, floor))
    log_unit_ball = 0.5 * dim * math.log(math.pi) - special.gammaln(0.5 * dim + 1.0)
    const = float(special.digamma(n) - special.digamma(k) + log_unit_ball)
    return terms, const, zeros


def knn_entropy(y: np.ndarray, k: int = 5) -> float:
    """Kozachenko-Leonenko differential entropy estimate (nats) of the sample ``y`` [n, D]."""
    terms, const, _ = knn_entropy_terms(y, k)
    return const + float(terms.mean())


def gaussian_entropy(eigenvalues: np.ndarray) -> float:
    """Closed form ``H = (D/2) log(2πe) + ½ Σ log λ_i`` of a Gaussian with covariance spectrum λ."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return float(0.5 * len(lam) * math.log(2 * math.pi * math.e) + 0.5 * np.log(lam).sum())


def _spread_ci(estimate: float, boot: np.ndarray, ci_level: float) -> dict[str, float]:
    """estimate ± z·sd(boot), with the percentile interval and the shift beside it."""
    boot = np.asarray(boot, dtype=np.float64)
    boot = boot[np.isfinite(boot)]
    if len(boot) < 2:
        return {}
    z = float(stats.norm.ppf(0.5 + ci_level / 2))
    sd = float(boot.std(ddof=1))
    tail = 100 * (1 - ci_level) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return {"ci_low": estimate - z * sd, "ci_high": estimate + z * sd, "bootstrap_sd": sd,
            "percentile_low": float(lo), "percentile_high": float(hi),
            "bootstrap_shift": float(np.median(boot) - estimate)}


@dataclass
class EntropyResult:
    """Clustering (neg)entropy of one cloud in its top-D whitened principal components."""

    estimated: bool
    reason: str = ""
    dims: int = 0
    negentropy: float | None = None  # Ĥ_kNN(N(0, I_D) sample) - Ĥ_kNN(whitened cloud), nats
    entropy: float | None = None  # Ĥ_kNN of the cloud in its own units (top-D PC scores)
    entropy_gaussian: float | None = None  # closed form, same covariance (top-D eigenvalues)
    entropy_reference_bias: float | None = None  # Ĥ_kNN(N(0, I_D) sample) - closed form: the cancelled bias
    negentropy_closed_form: float | None = None  # closed form - Ĥ_kNN(cloud): J without bias cancellation
    variance_fraction: float | None = None  # share of the total variance in the D components
    zero_distances: int = 0
    ci: dict[str, float] = field(default_factory=dict)  # negentropy CI (see _spread_ci)


def whiten(z: np.ndarray) -> np.ndarray:
    """Centre and whiten by the sample's own covariance: ``(z - z̄) U Λ^(-1/2)``."""
    lam, vecs, mean = covariance_spectrum(z, center=True)
    return (np.asarray(z, dtype=np.float64) - mean) @ vecs / np.sqrt(lam)


def reference_terms(n: int, dims: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """k-NN terms of an ``N(0, I_D)`` sample of n points, whitened by its own sample covariance
    exactly as the cloud is: the bias-cancelling reference. (Without that step the cloud, whose
    sample covariance is made exactly I, would look slightly more spread than the reference,
    whose sample covariance only approximates I: a negentropy bias of about -0.03 nats at
    n = 2000, D = 10.)"""
    z = whiten(rng.standard_normal((n, dims)))
    terms, const, _ = knn_entropy_terms(z, k)
    return terms, const, np.einsum("ij,ij->i", z, z)


def clustering_negentropy(x: np.ndarray, eigenvalues: np.ndarray, eigenvectors: np.ndarray, mean: np.ndarray,
                          dims: int, k: int, reference: tuple[np.ndarray, float, np.ndarray], n_boot: int,
                          rng: np.random.Generator, ci_level: float) -> EntropyResult:
    """Negentropy of the cloud ``x`` in its top ``dims`` principal components (module doc, (2)).

    ``eigenvalues``/``eigenvectors``/``mean`` are the cloud's covariance decomposition
    (``covariance_spectrum``); ``reference`` = ``reference_terms(n, dims, k, ·)`` for the same n.
    Whitened scores ``z = (x - x̄) U_D / √λ_D`` have identity covariance, so the Gaussian with the
    same covariance is ``N(0, I_D)``. Bootstrap: the per-point terms of the cloud and of the
    reference are resampled independently (neighbourhoods fixed), ``n_boot`` times, each as
    ``u_i = t_i - ½||z_i||²`` with the whitening-pinned mean of ``½||z_i||²`` added back
    (module doc, (2)).
    """
    n = len(x)
    lam = np.asarray(eigenvalues[:dims], dtype=np.float64)
    if n <= max(dims + 1, k + 1):
        return EntropyResult(False, f"{n} points are too few for a k-NN entropy in {dims} dimensions (k = {k})")
    if not np.all(lam > 1e-12 * float(eigenvalues[0])):
        return EntropyResult(False, f"the top {dims} principal components include a zero-variance direction")
    z = (np.asarray(x, dtype=np.float64) - mean) @ eigenvectors[:, :dims] / np.sqrt(lam)
    terms, const, zeros = knn_entropy_terms(z, k)
    ref_terms, ref_const, ref_z2 = reference
    if len(ref_terms) != n:
        raise ValueError(f"reference has {len(ref_terms)} points, cloud {n}: the bias cancels only at equal n")
    h_white = const + float(terms.mean())
    h_ref = ref_const + float(ref_terms.mean())
    half_logdet = 0.5 * float(np.log(lam).sum())
    h_gauss_white = gaussian_entropy(np.ones(dims))
    neg = h_ref - h_white
    boot = np.empty(0)
    if n_boot:
        z2 = np.einsum("ij,ij->i", z, z)
        u_cloud, u_ref = terms - 0.5 * z2, ref_terms - 0.5 * ref_z2
        h_cloud_b = const + 0.5 * z2.mean() + u_cloud[rng.integers(0, n, (n_boot, n))].mean(axis=1)
        h_ref_b = ref_const + 0.5 * ref_z2.mean() + u_ref[rng.integers(0, n, (n_boot, n))].mean(axis=1)
        boot = h_ref_b - h_cloud_b
    total = float(np.asarray(eigenvalues, dtype=np.float64).sum())
    return EntropyResult(
        True, dims=dims, negentropy=neg, entropy=h_white + half_logdet,
        entropy_gaussian=h_gauss_white + half_logdet, entropy_reference_bias=h_ref - h_gauss_white,
        negentropy_closed_form=h_gauss_white - h_white, variance_fraction=float(lam.sum() / total) if total > 0 else None,
        zero_distances=zeros, ci=_spread_ci(neg, boot, ci_level) if n_boot else {})


# ------------------------------------------------------------------------------------------
# One cloud, end to end
# ------------------------------------------------------------------------------------------


@dataclass
class CloudResult:
    name: str  # "decoder", "gaussian" (the null), "activations", "activations_gaussian"
    size: int  # dictionary size (0 for the activations and their null)
    n_points: int
    zero_rows: int
    eigenvalues: np.ndarray
    fit: SlopeFit
    entropy: EntropyResult
    participation_ratio: float


def analyse_cloud(name: str, size: int, points: np.ndarray, zero_rows: int, config: GalaxyConfig, cloud: int,
                  references: dict[int, tuple[np.ndarray, float, np.ndarray]], progress: bool = False) -> CloudResult:
    """Spectrum, slope with bootstrap CI, and clustering negentropy of one prepared cloud."""
    n = len(points)
    lam, vecs, mean = covariance_spectrum(points, config.center)
    boot = None
    if config.n_bootstrap:
        boot = bootstrap_spectra(points, config.n_bootstrap, _rng(config.seed, _SPECTRUM_BOOT, cloud, n),
                                 config.center, top=config.rank_max, progress=progress,
                                 desc=f"bootstrap spectra ({name} {size or ''})")
    fit = fit_spectrum_slope(lam, config.rank_min, config.rank_max, boot, config.ci_level)
    # Negentropy compares with the Gaussian of the same mean and covariance: always centred.
    lam_c, vecs_c, mean_c = (lam, vecs, mean) if config.center else covariance_spectrum(points, True)
    if n not in references and n > max(config.entropy_dims + 1, config.knn_k + 1):
        references[n] = reference_terms(n, config.entropy_dims, config.knn_k,
                                        _rng(config.seed, _REFERENCE, 0, n))
    ent = (clustering_negentropy(points, lam_c, vecs_c, mean_c, config.entropy_dims, config.knn_k, references[n],
                                 config.n_bootstrap, _rng(config.seed, _ENTROPY_BOOT, cloud, n), config.ci_level)
           if n in references else
           EntropyResult(False, f"{n} points are too few for a k-NN entropy in {config.entropy_dims} dimensions"))
    return CloudResult(name, size, n, zero_rows, lam, fit, ent, participation_ratio(lam))


def gaussian_null_cloud(n: int, d: int, config: GalaxyConfig, cloud: int) -> np.ndarray:
    """``N(0, I_d)`` sample of n rows, prepared exactly like the real cloud."""
    g = _rng(config.seed, _NULL_SAMPLE, cloud, n).standard_normal((n, d)).astype(np.float32)
    points, _ = prepare_cloud(g, config.normalize_rows, config.max_points, _rng(config.seed, _SUBSAMPLE, cloud, n))
    return points


# ------------------------------------------------------------------------------------------
# Metrics, tables, figures
# ------------------------------------------------------------------------------------------


def _cloud_metrics(prefix: str, res: CloudResult, null: CloudResult) -> dict[str, float]:
    """``<prefix>.<quantity>[_gaussian][_<statistic>]`` for one cloud and its isotropic null,
    e.g. ``n18432.slope``, ``n18432.slope_ci_low``, ``n18432.slope_gaussian``,
    ``n18432.slope_gaussian_ci_low``. Undefined numbers are left out (JSON has no NaN); the
    ``*_estimated`` flags say which."""
    out: dict[str, float] = {f"{prefix}.n_points": res.n_points, f"{prefix}.zero_rows": res.zero_rows}
    for g, r in (("", res), ("_gaussian", null)):
        f, e = r.fit, r.entropy
        slope, neg = f"{prefix}.slope{g}", f"{prefix}.negentropy{g}"
        out[f"{prefix}.participation_ratio{g}"] = r.participation_ratio
        out[slope + "_estimated"] = int(f.estimated)
        if f.estimated:
            out[slope], out[slope + "_r2"] = f.alpha, f.r2
            if f.se_fit is not None:
                out[slope + "_se_fit"] = f.se_fit
            if f.ci_low is not None:
                out[slope + "_ci_low"], out[slope + "_ci_high"] = f.ci_low, f.ci_high
                out[slope + "_bootstrap_shift"] = f.bootstrap_shift
        out[neg + "_estimated"] = int(e.estimated)
        if e.estimated:
            out[neg] = e.negentropy
            if e.ci:
                out[neg + "_ci_low"], out[neg + "_ci_high"] = e.ci["ci_low"], e.ci["ci_high"]
    e = res.entropy
    if e.estimated:  # the real cloud's entropy on its own scale, and the diagnostics of (2)
        out[f"{prefix}.entropy"] = e.entropy
        out[f"{prefix}.entropy_closed_form"] = e.entropy_gaussian
        out[f"{prefix}.entropy_reference_bias"] = e.entropy_reference_bias
        if e.variance_fraction is not None:
            out[f"{prefix}.entropy_dims_variance_fraction"] = e.variance_fraction
    return {k: v for k, v in out.items() if v is not None and math.isfinite(v)}


def _fit_row(res: CloudResult, layer: int) -> dict[str, Any]:
    f, e = res.fit, res.entropy
    return {"layer": layer, "cloud": res.name, "size": res.size, "n_points": res.n_points,
            "slope": f.alpha, "slope_ci_low": f.ci_low, "slope_ci_high": f.ci_high,
            "slope_percentile_low": f.percentile_low, "slope_percentile_high": f.percentile_high,
            "slope_bootstrap_sd": f.bootstrap_sd, "slope_bootstrap_shift": f.bootstrap_shift,
            "slope_bootstrap_used": f.bootstrap_used, "slope_r2": f.r2, "slope_se_fit": f.se_fit,
            "log10_prefactor": f.log10_prefactor, "slope_reason": f.reason,
            "participation_ratio": res.participation_ratio,
            "negentropy": e.negentropy, "negentropy_ci_low": e.ci.get("ci_low"),
            "negentropy_ci_high": e.ci.get("ci_high"), "negentropy_percentile_low": e.ci.get("percentile_low"),
            "negentropy_percentile_high": e.ci.get("percentile_high"),
            "negentropy_bootstrap_sd": e.ci.get("bootstrap_sd"), "negentropy_closed_form": e.negentropy_closed_form,
            "entropy": e.entropy, "entropy_gaussian_closed_form": e.entropy_gaussian,
            "entropy_reference_bias": e.entropy_reference_bias, "entropy_dims": e.dims,
            "entropy_dims_variance_fraction": e.variance_fraction, "zero_distances": e.zero_distances,
            "entropy_reason": e.reason}


def _clean(v: Any) -> Any:
    """Plain Python values for tables and documents; None for missing or non-finite numbers."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


def _size_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _fit_line(f: SlopeFit, config: GalaxyConfig) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([config.rank_min, config.rank_max], dtype=float)
    return r, 10.0 ** f.log10_prefactor * r ** (-f.alpha)


def _figure(layer: int, pairs: list[tuple[CloudResult, CloudResult]], act: tuple[CloudResult, CloudResult],
            config: GalaxyConfig) -> Any:
    """Left: log-log spectra (sizes, their nulls dotted, activations black), fit window shaded,
    fitted lines dashed. Middle: α per size with CI, null and activations beside. Right:
    negentropy per size with CI, null beside."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    ax, ax2, ax3 = fig.subplots(1, 3)
    colors = _size_colors(len(pairs))
    for (res, null), color in zip(pairs, colors):
        ranks = np.arange(1, len(res.eigenvalues) + 1)
        pos = res.eigenvalues > 0
        ax.loglog(ranks[pos], res.eigenvalues[pos], color=color, lw=1.2, label=f"n = {res.size}")
        ax.loglog(ranks[null.eigenvalues > 0], null.eigenvalues[null.eigenvalues > 0], ":", color=color, lw=0.9)
        if res.fit.estimated:
            ax.loglog(*_fit_line(res.fit, config), "--", color="k", lw=0.8)
    ares, anull = act
    pos = ares.eigenvalues > 0
    ax.loglog(np.arange(1, len(ares.eigenvalues) + 1)[pos], ares.eigenvalues[pos], color="k", lw=1.5,
              label="activations")
    if ares.fit.estimated:
        ax.loglog(*_fit_line(ares.fit, config), "--", color="grey", lw=0.8)
    ax.axvspan(config.rank_min, config.rank_max, color="grey", alpha=0.12, label="fit window")
    ax.plot([], [], ":", color="grey", label="isotropic Gaussian (same n)")
    ax.set_xlabel("rank r")
    ax.set_ylabel("covariance eigenvalue λ_r")
    ax.set_title(f"layer {layer}: eigenvalue spectrum of the cloud")
    ax.legend(fontsize=7)

    x = np.arange(len(pairs))
    labels = [str(r.size) for r, _ in pairs]

    def bars(axis: Any, get: Any, ci: Any, offset: float, color: Any, label: str) -> None:
        vals, lows, highs, xs = [], [], [], []
        for i, pair in enumerate(pairs):
            v, (lo, hi) = get(pair), ci(pair)
            if v is None:
                continue
            xs.append(i + offset)
            vals.append(v)
            lows.append(v - lo if lo is not None else 0.0)
            highs.append(hi - v if hi is not None else 0.0)
        if vals:
            axis.errorbar(xs, vals, yerr=[lows, highs], fmt="o", color=color, capsize=3, label=label)

    bars(ax2, lambda p: p[0].fit.alpha, lambda p: (p[0].fit.ci_low, p[0].fit.ci_high), -0.1, "C0", "SAE decoders")
    bars(ax2, lambda p: p[1].fit.alpha, lambda p: (p[1].fit.ci_low, p[1].fit.ci_high), 0.1, "grey",
         "isotropic Gaussian")
    if ares.fit.estimated:
        ax2.axhline(ares.fit.alpha, color="k", lw=1, label=f"activations ({ares.fit.alpha:.3f})")
        if ares.fit.ci_low is not None:
            ax2.axhspan(ares.fit.ci_low, ares.fit.ci_high, color="k", alpha=0.08)
    ax2.axhline(LI2024_SLOPE_LAYER12, color="C3", ls="--", lw=0.8, label="Li et al. 2024, Gemma layer 12")
    ax2.axhline(LI2024_SLOPE_GAUSSIAN, color="C3", ls=":", lw=0.8, label="Li et al. 2024, Gaussian")
    ax2.set_xticks(x, labels)
    ax2.set_xlabel("dictionary size")
    ax2.set_ylabel(f"power-law slope α (ranks {config.rank_min}-{config.rank_max})")
    ax2.set_title("slope of the spectrum")
    ax2.legend(fontsize=7)

    bars(ax3, lambda p: p[0].entropy.negentropy, lambda p: (p[0].entropy.ci.get("ci_low"), p[0].entropy.ci.get("ci_high")),
         -0.1, "C2", "SAE decoders")
    bars(ax3, lambda p: p[1].entropy.negentropy, lambda p: (p[1].entropy.ci.get("ci_low"), p[1].entropy.ci.get("ci_high")),
         0.1, "grey", "isotropic Gaussian")
    if ares.entropy.estimated:
        ax3.axhline(ares.entropy.negentropy, color="k", lw=1, label=f"activations ({ares.entropy.negentropy:.3f})")
    ax3.axhline(0.0, color="grey", lw=0.6)
    ax3.set_xticks(x, labels)
    ax3.set_xlabel("dictionary size")
    ax3.set_ylabel(f"negentropy (nats, top {config.entropy_dims} PCs, whitened)")
    ax3.set_title("clustering: distance from a Gaussian")
    ax3.legend(fontsize=7)
    return fig


def _plotly(layer: int, pairs: list[tuple[CloudResult, CloudResult]], act: tuple[CloudResult, CloudResult],
            config: GalaxyConfig) -> dict[str, Any]:
    import plotly.graph_objects as go
    from matplotlib.colors import to_hex

    traces = []
    colors = [to_hex(c) for c in _size_colors(len(pairs))]

    def line(res: CloudResult, name: str, color: str, dash: str, width: float, group: str) -> None:
        pos = res.eigenvalues > 0
        ranks = np.arange(1, len(res.eigenvalues) + 1)[pos]
        slope = f"α = {res.fit.alpha:.3f}" if res.fit.estimated else "no fit"
        traces.append(go.Scatter(x=ranks.tolist(), y=res.eigenvalues[pos].tolist(), mode="lines", name=name,
                                 legendgroup=group, line={"color": color, "dash": dash, "width": width},
                                 hovertemplate=f"{name}<br>rank %{{x}}<br>λ = %{{y:.4g}}<br>{slope}<extra></extra>"))
        if res.fit.estimated:
            r, v = _fit_line(res.fit, config)
            traces.append(go.Scatter(x=r.tolist(), y=v.tolist(), mode="lines", legendgroup=group, showlegend=False,
                                     line={"color": "black", "dash": "dash", "width": 1}, name=f"fit {name}",
                                     hovertemplate=f"fit {name}: {slope}<extra></extra>"))

    for (res, null), color in zip(pairs, colors):
        line(res, f"n = {res.size}", color, "solid", 2, f"n{res.size}")
        line(null, f"Gaussian, n = {res.size}", color, "dot", 1, f"n{res.size}")
    line(act[0], "activations", "black", "solid", 2.5, "act")
    line(act[1], "Gaussian, activations' n", "black", "dot", 1, "act")
    fig = go.Figure(data=traces)
    fig.add_vrect(x0=config.rank_min, x1=config.rank_max, fillcolor="grey", opacity=0.12, line_width=0,
                  annotation_text="fit window", annotation_position="top left")
    fig.update_layout(title=f"Layer {layer}: covariance eigenvalue spectra of the SAE decoder clouds "
                            f"(unit rows, centred) vs isotropic Gaussian and activations",
                      xaxis={"title": "rank r", "type": "log"}, yaxis={"title": "eigenvalue λ_r", "type": "log"})
    return fig.to_plotly_json()


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


def run(config: GalaxyConfig, inputs: GalaxyInputs, *, progress: bool = True,
        blas_threads: int | None = 1) -> AnalysisOutput:
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
    ``zero_rows``; ``largest.*`` repeats the largest size's headline numbers; ``config.*`` echoes the window and entropy settings; ``reference.*`` the
    published numbers. Tables ``spectra`` and ``fits``; figure ``galaxy_spectrum``; interactive
    ``galaxy_spectrum``; document ``galaxy_summary``.

    ``blas_threads`` (not a parameter of the analysis: the numbers do not depend on it) caps
    the BLAS and OpenMP threads of the whole run, 1 by default (see ``_blas_threads``); None
    leaves them as they are.
    """
    d = inputs.validate(config)
    with (_blas_threads(blas_threads, None) if blas_threads else contextlib.nullcontext()):
        return _run(config, inputs, d, progress)


def _run(config: GalaxyConfig, inputs: GalaxyInputs, d: int, progress: bool) -> AnalysisOutput:
    """The body of ``run``, with the BLAS thread cap in place."""
    sizes = tuple(int(s) for s in inputs.sizes)
    references: dict[int, tuple[np.ndarray, float, np.ndarray]] = {}
    pairs: list[tuple[CloudResult, CloudResult]] = []
    for s in tqdm(sizes, desc="galaxy (sizes)", disable=not progress, leave=False):
        pts, zero = prepare_cloud(inputs.decoders[s], config.normalize_rows, config.max_points,
                                  _rng(config.seed, _SUBSAMPLE, _DECODER, s))
        res = analyse_cloud("decoder", s, pts, zero, config, _DECODER, references, progress)
        null_pts = gaussian_null_cloud(len(pts), d, config, _NULL)
        null = analyse_cloud("gaussian", s, null_pts, 0, config, _NULL, references, progress)
        pairs.append((res, null))
    act_pts, act_zero = prepare_cloud(inputs.activations, config.normalize_rows, config.max_points,
                                      _rng(config.seed, _SUBSAMPLE, _ACTIVATIONS, len(inputs.activations)))
    act = analyse_cloud("activations", 0, act_pts, act_zero, config, _ACTIVATIONS, references, progress)
    act_null = analyse_cloud("activations_gaussian", 0, gaussian_null_cloud(len(act_pts), d, config, _ACTIVATIONS_NULL),
                             0, config, _ACTIVATIONS_NULL, references, progress)

    metrics: dict[str, float] = {"layer": int(inputs.layer), "d": d}
    for res, null in pairs:
        metrics.update(_cloud_metrics(f"n{res.size}", res, null))
    metrics.update(_cloud_metrics("activations", act, act_null))
    largest = sizes[-1]
    metrics["largest.size"] = largest
    for key in ("slope", "slope_ci_low", "slope_ci_high", "slope_gaussian", "slope_gaussian_ci_low",
                "slope_gaussian_ci_high", "negentropy", "negentropy_ci_low", "negentropy_ci_high",
                "negentropy_gaussian", "negentropy_gaussian_ci_low", "negentropy_gaussian_ci_high",
                "participation_ratio", "participation_ratio_gaussian"):
        if f"n{largest}.{key}" in metrics:
            metrics[f"largest.{key}"] = metrics[f"n{largest}.{key}"]
    metrics.update({"config.rank_min": config.rank_min, "config.rank_max": config.rank_max,
                    "config.entropy_dims": config.entropy_dims, "config.knn_k": config.knn_k,
                    "config.n_bootstrap": config.n_bootstrap,
                    "reference.li2024_slope_layer12": LI2024_SLOPE_LAYER12,
                    "reference.li2024_slope_gaussian": LI2024_SLOPE_GAUSSIAN})

    spectra = []
    for res, null in pairs:
        for r in range(d):
            spectra.append({"layer": int(inputs.layer), "size": res.size, "rank": r + 1,
                            "eigenvalue": _clean(res.eigenvalues[r]), "eigenvalue_gaussian": _clean(null.eigenvalues[r]),
                            "eigenvalue_activations": _clean(act.eigenvalues[r]),
                            "eigenvalue_activations_gaussian": _clean(act_null.eigenvalues[r]),
                            "in_fit_window": int(config.rank_min <= r + 1 <= config.rank_max)})
    fits = [{k: _clean(v) for k, v in _fit_row(c, int(inputs.layer)).items()}
            for pair in [*pairs, (act, act_null)] for c in pair]

    clouds = [c for pair in [*pairs, (act, act_null)] for c in pair]
    label = (lambda c: f"{c.name} n = {c.size}" if c.size else c.name)
    notes = [f"{label(c)}: slope not fitted: {c.fit.reason}" for c in clouds if not c.fit.estimated]
    notes += [f"{label(c)}: negentropy not estimated: {c.entropy.reason}" for c in clouds if not c.entropy.estimated]
    summary = {
        "layer": int(inputs.layer), "d": d, "sizes": list(sizes), "config": asdict(config), "fits": fits,
        "notes": notes,
        "methods": {
            "cloud": ("decoder rows" + (", unit-normalised" if config.normalize_rows else "") + ", zero rows dropped, "
                      f"at most {config.max_points} rows (seeded subsample); activations processed the same way"),
            "spectrum": ("eigenvalues of the " + ("centred covariance" if config.center else "second-moment matrix")
                         + " of the cloud"),
            "slope": (f"alpha = -slope of the OLS line of log eigenvalue on log rank, ranks {config.rank_min}.."
                      f"{config.rank_max}"),
            "slope_ci": (f"bootstrap over points ({config.n_bootstrap} resamples): estimate -+ z sd; the bootstrap "
                         "widens the Marchenko-Pastur spread, so its shift is reported, not used"),
            "null": "isotropic Gaussian N(0, I_d), same n and d, processed identically",
            "entropy": (f"Kozachenko-Leonenko k-NN estimator (k = {config.knn_k}) in the top {config.entropy_dims} "
                        "whitened principal components"),
            "negentropy": ("H_kNN(N(0, I_D) sample of the same n) - H_kNN(whitened cloud): the estimator's bias "
                           "cancels; the closed-form Gaussian entropy is reported beside it"),
            "negentropy_ci": ("bootstrap of the per-point k-NN terms (neighbourhoods fixed) minus 0.5 ||z||^2, whose "
                              "mean whitening pins: estimate -+ z sd"),
        },
        "reference": {"li2024_slope_layer12": LI2024_SLOPE_LAYER12, "li2024_slope_gaussian": LI2024_SLOPE_GAUSSIAN,
                      "source": "Li, Michaud, Baek, Engels, Sun, Tegmark 2024, The Geometry of Concepts, section 5"},
    }
    return AnalysisOutput(
        metrics=metrics,
        tables={"spectra": spectra, "fits": fits},
        figures={"galaxy_spectrum": _figure(int(inputs.layer), pairs, (act, act_null), config)},
        interactive={"galaxy_spectrum": _plotly(int(inputs.layer), pairs, (act, act_null), config)},
        documents={"galaxy_summary": summary},
    )
