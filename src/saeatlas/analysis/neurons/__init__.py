"""Features vs MLP neurons: is a feature a neuron in disguise? After Templeton et al. 2024
(*Scaling Monosemanticity*), who found that for 82% of their features the most-correlated MLP
neuron has Pearson correlation ≤ 0.3.

Measurement. On the held-out tokens of a layer, for every feature f of every dictionary size and
every MLP neuron j of the layer (SmolLM2: 1536, the input of ``mlp.down_proj``, i.e.
``act(gate(x)) * up(x)``, stored by the activations stage in ``eval_neurons/``, row for row with
the codes), Pearson's r(f, j) over the tokens; the feature's best neuron is ``argmax_j |r|`` and
its score ``max_j |r|``. Only the ordinary rows enter (``ActivationStore.ordinary_mask`` of the
residual store: the massive-activation rows, where the SAEs were not applied and the codes are
zero, are left out, as in every analysis). Features that never fired on those rows have no r:
they are counted (``dead``) and left out of every fraction.

Why |r| and not r: in a gated MLP, negating a neuron's ``up`` row and its ``down_proj`` column
leaves the model unchanged, so a neuron's sign is arbitrary and a feature that tracks -n_j is as
much "neuron j" as one that tracks n_j. |r| ≥ r, so the headline fraction (|r| ≤ 0.3) can only
be lower than the signed one, which is reported beside it (``frac_le_threshold_signed``): the
claim "features are not neurons" is tested on the stricter side.

Estimator (``moments.py``): one streaming pass per size over token chunks accumulating, in
float64, S_f, S_ff per feature (from the sparse codes), S_n, S_nn per neuron and the cross
moment S_fn [features x neurons] by a sparse-dense product per chunk. Memory is O(features x
neurons), independent of the number of tokens; there is never a dense [tokens x features] matrix.

Nulls, through the identical estimator and the same rows:
(a) random directions: R seeded unit vectors u (uniform on the sphere) in the residual stream,
    the signal ``x · u`` of the layer's normalised residual rows x; its max |r| with any neuron.
    A dense linear read-out of the residual stream, the kind of direction a feature is, but
    chosen without regard to the neurons.
(b) rotated neurons: ``n · q`` for R ≤ m columns q of a seeded Haar orthogonal matrix of neuron
    space (all m when R ≥ m), each against the original neurons. A direction of neuron space that
    is not a basis vector: what a feature that mixed neurons evenly would score.
A fraction of features ≤ 0.3 at or above the nulls' says features are no more neuron-aligned than
arbitrary directions; below them, that some features are neuron-like. Every fraction carries a
95% Wilson interval (binomial over features or directions). The finite-sample noise floor of a
max over m correlations, ≈ sqrt(2 ln(2m) / T), is ≈ 0.013 at T = 10⁵ tokens, far below 0.3.

Outputs: ``tables/top_neurons_n<size>.csv`` (each feature's best neurons with signed r, for the
feature browser), ``tables/fractions.csv``, ``tables/max_corr_histogram.csv``, the figure
``figures/neurons_max_corr.png`` and the flat metrics (``compute.run``).
"""

from __future__ import annotations
