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
    ``log r`` over the ranks ``rank_min ≤ r ≤ rank_max`` (``saeatlas.analysis.common.stats.fit_power_law``,
    the project's one log-log fitter), ``α = -slope``.

    Null: an isotropic Gaussian cloud ``N(0, I_d)`` with the same n and d, processed identically
    (unit rows, centred). Its population spectrum is flat (α = 0), but a finite sample spreads
    the eigenvalues over the Marchenko-Pastur range ``(1 ± √(d/n))²``, so the null has a small
    positive α that grows with d/n: over ranks 1..100 it is ≈ 0.13 at n = 1152, d = 576, and
    ≈ 0.04 at n = 18432 (over the published window 10-150, see (3): 0.24 and 0.07). The
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

(3) Published protocols, beside ours (``goc.py``; issue 16: our numbers next to what the
    published numbers mean). Read from the paper and its released notebook
    (``ejmichaud/feature-geometry``, ``galaxy/PointCloudStructure_Galaxy.ipynb``):

    *Window.* Their slope is an OLS over ranks 10-150 (the notebook slices ``[10:150]``, ranks
    11-150) of the centred covariance of Gemma Scope decoder rows. We fit the same eigenvalues
    and the same bootstrap spectra (kept to the deeper window) a second time over
    ``[published_rank_min, published_rank_max]``, with the same isotropic null:
    ``slope_goc``. Their Gaussian 0.028 is a 65536 x 2304 sample over that window (the
    Marchenko-Pastur quantiles predict 0.0276 there); our null over it at d = 576 is larger,
    0.07 at n = 18432 and 0.24 at n = 1152, because ranks 10-150 are a quarter of our spectrum and
    d/n is larger. (That is also why the docstring above used to say [1, 100] "reproduces" their
    baseline: it gives 0.0293 at n = 16384, d = 2304, a coincidence, not their setting.) Ours
    stays the headline: a window in the top sixth of the spectrum is less swamped by the bulk.

    *Clustering entropy.* Their protocol: a 5000-point subsample, every dimension z-scored, PCA to
    100 components, Kozachenko-Leonenko k = 1, 30 repeats. Ours of it (``entropy_goc``, mean and
    sd over ``goc_repeats`` subsamples drawn without replacement): Ĥ_kNN (nats) of the 100 scores,
    and ``clustering_goc`` = closed-form entropy of the Gaussian with the scores' covariance -
    Ĥ_kNN, the quantity their figure plots. A cloud of at most ``goc_points`` rows is evaluated
    once on all of them (its sd is then 0, and says so). Null: the identical protocol on
    isotropic unit-normalised Gaussian rows of the size the protocol sees (shared by every
    cloud larger than ``goc_points``, fresh samples per repeat).

    Why the published values cannot be compared with ours, or across models, in absolute terms:
    an entropy of 100 standardised components depends on d (z-scoring rescales each of the d
    inputs), on n (the k = 1 estimator's bias in 100 dimensions is large: on an isotropic Gaussian
    it reads 16-17 nats above the closed form at n = 5000, so ``clustering_goc`` of a Gaussian is
    ≈ -17, not 0) and on units. Two more things in the released notebook move their numbers: the
    repeats resample the subsample *with replacement* and add 0.01 to every k = 1 distance, so
    ~63% of the points have a duplicate at distance 0 and contribute ``100 · log 0.01 ≈ -460``
    nats each to the k-NN term; and its Gaussian baseline is the closed-form entropy of a random
    matrix multiplied by a hand-set factor (2.55) "to align" it with the layers, which is not a
    null (it was chosen after seeing the data). Measured here (scratch computation, 5 resamples):
    their exact estimator on an isotropic Gaussian of 5000 x 576 rows gives 349.6, against their
    354.7 (layer 0) and 368.6 (peak); most of their scale is the duplicate term. What compares
    across models is the difference to a null run through the identical protocol at the same n
    and d, which is what we report beside it.

What differs from the paper, and what we could not pin down. Li et al.'s slope (≈ 0.468 for
Gemma-2-2B's Gemma Scope SAE at layer 12, ≈ 0.028 for a Gaussian; ``analysis/published.yaml``)
is fitted over ranks 10-150 of raw (Gemma Scope's rows are unit-norm) centred decoder rows; we
report that window beside ours (3). Their clustering entropy is reproduced in (3) without the
resampling artefact. From the sources we confirmed the qualitative claims: the eigenvalues of
the feature point cloud follow a power law rather than the Wishart (Marchenko-Pastur) shape,
more so than for raw activations, steepest in middle layers. We add what the paper does not
report: bootstrap CIs, a same-n isotropic null per size for every number, the bias-cancelling
same-estimator Gaussian reference (negentropy rather than raw entropy), and several dictionary
sizes.
"""

from __future__ import annotations
