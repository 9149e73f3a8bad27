"""Lobes analysis: exact counts against a brute-force count (block and context boundaries, any
chunking, both products), hand-computed affinities, AMI and the spectral embedding against
sklearn, and the acceptance tests on planted truth: co-occurrence groups whose decoder directions
are clusters aligned with them come back as lobes that agree with the geometry far above both
nulls (and are predictable from the direction, unlike from random vectors); the same groups with
independent directions give an AMI inside the null; domain-specific groups are found by the
lobe x domain enrichment."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from saeatlas.analysis.common.output import write_output
from saeatlas.analysis.common.published import label, value
from saeatlas.analysis.common.stats import null_summary
from saeatlas.analysis.lobes.ami import AMIScorer, density_bins
from saeatlas.analysis.lobes.compute import LobesInputs, run
from saeatlas.analysis.lobes.config import LobesConfig
from saeatlas.analysis.lobes.cooccurrence import (
    block_ids,
    count_cooccurrence,
    document_windows,
    feature_max,
    iter_code_chunks,
    subsample_windows,
)
from saeatlas.analysis.lobes.domains import domain_enrichment
from saeatlas.analysis.lobes.section import section
from saeatlas.analysis.lobes.spectral import (
    affinity,
    angular_affinity,
    compact_square,
    kmeans_labels,
    spectral_embedding,
    top_eigenpairs,
)
from saeatlas.codes import CodeWriter, SparseCodes

# ------------------------------------------------------------------------------------------
# Counting
# ------------------------------------------------------------------------------------------


def brute_force(codes: np.ndarray, ppc: int, block_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense reference: walk the rows context by context, block by block."""
    fired = codes > 0
    blocks = []
    for c0 in range(0, fired.shape[0], ppc):
        ctx = fired[c0:c0 + ppc]
        for b0 in range(0, ctx.shape[0], block_size):
            blocks.append(ctx[b0:b0 + block_size].any(axis=0))
    b = np.array(blocks, dtype=np.int64)
    return b.T @ b, b.sum(0), len(blocks)


def random_codes(rows: int, n: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 2.0, (rows, n)) * (rng.random((rows, n)) < density)
    x[rng.random(rows) < 0.1] = 0.0  # rows where nothing fires (e.g. excluded outliers)
    return x


@pytest.mark.parametrize("method", ["dense", "sparse", "auto"])
def test_counts_equal_brute_force_for_any_chunking(method: str) -> None:
    # 10 positions per context, blocks of 4 -> blocks [0,4) [4,8) [8,10) per context; 57 rows end
    # inside the 6th context (a partial last context and a partial last block).
    ppc, bs, n = 10, 4, 9
    x = random_codes(57, n, 0.2, 0)
    want_c, want_blocks, want_n = brute_force(x, ppc, bs)
    dom = np.random.default_rng(1).integers(-1, 3, 57)
    for rows in (1, 3, 7, 10, 57):
        got = count_cooccurrence(iter_code_chunks(sparse.csr_matrix(x), rows), n, ppc, bs, dom, 3, method)
        np.testing.assert_array_equal(got.counts, want_c)
        np.testing.assert_array_equal(got.block_counts, want_blocks)
        np.testing.assert_array_equal(np.diag(got.counts), got.block_counts)
        assert got.n_blocks == want_n == 5 * 3 + 2 and got.n_rows == 57
        np.testing.assert_array_equal(got.firings, (x > 0).sum(0))
        for g in range(3):
            np.testing.assert_array_equal(got.domain_firings[:, g], (x[dom == g] > 0).sum(0))
        np.testing.assert_array_equal(got.domain_rows, np.bincount(dom[dom >= 0], minlength=3))
    # a block as large as the context: one block per context, never across contexts
    want_c, _, want_n = brute_force(x, ppc, ppc)
    got = count_cooccurrence(iter_code_chunks(sparse.csr_matrix(x), 4), n, ppc, 1000, method=method)
    np.testing.assert_array_equal(got.counts, want_c)
    assert got.n_blocks == want_n == 6


def test_block_ids_restart_at_every_context() -> None:
    np.testing.assert_array_equal(block_ids(np.arange(12), 5, 2), [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6])


