"""Functional "lobes": do features that fire together also point the same way?

The intermediate ("brain") scale of Li, Michaud, Baek, Engels, Sun & Tegmark, *The Geometry of
Concepts: Sparse Autoencoder Feature Structure* (arXiv 2410.19750; Entropy 27(4):344, 2025).

What the paper does (Gemma-2-2B, Gemma Scope residual SAE at layer 12). Confirmed in the text
available to us: co-occurrence clusters are found by spectral clustering of an affinity built from
co-occurrence counts, the phi coefficient being the affinity used (an appendix compares several
co-occurrence measures); geometric clusters are found the same way from an affinity computed from
the cosine similarity of decoder vectors; agreement is the adjusted mutual information (AMI,
scikit-learn) between the two labelings; and a logistic regression predicts a feature's
co-occurrence lobe from its decoder vector (80/20 train/test split, balanced test accuracy),
compared with random vectors. From our recollection of the paper, not re-checked against its text:
features co-occur when both fire within the same block of 256 tokens of Pile documents, and the
co-occurrence measures compared were simple matching, Jaccard, Dice, overlap and phi. Published
numbers (read from their figures, approximate): lobe AMI ~0.06 at 2 clusters rising to ~0.23 near
128-256 clusters; balanced accuracy ~0.85 at 2 lobes against ~0.50 for random vectors. They are in
``analysis/published.yaml`` and in the metrics as ``reference.li2024_*``.

Their released code (``ejmichaud/feature-geometry``, ``brain/``), read for the facts: each of 50k
Pile documents is truncated to 1024 tokens, BOS dropped, and cut into 256-token chunks, the last
shorter chunk dropped; a latent is active in a chunk if its activation exceeds 1 somewhere in it;
sklearn's ``SpectralClustering(affinity="precomputed", random_state=42)`` on all 16k latents for k
= 2 .. 1024; AMI against the angular-similarity clusters; 100 label permutations; the classifier
trains on the first 80% of the latents and tests balanced accuracy on the rest, against 100 sets
of random unit vectors. One script shifts phi by +1 (into [0, 2]) instead of clipping negatives;
the figure's phi clusters come from files not released, so which was used is not known.

**The published protocol beside ours** (metrics ``goc.*``, table ``lobes_protocol_summary``): the
same steps 3-6 on other blocks and firings: blocks are ``goc_window`` (256) consecutive tokens of
one document, running across our 127-token contexts (the store's rows are in corpus order and a
document is one run of rows: ``document_windows`` checks it and raises otherwise), never across
two documents, the last shorter window dropped as theirs; a feature fires where its code exceeds
``goc_threshold`` times its largest code (0: any firing; their "> 1" is on Gemma Scope's raw scale,
which TopK codes in our normalised units do not share); k = ``goc_k_values`` up to ``goc_max_k``;
``goc_n_permutations`` shuffles; their classifier (one 80/20 split, plain logistic regression on
unit decoder rows, against ``goc_random_trials`` sets of random unit vectors). What stays ours: the
features left out (dead, rare, always on, isolated) and clipping negative phi. ``sweep.py`` varies
one factor at a time (window, share of the windows, threshold) to find which moves AMI.

Our estimator, step by step (the formula is next to the code of each step):

1. **Blocks.** Row ``r`` of the code store is position ``r mod P`` of context ``r div P``
   (``P = positions_per_context``). A block is ``block_size`` consecutive positions of one context;
   blocks never cross a context (the last block of a context may be shorter), so a block is at most
   one 128-token context here: the closest we can get to the paper's 256 tokens.
2. **Counting, streamed.** Per chunk of rows: the binary block x feature matrix ``B`` (``B[b, i] = 1``
   iff feature ``i`` fires on some row of block ``b``) is built *sparse* from the TopK codes, and
   ``C += BᵀB`` (``C[i, j]`` = blocks where both fire; ``C[i, i] = c_i``, the blocks where ``i``
   fires). ``C`` is n x n whatever the token count, so memory does not grow with tokens. At
   n = 18432 dense ``C`` is 1.36 GB (float32): accepted on this 23 GB machine (the whole analysis
   peaks at ~2.8 GB). Sparse would not be smaller at our token counts: a sparse entry costs 8 bytes
   against 4, and measured on synthetic TopK codes ``C`` is 43% full at 50k tokens (CSR 1.17 GB),
   65% at 200k (1.76 GB); the default study's 100k evaluation tokens sit between (CSR ≈ 1.5 GB,
   and a sparse accumulation is ~12x slower per increment at 128-position blocks, see below). float32 holds integer
   counts exactly up to 2²⁴ = 16.7M blocks (beyond that ``C`` is switched to float64). The product
   is done one of two ways, chosen per chunk by cost: a dense ``syrk`` on the densified chunk
   (``m·n²`` multiply-adds for ``m`` blocks, at BLAS speed, upper triangle only) or a sparse
   ``BᵀB`` (``Σ_b u_b²`` increments for ``u_b`` features in block ``b``, at sparse speed).
3. **Affinity** between features, from ``N`` blocks, ``c_i``, ``c_ij = C[i, j]``:
   phi ``= (N c_ij − c_i c_j) / √(c_i (N − c_i) c_j (N − c_j))`` (default), Jaccard
   ``= c_ij / (c_i + c_j − c_ij)``, Dice ``= 2 c_ij / (c_i + c_j)``. Negative phi (a pair that
   avoids each other) is clipped to 0: spectral clustering needs a non-negative affinity, and
   avoidance is no evidence of belonging together. The diagonal is 0 (as scipy's normalised
   Laplacian, which sklearn uses, ignores it).
   Features left out, each counted in the metrics: *dead* (fire in no block), *rare* (fewer than
   ``min_blocks`` blocks: their affinities are noise), *always on* (every block: phi is 0/0) and
   *isolated* (no positive affinity with any analysed feature: no graph edge to cluster on).
4. **Spectral clustering**, as sklearn's ``SpectralClustering(affinity="precomputed")``: the
   embedding of ``k`` clusters is the ``k`` eigenvectors of the largest eigenvalues of
   ``M = D^{-1/2} A D^{-1/2}`` (the smallest of the normalised Laplacian ``I − M``), each entry
   divided by ``√d_i``, then k-means on those ``k`` columns. We compute the ``K = max k``
   leading eigenvectors once and cluster each ``k`` on the first ``k`` columns. This is the same
   embedding sklearn builds for that ``k``: the eigenvectors are ordered by eigenvalue and an
   eigenvector does not depend on how many others are requested, so the first ``k`` of ``K`` are
   the ``k`` sklearn asks ARPACK for, up to each column's sign (k-means distances do not see
   signs) and a rotation inside an eigenvalue that is repeated exactly at the cut (where sklearn's
   own answer is arbitrary as well). The k-means step is sklearn's ``KMeans``. The eigenvectors come
   from a block Krylov method (``top_eigenpairs``: GEMM-based, restarted until every residual
   ``‖Mv − λv‖`` is below ``eig_tol·|λ₂|``; the achieved residual is a metric): ARPACK's one-vector
   Lanczos (what sklearn calls) reads the whole matrix once per matrix-vector product; measured here
   at n = 4608 for 128 eigenvectors: 40-60 s for scipy's ``eigsh``, 9 s for the block method.
   Tests check the embedding and the labels against sklearn's on small inputs.
5. **Geometric clusters**: the same spectral clustering of the decoder directions with the angular
   similarity ``1 − arccos(cos θ_ij) / π`` (in [0, 1]; cosine itself would give negative weights).
6. **Agreement**: AMI (sklearn's, arithmetic normalisation) between co-occurrence lobes and
   geometric clusters, for every ``k``, against two nulls in which the geometric labels are
   shuffled ``n_permutations`` times (seeded): (a) among all analysed features; (b) only among
   features of similar firing density (``density_bins`` quantile bins of log token firings),
   because density shapes both co-occurrence (frequent features co-occur with everything) and
   geometry. Each null gives mean, sd, ``z = (AMI − mean) / sd`` and
   ``p = (1 + #{null ≥ AMI}) / (1 + n_permutations)``. A shuffle keeps both labelings' cluster
   sizes, so the expected MI term of AMI is the same for every shuffle: it is computed once
   (``expected_mutual_information``, tested equal to sklearn) and each shuffle costs one O(n)
   contingency table. The AMI of each labeling with the density bins is reported too.
7. **Logistic regression** predicting a feature's lobe from its unit decoder vector (×√d):
   out-of-fold predictions of stratified ``cv_folds``-fold cross-validation (every feature tested
   once; 5 folds is the paper's 80/20 split, repeated), balanced accuracy, beside the same with
   random Gaussian vectors in place of decoder rows (the chance level of this classifier on this
   data, ~1/k). ``classifier_max_features`` features at most (a seeded subsample: the accuracy is
   then known to about ±1/√(4·5000) = ±0.007, and the fits ~3x cheaper at n = 18432).
8. **What the lobes are**: for ``k = 2 .. domain_k_max``, per lobe ``l`` and corpus domain ``g``:
   ``share_lg`` = firings of the lobe's features on rows of domain ``g`` / all firings of the
   lobe's features; ``base_g`` = the same over all analysed features (≈ the token share of ``g``:
   every row has k firings); ``enrichment = share / base``. Null: lobe labels shuffled among the
   analysed features (mean, sd, z per cell; and the null distribution of the largest cell).
"""
