"""The three trainable sparse architectures (TopK, BatchTopK, Matryoshka) on planted truth, at an
equal token budget: a flat dictionary of independent atoms, and a hierarchy of parents whose
children only ever fire with them (the absorption setting of Chanin et al. 2024 and of
Bussmann et al. 2025's toy model).

Both training sets are seeded apart from the trainer (``test_sae.planted``'s docstring says why)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import sparse

from saeatlas.sae.model import SAE, build
from saeatlas.sae.train import TensorSource, TrainConfig, train_sae

from test_sae import PLANTED_CFG, planted, recovery

pytestmark = pytest.mark.slow

# Long enough for every architecture to converge from a random start (1,875 steps; at 940 steps
# BatchTopK still trailed TopK by 0.04 and Matryoshka by 0.14).
RECOVERY_CFG = {**PLANTED_CFG, "epochs": 20, "lr": 5e-3}


@pytest.fixture(scope="module")
def flat() -> dict[str, float]:
    """MMCS to the 128 planted atoms of each architecture at n = 128, and of a BatchTopK a
    quarter of the size (the control that must fail)."""
    atoms, x = planted()
    torch.manual_seed(TrainConfig().seed)  # where every SAE below starts: far from the atoms
    out = {"start": recovery(atoms, build("topk", 32, 128, k=4).decoder.detach())}
    for name, arch, n in (("topk", "topk", 128), ("batchtopk", "batchtopk", 128),
                          ("matryoshka", "matryoshka", 128), ("small", "batchtopk", 32)):
        cfg = TrainConfig(architecture=arch, n_latents=n, **RECOVERY_CFG)
        result = train_sae(cfg, TensorSource(x), progress=False)
        out[name] = recovery(atoms, result.sae.decoder.detach())
        out[f"{name}_fvu"] = result.summary["final_fvu"]
    return out


def test_planted_dictionary_each_architecture_recovers_the_atoms(flat: dict[str, float]) -> None:
    """Measured (seed 1): TopK 0.989 (FVU 0.148), BatchTopK 0.979, Matryoshka 0.887, the small
    control 0.63; the shared random start 0.5 or so.

    BatchTopK recovers the atoms as well as TopK (within 0.02). Matryoshka does *not* on a flat
    dictionary, and this test says so rather than hiding it: with 128 equally frequent atoms the
    first prefix (8 latents) must reconstruct every token alone, so its latents become blends of
    atoms, not atoms; its advantage is on structured (hierarchical) features, the next test."""
    assert flat["start"] < 0.6, flat  # the score is earned, not inherited from the initialisation
    assert flat["topk"] >= 0.95 and flat["topk_fvu"] < 0.25, flat
    assert flat["batchtopk"] >= flat["topk"] - 0.02, flat
    assert 0.8 <= flat["matryoshka"] < flat["topk"] - 0.03, flat
    assert flat["small"] < 0.7, flat


# ------------------------------------------------------------------------------------------
# A planted hierarchy
# ------------------------------------------------------------------------------------------

PARENTS, CHILDREN, D = 8, 4, 32
N_LATENTS = PARENTS + PARENTS * CHILDREN  # exactly one latent per true feature


@dataclass
class Hierarchy:
    parents: torch.Tensor  # [P, d] unit directions
    children: torch.Tensor  # [P, C, d]
    parent_on: torch.Tensor  # [n, P] bool
    child_on: torch.Tensor  # [n, P, C] bool
    x: torch.Tensor


def hierarchy(n: int = 30000, parents_per_token: int = 2, child_p: float = 0.8, seed: int = 7) -> Hierarchy:
    """Each token: ``parents_per_token`` distinct parents, each with probability ``child_p`` one of
    its own children; magnitudes in [0.5, 1.5); all 40 directions random (nearly orthogonal-ish
    in d = 32). Mean true L0 is 3.6."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(N_LATENTS, D, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    parents, children = atoms[:PARENTS], atoms[PARENTS:].view(PARENTS, CHILDREN, D)
    which = torch.rand(n, PARENTS, generator=g).argsort(dim=1)[:, :parents_per_token]
    x = torch.zeros(n, D)
    parent_on = torch.zeros(n, PARENTS, dtype=torch.bool)
    child_on = torch.zeros(n, PARENTS, CHILDREN, dtype=torch.bool)
    rows = torch.arange(n)
    for j in range(parents_per_token):
        p = which[:, j]
        x += (torch.rand(n, 1, generator=g) + 0.5) * parents[p]
        parent_on[rows, p] = True
        has = torch.rand(n, generator=g) < child_p
        c = torch.randint(0, CHILDREN, (n,), generator=g)
        x[has] += (torch.rand(int(has.sum()), 1, generator=g) + 0.5) * children[p[has], c[has]]
        child_on[rows[has], p[has], c[has]] = True
    return Hierarchy(parents, children, parent_on, child_on, x + 0.01 * torch.randn(n, D, generator=g))