def test_counts_stream_from_a_code_store(tmp_path: Path) -> None:
    x = random_codes(300, 20, 0.1, 3)
    width = int((x > 0).sum(1).max())
    writer = CodeWriter(tmp_path / "codes", 300, width, 20)
    idx = np.argsort(-x, axis=1)[:, :width]
    writer.append(idx.astype(np.int32), np.take_along_axis(x, idx, 1).astype(np.float32))
    writer.finish()
    store = SparseCodes.open(tmp_path / "codes")
    from_store = count_cooccurrence(iter_code_chunks(store, 37), 20, 30, 8)
    want_c, want_blocks, _ = brute_force(x, 30, 8)
    np.testing.assert_array_equal(from_store.counts, want_c)
    np.testing.assert_array_equal(from_store.block_counts, want_blocks)


# ------------------------------------------------------------------------------------------
# Affinities, compaction, AMI, spectral embedding
# ------------------------------------------------------------------------------------------


def test_affinities_on_hand_cases() -> None:
    # N = 10 blocks. Features: 0 fires in blocks 0-4, 1 in 0-4 (same), 2 in 5-9 (disjoint from 0),
    # 3 in {0, 1, 5, 6} (independent of 0: 2 of its 4 inside 0's 5), 4 in {0, 1, 2}, 5 in {0..3}.
    sets = [range(5), range(5), range(5, 10), (0, 1, 5, 6), (0, 1, 2), (0, 1, 2, 3)]
    b = np.zeros((10, 6), dtype=np.int64)
    for j, s in enumerate(sets):
        b[list(s), j] = 1
    c = b.T @ b
    phi = affinity(c, c.diagonal(), 10, "phi")
    jac = affinity(c, c.diagonal(), 10, "jaccard")
    dice = affinity(c, c.diagonal(), 10, "dice")
    assert phi[0, 1] == pytest.approx(1.0) and jac[0, 1] == pytest.approx(1.0) and dice[0, 1] == pytest.approx(1.0)
    assert phi[0, 2] == 0.0 and jac[0, 2] == 0.0 and dice[0, 2] == 0.0  # phi = -1, clipped
    assert phi[0, 3] == pytest.approx(0.0, abs=1e-7)  # (10·2 − 5·4) / ... = 0
    assert jac[0, 3] == pytest.approx(2 / 7) and dice[0, 3] == pytest.approx(4 / 9)
    # (10·3 − 3·4) / √(3·7·4·6) = 18 / √504
    assert phi[4, 5] == pytest.approx(18 / np.sqrt(504), rel=1e-6)
    assert jac[4, 5] == pytest.approx(3 / 4) and dice[4, 5] == pytest.approx(6 / 7)
    for a in (phi, jac, dice):
        np.testing.assert_array_equal(np.diag(a), 0.0)
        np.testing.assert_allclose(a, a.T)
    cos = angular_affinity(np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]]))
    assert cos[0, 1] == pytest.approx(0.5) and cos[0, 2] == pytest.approx(0.0) and cos[0, 3] == pytest.approx(0.75)


def test_compact_square_in_place_equals_fancy_indexing() -> None:
    a = np.arange(49, dtype=np.float32).reshape(7, 7)
    keep = np.array([1, 3, 4, 6])
    want = a[np.ix_(keep, keep)].copy()
    got = compact_square(a, keep, chunk=3)
    np.testing.assert_array_equal(got, want)
    assert np.shares_memory(got, a)
    f = np.asfortranarray(np.arange(36, dtype=np.float32).reshape(6, 6))  # the counts' layout
    np.testing.assert_array_equal(compact_square(f.T, np.array([0, 5]), chunk=1), f.T[np.ix_([0, 5], [0, 5])])


def test_ami_and_its_shuffle_null_match_sklearn() -> None:
    from sklearn.metrics import adjusted_mutual_info_score

    rng = np.random.default_rng(0)
    for n, ku, kv in ((50, 2, 2), (300, 7, 3), (1000, 40, 25), (200, 1, 5)):
        u = rng.integers(0, ku, n)
        v = np.where(rng.random(n) < 0.5, u % kv, rng.integers(0, kv, n))
        v[:3] = kv - 1  # unbalanced sizes are fine
        scorer = AMIScorer(u, v)
        assert scorer.ami() == pytest.approx(adjusted_mutual_info_score(u, v), abs=1e-9)
        perm = rng.permutation(n)
        assert scorer.ami(scorer.v[perm]) == pytest.approx(adjusted_mutual_info_score(u, v[perm]), abs=1e-9)
    # under shuffles AMI is 0 on average (E[MI] is exactly the shuffle mean of MI)
    u, v = rng.integers(0, 6, 400), rng.integers(0, 4, 400)
    null = AMIScorer(u, v).null(400, rng)
    assert abs(null.mean()) < 4 * null.std() / np.sqrt(null.size)
    # shuffling v within groups of equal v is no change at all
    groups = np.repeat([0, 1], 200)
    s = AMIScorer(u, groups)
    np.testing.assert_allclose(s.null(5, rng, groups=groups), s.ami())
    assert s.null(50, rng).std() > 0


def test_density_matched_null_absorbs_agreement_that_density_alone_creates() -> None:
    # Both labelings follow the density bin (70% of the time) and are independent given it: the
    # plain shuffle calls that agreement significant, the within-bin shuffle does not.
    rng = np.random.default_rng(5)
    bins = np.repeat(np.arange(4), 250)
    u = np.where(rng.random(1000) < 0.7, bins, rng.integers(0, 4, 1000))
    v = np.where(rng.random(1000) < 0.7, bins, rng.integers(0, 4, 1000))
    scorer = AMIScorer(u, v)
    ami = scorer.ami()
    plain = null_summary(ami, scorer.null(300, rng))
    matched = null_summary(ami, scorer.null(300, rng, groups=bins))
    assert ami > 0.1 and plain["z"] > 10 and plain["p"] == pytest.approx(1 / 301)
    assert abs(matched["z"]) < 3 and matched["p"] > 0.01
    assert matched["mean"] == pytest.approx(ami, abs=0.03)


def test_block_krylov_eigenpairs_match_lapack() -> None:
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    n, k = 900, 20
    with threadpool_limits(limits=1):  # one thread: fast, and immune to a busy machine
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    spectrum = np.concatenate([np.linspace(1.0, 0.6, k + 5), rng.uniform(-0.5, 0.4, n - k - 5)])
    m = ((q * spectrum) @ q.T).astype(np.float32)
    vals, vecs, res, restarts = top_eigenpairs(m, k, tol=1e-4, dense_below=0)
    assert restarts >= 1 and res < 1e-4
    np.testing.assert_allclose(vals, np.sort(spectrum)[::-1][:k], atol=1e-4)
    cos = np.abs(np.sum(vecs * q[:, :k], axis=0))
    assert cos.min() > 0.999