def hierarchy_scores(sae: SAE, h: Hierarchy) -> dict[str, float]:
    """- ``parents_in_prefix``: share of parents whose best-matching latent (max decoder cosine)
      lies in the first prefix (the first ``PARENTS`` latents);
    - ``parent_recall``: on tokens where a parent *and one of its children* are on, how often that
      parent's latent fires (absorption drives it down: the child's latent takes the parent over);
    - ``child_parent_cos``: mean cosine between each child's best latent and the child's parent
      direction (0 for a pure child latent; about 0.7 for one that writes parent + child)."""
    w = sae.decoder.detach() / sae.decoder.detach().norm(dim=1, keepdim=True)
    with torch.no_grad():
        acts = sae.encode(h.x).dense(sae.n_latents)
    best_parent = (h.parents @ w.t()).argmax(dim=1)
    recall = [float((acts[h.parent_on[:, j] & h.child_on[:, j].any(1), best_parent[j]] > 0).float().mean())
              for j in range(PARENTS)]
    best_child = (h.children.reshape(-1, D) @ w.t()).argmax(dim=1)
    child_parent = (w[best_child] * h.parents.repeat_interleave(CHILDREN, 0)).sum(1)
    scores = {"parents_in_prefix": float((best_parent < PARENTS).float().mean()),
              "parent_recall": sum(recall) / PARENTS,
              "child_parent_cos": float(child_parent.mean())}
    if getattr(sae, "prefixes", ()):  # the splitting analysis across its prefixes, on the same tokens
        from saeatlas.analysis.splitting.config import SplittingConfig
        from saeatlas.analysis.splitting.prefixes import prefix_steps

        met, _ = prefix_steps(SplittingConfig(), w.numpy(), sparse.csr_matrix(acts.numpy()),
                              (*sae.prefixes, sae.n_latents), np.random.default_rng(0))
        scores.update({f"prefix.{k}": met[f"prefix_mean.{k}"] for k in
                       ("nested_fraction", "nested_fraction_null", "nested_novel_fraction", "split_child_fraction")})
    return scores


@pytest.fixture(scope="module")
def hierarchical() -> dict[str, dict[str, float]]:
    """TopK and Matryoshka of the same size (one latent per true feature), k = 3 (below the true
    L0 of 3.6: the sparsity pressure under which absorption pays), the Matryoshka's one inner
    prefix exactly the parents' count."""
    h = hierarchy()
    out = {}
    for arch in ("topk", "matryoshka"):
        cfg = TrainConfig(architecture=arch, n_latents=N_LATENTS,
                          **{**PLANTED_CFG, "k": 3, "auxk_k": 8, "epochs": 12,
                             "matryoshka_fractions": (PARENTS / N_LATENTS,)})
        out[arch] = hierarchy_scores(train_sae(cfg, TensorSource(h.x), progress=False).sae.eval(), h)
    return out


def test_planted_hierarchy_matryoshka_keeps_parents_in_its_prefix_and_topk_absorbs_them(hierarchical) -> None:
    """Measured (data seeds 7, 11, 23): Matryoshka puts 7 of 8 parents in its first prefix, their
    latents fire on 0.80-0.81 of parent-and-child tokens, and its child latents are pure (cosine
    with the parent 0.01-0.07). The plain TopK of the same size absorbs: the parent latent fires
    on 0.34-0.44 of those tokens and each child latent writes its parent too (cosine 0.55-0.60).
    Each bound sits between the two, so either side failing its role fails the test."""
    mat, topk = hierarchical["matryoshka"], hierarchical["topk"]
    assert mat["parents_in_prefix"] >= 0.75, hierarchical
    assert mat["parent_recall"] >= 0.7, hierarchical
    assert mat["child_parent_cos"] <= 0.2, hierarchical
    assert topk["parent_recall"] <= 0.55, hierarchical
    assert topk["child_parent_cos"] >= 0.4, hierarchical


def test_planted_hierarchy_read_across_the_matryoshka_prefixes(hierarchical) -> None:
    """The splitting analysis inside the Matryoshka SAE (``splitting/prefixes.py``): the latents
    its second prefix adds are the children, which point away from their parents (novel by
    direction, not split children) yet fire inside them (nested), far above the row-permuted
    null. Measured (data seeds 7, 11): nested 0.81, all of them novel by direction, null 0.00,
    split children 0.00 (the parent the prefix misses takes its children's nesting with it)."""
    mat = hierarchical["matryoshka"]
    assert mat["prefix.nested_fraction"] >= 0.65 and mat["prefix.nested_fraction_null"] <= 0.1, hierarchical
    assert mat["prefix.nested_novel_fraction"] >= 0.6, hierarchical
    assert mat["prefix.split_child_fraction"] <= 0.2, hierarchical