def block_affinity(sizes: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    a = np.where(truth[:, None] == truth[None, :], 0.8, 0.05) + rng.uniform(0, 0.05, (truth.size,) * 2)
    a = (a + a.T) / 2
    np.fill_diagonal(a, 0.0)
    return a, truth


def test_spectral_embedding_and_labels_match_sklearn() -> None:
    from sklearn.cluster import SpectralClustering
    from sklearn.manifold import spectral_embedding as sk_embedding
    from sklearn.metrics import adjusted_rand_score

    a, truth = block_affinity((40, 30, 20, 10), 0)
    ours, info = spectral_embedding(a.astype(np.float32), 4)
    theirs = sk_embedding(a, n_components=4, norm_laplacian=True, drop_first=False, random_state=0)
    for j in range(4):
        cos = abs(ours[:, j] @ theirs[:, j]) / np.linalg.norm(ours[:, j]) / np.linalg.norm(theirs[:, j])
        assert cos > 0.9999
    assert info["max_residual"] < 1e-5
    for k in (2, 3, 4):  # the first k columns of the K-embedding cluster as sklearn's own k-embedding
        sk = SpectralClustering(k, affinity="precomputed", random_state=0).fit_predict(a)
        assert adjusted_rand_score(kmeans_labels(ours, k, 4, 0), sk) == 1.0
    assert adjusted_rand_score(kmeans_labels(ours, 4, 4, 0), truth) == 1.0


def test_density_bins_and_enrichment_on_hand_numbers() -> None:
    bins = density_bins(np.array([1, 2, 4, 8, 16, 32, 64, 128]), 4)
    np.testing.assert_array_equal(bins, [0, 0, 1, 1, 2, 2, 3, 3])
    # lobe 0 = features 0, 1 fire only on domain 0; lobe 1 = feature 2 splits 50/50
    f = np.array([[10, 0], [30, 0], [20, 20]])
    enr = domain_enrichment(np.array([0, 0, 1]), 2, f)
    base = np.array([60, 20]) / 80
    np.testing.assert_allclose(enr, [[1 / base[0], 0.0], [0.5 / base[0], 0.5 / base[1]]])


# ------------------------------------------------------------------------------------------
# Planted truth
# ------------------------------------------------------------------------------------------


def planted(groups: int, per_group: int, aligned: bool, seed: int, contexts: int = 300, ppc: int = 32,
            k_in: int = 6, k_bg: int = 2, d: int = 24, domains: bool = False) -> LobesInputs:
    """Each context is about one group: every token fires ``k_in`` of that group's features
    (skewed propensities, so densities differ) and ``k_bg`` features drawn from all. Decoder rows:
    a cluster centroid plus noise, the cluster being the feature's group (``aligned``) or a random
    relabelling of the groups (independent of co-occurrence). ``domains``: group g's contexts all
    come from domain g."""
    rng = np.random.default_rng(seed)
    n = groups * per_group
    members = np.arange(n).reshape(groups, per_group)
    weight = rng.lognormal(0.0, 1.0, n)
    ctx_group = rng.integers(0, groups, contexts)
    tok_group = np.repeat(ctx_group, ppc)
    rows = tok_group.size
    cand = members[tok_group]  # [rows, per_group]
    keys = np.log(weight[cand]) + rng.gumbel(size=cand.shape)  # Gumbel top-k = weighted sampling
    top = np.take_along_axis(cand, np.argpartition(-keys, k_in, axis=1)[:, :k_in], 1)
    feats = np.hstack([top, rng.integers(0, n, (rows, k_bg))])
    codes = sparse.csr_matrix((rng.uniform(0.5, 2.0, feats.size), (np.repeat(np.arange(rows), feats.shape[1]),
                               feats.ravel())), shape=(rows, n))
    label = np.repeat(np.arange(groups), per_group)
    geo = label if aligned else rng.permutation(label)
    centroids = rng.standard_normal((groups, d))
    decoder = centroids[geo] + 0.35 * rng.standard_normal((n, d))
    if domains:
        return LobesInputs(codes, n, ppc, decoder, np.repeat(ctx_group, ppc),
                           tuple(f"dom{g}" for g in range(groups)))
    return LobesInputs(codes, n, ppc, decoder)


FAST = LobesConfig(k_values=(8,), domain_k_max=1, block_size=16, n_permutations=200, density_bins=5,
                   kmeans_n_init=2, cv_folds=4)


def test_planted_aligned_lobes_agree_with_geometry_far_above_both_nulls() -> None:
    inputs = planted(8, 24, aligned=True, seed=0)
    out = run(FAST, inputs)
    m = out.metrics
    assert m["n_analysed"] == 192 and m["n_dead"] == 0
    assert m["k8.ami"] > 0.9
    assert m["k8.ami_z"] > 20 and m["k8.ami_density_z"] > 20
    assert m["k8.ami_p"] == pytest.approx(1 / 201) and m["k8.ami_density_p"] == pytest.approx(1 / 201)
    assert abs(m["k8.ami_null_mean"]) < 0.05 and abs(m["k8.ami_density_null_mean"]) < 0.05
    assert m["k8.balanced_accuracy"] > 0.9
    assert m["k8.balanced_accuracy_random"] < 1 / 8 + 0.15
    lobes = np.array([r["lobe_k8"] for r in out.tables["lobe_assignments"]])
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(lobes, np.repeat(np.arange(8), 24)) > 0.9  # lobes = the planted groups


def test_planted_independent_geometry_gives_ami_within_the_null() -> None:
    out = run(FAST, planted(8, 24, aligned=False, seed=1))
    m = out.metrics
    assert abs(m["k8.ami"]) < 0.05 and abs(m["k8.ami_z"]) < 3.5 and m["k8.ami_p"] > 0.005
    assert abs(m["k8.ami_density_z"]) < 3.5
    assert m["k8.balanced_accuracy"] < 1 / 8 + 0.15  # the direction says nothing about the lobe


def test_planted_domain_groups_are_found_by_the_enrichment() -> None:
    cfg = replace(FAST, k_values=(3,), domain_k_max=3, classifier_k_max=0, n_permutations=100)
    inputs = planted(3, 30, aligned=True, seed=2, domains=True)
    out = run(cfg, inputs)
    rows = [r for r in out.tables["lobe_domain_enrichment"] if r["k"] == 3]
    assert len(rows) == 9
    best = {}
    for lobe in range(3):
        cells = [r for r in rows if r["lobe"] == lobe]
        top = max(cells, key=lambda r: r["enrichment"])
        best[lobe] = top["domain"]
        # ~6 of a token's 8 firings are on-topic: the lobe's share of its domain >> the base rate
        assert top["enrichment"] > 2.0 and top["enrichment_z"] > 5
        assert top["enrichment"] == pytest.approx(top["firing_share"] / top["base_rate"])
    assert sorted(best.values()) == ["dom0", "dom1", "dom2"]  # each domain is one lobe's
    m = out.metrics
    null_mean, null_sd = m["k3.domain_enrichment_max_null_mean"], m["k3.domain_enrichment_max_null_sd"]
    assert m["k3.domain_enrichment_max"] > null_mean + 5 * null_sd
    assert sum(m[f"domain.dom{g}.token_share"] for g in range(3)) == pytest.approx(1.0)
    assert "k2.domain_enrichment_max" in m  # k = 2 .. domain_k_max are all clustered


# ------------------------------------------------------------------------------------------
# Config, edge cases, output contract
# ------------------------------------------------------------------------------------------


def test_config_from_params_and_errors_name_the_key() -> None:
    cfg = LobesConfig.from_params({"block_size": 64, "k_values": [2, 8], "affinity": "jaccard"})
    assert cfg.block_size == 64 and cfg.k_values == (2, 8) and cfg.affinity == "jaccard"
    assert cfg.cluster_ks() == (2, 3, 4, 8)
    for bad, key in (({"block_size": "x"}, "lobes.block_size"), ({"k_values": [2, 1.5]}, r"lobes.k_values\[1\]"),
                         ({"blok_size": 3}, "blok_size"), ({"affinity": "cosine"}, "lobes.affinity"),
                         ({"k_values": [1, 4]}, "lobes.k_values"), ({"cv_folds": 1}, "lobes.cv_folds"),
                         ({"n_permutations": 0}, "lobes.n_permutations"),
                         ({"count_method": "gpu"}, "lobes.count_method")):
        with pytest.raises(ValueError, match=key):
            LobesConfig.from_params(bad)


def test_dead_rare_and_isolated_features_are_left_out_and_counted() -> None:
    inputs = planted(4, 12, aligned=True, seed=3, contexts=80)
    x = inputs.codes.tolil()
    n = x.shape[1]
    x[:, 0] = 0  # dead
    x[:, 1] = 0
    x[5, 1] = 1.0  # rare: one block
    x = sparse.hstack([x, sparse.csr_matrix((x.shape[0], 1))]).tolil()  # another dead, never fired
    dec = np.vstack([inputs.decoder, np.ones((1, inputs.decoder.shape[1]))])
    cfg = replace(FAST, k_values=(4,), classifier_k_max=4, n_permutations=50)
    out = run(cfg, LobesInputs(x.tocsr(), n + 1, inputs.positions_per_context, dec))
    m = out.metrics
    assert m["n_dead"] == 2 and m["n_rare"] == 1 and m["n_always_on"] == 0
    assert m["n_analysed"] == n + 1 - 3 - m["n_isolated"]
    kept = {r["feature"] for r in out.tables["lobe_assignments"]}
    assert not kept & {0, 1, n}
    with pytest.raises(ValueError, match="decoder shape"):
        run(cfg, LobesInputs(x.tocsr(), n + 1, inputs.positions_per_context, inputs.decoder))


def test_output_goes_through_the_shared_writer(tmp_path: Path) -> None:
    cfg = replace(FAST, k_values=(2, 3), domain_k_max=2, n_permutations=30)
    out = run(cfg, planted(3, 16, aligned=True, seed=4, contexts=90, domains=True))
    write_output(out, tmp_path / "lobes", tmp_path / "metrics.json", "hash")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["k3.ami"] == pytest.approx(out.metrics["k3.ami"])
    assert metrics["reference.li2024_ami_k2"] == value("lobes", "li2024_ami_k2") == 0.06
    for name in ("lobes_summary", "lobe_domain_enrichment", "lobe_assignments"):
        assert (tmp_path / "lobes" / "tables" / f"{name}.csv").stat().st_size > 0
    assert (tmp_path / "lobes" / "figures" / "lobes_ami.png").stat().st_size > 0
    heat = json.loads((tmp_path / "lobes" / "figures" / "lobes_domains.plotly.json").read_text())
    assert heat["data"][0]["type"] == "heatmap" and len(heat["data"][0]["y"]) == 2


def test_section_reads_the_written_metrics(tmp_path: Path) -> None:
    from saeatlas.analysis.common.section import Number

    cfg = replace(FAST, k_values=(2, 3), domain_k_max=2, n_permutations=30)
    out = run(cfg, planted(3, 16, aligned=True, seed=4, contexts=90, domains=True))
    write_output(out, tmp_path / "lobes", tmp_path / "metrics.json", "hash")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sec = section(metrics, tmp_path / "lobes")
    assert sec.missing_files(tmp_path / "lobes") == []
    assert sec.order == 60 and sec.figures and sec.tables
    ami = Number("AMI at k=2", metrics["k2.ami"], null=metrics["k2.ami_null_mean"],
                 published=label("lobes", "li2024_ami_k2"))
    assert ami.text() in sec.summary and f"{metrics['k2.ami']:.3g}" in sec.summary
    assert f"{metrics['k2.balanced_accuracy']:.3g}" in sec.summary
    # nothing clustered: the summary says agreement was not estimated
    empty = section({"n_analysed": 3, "n_latents": 10}, tmp_path / "lobes")
    assert "not estimated" in empty.summary and empty.missing_files(tmp_path / "lobes") == []


# ------------------------------------------------------------------------------------------
# The published protocol: document windows across contexts, threshold, Li et al.'s classifier
# ------------------------------------------------------------------------------------------


def test_study_documents_are_contiguous_runs_of_rows() -> None:
    """What the windows rely on: the corpus packs documents one after another, so in the store
    (BOS excluded) a document is one run of rows, continuing across context boundaries."""
    from saeatlas.corpus import pack

    class Doc:
        def __init__(self, n: int):
            self.ids = list(range(n))

    docs = [(i, Doc(n)) for i, n in enumerate([5, 13, 2, 30, 7, 9])]
    _, owner, _ = pack(docs, n_contexts=4, positions=15, bos=1, sep=0)
    rows = owner[:, 1:].reshape(-1)  # what the activation store keeps (BOS excluded)
    assert (owner[:, 0] == -1).all() and (rows >= 0).all()
    runs = rows[np.r_[0, np.flatnonzero(np.diff(rows)) + 1]]
    assert runs.tolist() == sorted(set(runs.tolist()))  # each document once, in order
    assert (owner[1, 1] == owner[0, -1])  # document 3 continues into the next context
    win = document_windows(owner.reshape(-1), 8)  # with BOS rows (-1) inside a document: skipped
    assert (win.row_blocks[owner.reshape(-1) < 0] == -1).all()


def brute_windows(doc_ids: np.ndarray, w: int, keep_partial: bool) -> list[np.ndarray]:
    """Reference: the row indices of every window, document by document, in row order."""
    out = []
    for doc in dict.fromkeys(int(x) for x in doc_ids if x >= 0):
        rows = np.flatnonzero(doc_ids == doc)
        for a in range(0, rows.size, w):
            if a + w <= rows.size or keep_partial:
                out.append(rows[a:a + w])
    return out


@pytest.mark.parametrize("keep_partial", [False, True])
def test_document_windows_cross_contexts_but_never_documents(keep_partial: bool) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, 30)
    doc_ids = np.repeat(np.arange(30), lengths)
    doc_ids[rng.random(doc_ids.size) < 0.05] = -1  # BOS rows: in no window
    win = document_windows(doc_ids, 8, keep_partial)
    ref = brute_windows(doc_ids, 8, keep_partial)
    assert win.n_windows == len(ref)
    for i, rows in enumerate(ref):
        assert (np.flatnonzero(win.row_blocks == i) == rows).all()
        assert np.unique(doc_ids[rows]).size == 1  # one document per window
    assert win.rows_in_windows == sum(r.size for r in ref)
    assert win.documents_with_window == len({int(doc_ids[r[0]]) for r in ref})
    with pytest.raises(ValueError, match="document 1 occupies two separate runs"):
        document_windows(np.array([0, 0, 1, 1, 2, 1]), 2)


def test_window_counts_equal_brute_force_with_threshold_and_any_chunking() -> None:
    rng = np.random.default_rng(5)
    codes = random_codes(220, 12, 0.15, seed=5)
    doc_ids = np.repeat(np.arange(14), rng.integers(5, 30, 14))[:220]
    win = document_windows(doc_ids, 6)
    thresholds = 0.5 * codes.max(axis=0)
    fired = codes > thresholds
    b = np.array([fired[np.flatnonzero(win.row_blocks == i)].any(0) for i in range(win.n_windows)], dtype=np.int64)
    for rows in (7, 64, 1000):
        got = count_cooccurrence(iter_code_chunks(sparse.csr_matrix(codes), rows), 12, 20, 20,
                                 row_blocks=win.row_blocks, thresholds=thresholds)
        assert got.n_blocks == win.n_windows
        assert np.array_equal(got.counts, b.T @ b) and np.array_equal(got.block_counts, b.sum(0))
        assert np.array_equal(got.firings, fired.sum(0))
    assert np.array_equal(feature_max(iter_code_chunks(sparse.csr_matrix(codes), 50), 12), codes.max(axis=0))
    sub = subsample_windows(win.row_blocks, 0.5, np.random.default_rng(0))
    assert int(sub.max()) + 1 == round(0.5 * win.n_windows) and np.all(np.diff(sub[sub >= 0]) >= 0)


def spanning(groups: int, per_group: int, docs: int, ppc: int, seed: int) -> tuple[LobesInputs, np.ndarray]:
    """Documents of ``ppc`` tokens that start half-way into a context, so each document spans two
    contexts and each context holds the ends of two documents. A document is about one group: one
    of the group's features fires in the document's first half (the end of a context), another in
    its second half (the start of the next context). Within a context the features come from two
    unrelated documents: per-context blocks see no group; document windows see every pair. Decoder:
    the group's centroid plus noise. Returns the inputs and the planted group of each feature."""
    rng = np.random.default_rng(seed)
    n, half = groups * per_group, ppc // 2
    rows = (docs + 1) * ppc
    doc_ids = np.concatenate([np.zeros(half, np.int64), np.repeat(np.arange(1, docs + 1), ppc),
                              np.full(half, docs + 1)])
    group = rng.integers(0, groups, docs)
    first = group * per_group + rng.integers(0, per_group, docs)
    second = group * per_group + (first % per_group + rng.integers(1, per_group, docs)) % per_group
    start = half + np.arange(docs) * ppc
    r = np.concatenate([start + rng.integers(0, half, docs), start + half + rng.integers(0, half, docs)])
    codes = sparse.csr_matrix((rng.uniform(0.5, 2.0, 2 * docs), (r, np.concatenate([first, second]))),
                              shape=(rows, n))
    label = np.repeat(np.arange(groups), per_group)
    decoder = rng.standard_normal((groups, 16))[label] + 0.3 * rng.standard_normal((n, 16))
    return LobesInputs(codes, n, ppc, decoder, doc_ids=doc_ids), label


PROTOCOL = replace(FAST, k_values=(5,), goc_k_values=(5,), block_size=16, goc_window=16, n_permutations=50,
                   goc_n_permutations=50, classifier_k_max=0, goc_classifier_k_max=0)


def test_planted_groups_spanning_contexts_are_found_by_document_windows_only() -> None:
    from sklearn.metrics import adjusted_mutual_info_score as ami

    inputs, label = spanning(5, 6, docs=1500, ppc=16, seed=0)
    out = run(PROTOCOL, inputs)
    m = out.metrics
    assert m["goc.n_windows"] == 1500 and m["goc.tokens_in_windows"] == 1500 * 16  # fillers are half windows
    lobes = {r["feature"]: r["lobe_k5"] for r in out.tables["lobes_protocol_assignments"]}
    feats = np.array(sorted(lobes))
    assert feats.size == 30 and ami(label[feats], [lobes[f] for f in feats]) > 0.9  # the planted groups
    assert m["goc.k5.ami"] > 0.9 and m["goc.k5.ami_z"] > 10  # and they agree with the geometry
    ours = {r["feature"]: r["lobe_k5"] for r in out.tables["lobe_assignments"]}
    f_ours = np.array(sorted(ours))
    assert ami(label[f_ours], [ours[f] for f in f_ours]) < 0.15  # per-context blocks see no group
    assert m["k5.ami"] < 0.15
    # windows that ignored documents (fixed offsets from row 0) would be the contexts: same failure
    shifted = replace(inputs, doc_ids=np.zeros_like(inputs.doc_ids))
    m2 = run(PROTOCOL, shifted).metrics
    assert m2["goc.k5.ami"] < 0.15


def test_protocol_threshold_and_classifier() -> None:
    inputs = planted(2, 40, aligned=True, seed=6, contexts=200, ppc=32)
    doc_ids = np.repeat(np.arange(100), 64)  # two contexts per document
    cfg = replace(FAST, k_values=(2,), goc_k_values=(2, 4, 1024), goc_max_k=4, goc_window=64, goc_random_trials=20,
                  goc_classifier_k_max=2, classifier_k_max=0)
    m = run(cfg, replace(inputs, doc_ids=doc_ids)).metrics
    assert m["goc.n_windows"] == 100 and m["goc.n_k_skipped"] == 1 and "goc.k1024.ami" not in m
    assert m["goc.k2.balanced_accuracy"] > 0.9
    assert abs(m["goc.k2.balanced_accuracy_random_mean"] - 0.5) < 0.1  # 16 test features: sd ~0.12
    assert m["goc.k2.balanced_accuracy_random_p"] == pytest.approx(1 / 21)
    # a threshold above every code of a feature makes it dead for the protocol, not for us
    x = inputs.codes.tolil()
    x[:, 0] = 0
    x[0, 0] = 10.0  # one big firing: the max; every other firing of feature 0 is below 0.5 of it
    for r in range(1, 6000, 50):
        x[r, 0] = 1.0
    strict = run(replace(cfg, goc_threshold=0.5), replace(inputs, codes=x.tocsr(), doc_ids=doc_ids)).metrics
    assert strict["goc.n_rare"] >= 1 and strict["n_rare"] == 0
    with pytest.raises(ValueError, match="doc_ids has"):
        run(cfg, replace(inputs, doc_ids=doc_ids[:10]))


def test_section_shows_the_protocol_beside_ours_and_the_published(tmp_path: Path) -> None:
    inputs, _ = spanning(5, 6, docs=400, ppc=16, seed=1)
    out = run(replace(PROTOCOL, k_values=(2, 5), goc_k_values=(2, 5)), inputs)
    write_output(out, tmp_path / "lobes", tmp_path / "metrics.json", "hash")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sec = section(metrics, tmp_path / "lobes")
    assert sec.missing_files(tmp_path / "lobes") == []
    proto = [num for num in sec.numbers if "published protocol" in num.label]
    assert [num.value for num in proto] == [metrics["goc.k2.ami"], metrics["goc.k5.ami"]]
    assert proto[0].published == label("lobes", "li2024_ami_k2") and proto[0].text() in sec.summary
    assert "windows of 16 tokens of one document (400 windows)" in sec.summary
