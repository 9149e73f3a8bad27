"""SAE kernels, architectures and trainer: sparse paths agree with dense autograd, the trainer
recovers a planted dictionary, AuxK revives dead latents, and a killed run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saeatlas.sae.model import ARCHITECTURES, build
from saeatlas.sae.sparse import bag_sum, gather_dot, row_topk, scatter_outer, topk_group_size
from saeatlas.sae.train import TensorSource, TrainConfig, geometric_median, lr_multiplier, train_sae

from conftest import REPO


def test_sparse_primitives_match_dense_products() -> None:
    g = torch.Generator().manual_seed(0)
    b, m, d, n = 37, 5, 12, 50
    table, u = torch.randn(n, d, generator=g), torch.randn(b, d, generator=g)
    w = torch.randn(b, m, generator=g)
    idx = torch.randint(0, n, (b, m), generator=g)  # repeats across tokens (and within a row)
    dense = torch.zeros(b, n).scatter_add_(1, idx, w)
    torch.testing.assert_close(bag_sum(w, idx, table), dense @ table)
    torch.testing.assert_close(gather_dot(u, table, idx), torch.gather(u @ table.t(), 1, idx))
    torch.testing.assert_close(scatter_outer(w, u, idx, n), dense.t() @ u)


@pytest.mark.parametrize("n,k", [(18432, 32), (4608, 256), (96, 5), (100, 3), (2304, 32), (64, 64)])
def test_row_topk_selects_exactly_the_largest_entries(n: int, k: int) -> None:
    """The grouped search must return the same set as torch.topk, including the worst case for
    it (the whole top k inside one group) and masked rows where only k entries are finite."""
    g = torch.Generator().manual_seed(n + k)
    x = torch.randn(40, n, generator=g)
    size = topk_group_size(n, k)
    crowded = torch.arange(min(k, size)) * (n // size)  # one group holds as many of the top k as fit
    x[0, crowded] = 10.0 + torch.arange(len(crowded), dtype=torch.float)
    x[1] = -float("inf")
    x[1, torch.randperm(n, generator=g)[:k]] = torch.randn(k, generator=g)  # AuxK: only k finite
    x[2] = torch.randint(0, 3, (n,), generator=g).float()  # ties: only the values are determined
    values, indices = row_topk(x, k)
    ref_values, ref_indices = x.topk(k, dim=1)
    torch.testing.assert_close(values.sort(dim=1).values, ref_values.sort(dim=1).values)
    torch.testing.assert_close(x.gather(1, indices), values)  # indices point at the values
    assert all(len(set(row.tolist())) == k for row in indices)  # no column twice
    untied = [r for r in range(x.shape[0]) if r != 2]
    assert torch.equal(indices[untied].sort(dim=1).values, ref_indices[untied].sort(dim=1).values)


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("with_dead", [False, True])
def test_topk_sparse_path_equals_dense_reference(apply_b_dec: bool, with_dead: bool) -> None:
    torch.manual_seed(0)
    sae = build("topk", 16, 96, k=5, auxk_k=7, apply_b_dec_to_input=apply_b_dec)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(64, 16) + 2.0
    dead = (torch.arange(96) % 3 == 0) if with_dead else None
    grads, losses = [], []
    for fn in (sae.loss, sae.reference_loss):
        sae.zero_grad()
        out = fn(x, dead)
        out.loss.backward()
        losses.append((out.loss.detach(), out.aux))
        grads.append([p.grad.clone() for p in sae.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    assert (losses[0][1] > 0) == with_dead
    for (name, _), g_sparse, g_dense in zip(sae.named_parameters(), grads[0], grads[1]):
        torch.testing.assert_close(g_sparse, g_dense, rtol=1e-4, atol=1e-5, msg=name)


def test_reused_preact_buffer_never_leaks_into_a_later_step() -> None:
    """``loss`` reuses one [B, n] buffer across steps: a code or gradient kept from one step must not
    change when the next step overwrites the buffer (AuxK masks it in place)."""
    torch.manual_seed(0)
    sae = build("topk", 16, 96, k=5, auxk_k=7)
    x1, x2 = torch.randn(64, 16), torch.randn(64, 16)
    dead = torch.arange(96) % 2 == 0
    first = sae.loss(x1, dead)
    kept = (first.code.values.detach().clone(), first.code.indices.clone())
    sae.loss(x2, dead)  # overwrites the buffer before the first step's backward runs
    torch.testing.assert_close((first.code.values.detach(), first.code.indices), kept)
    first.loss.backward()  # from the tensors the first step saved
    grads = [p.grad.clone() for p in sae.parameters()]
    sae.zero_grad()
    sae.reference_loss(x1, dead).loss.backward()
    for g_first, p in zip(grads, sae.parameters()):
        torch.testing.assert_close(g_first, p.grad, rtol=1e-4, atol=1e-5)
    sae.drop_scratch()
    assert "_preact_buffer" not in vars(sae)


def test_relu_sparse_decode_equals_dense_and_penalty_uses_decoder_norms() -> None:
    torch.manual_seed(0)
    sae = build("relu", 16, 64, l1_coefficient=2.0)
    x = torch.randn(32, 16)
    code = sae.encode(x)
    acts = torch.relu(x @ sae.encoder.t() + sae.b_enc)
    torch.testing.assert_close(code.dense(64), acts)
    torch.testing.assert_close(sae.decode(code), acts @ sae.decoder + sae.b_dec)
    out = sae.loss(x)
    expected = ((x - acts @ sae.decoder - sae.b_dec).pow(2).sum(1).mean()
                + 2.0 * (acts * sae.decoder.norm(dim=1)).sum(1).mean())
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in sae.parameters())


def test_registry_and_unknown_architecture() -> None:
    assert {"topk", "relu"} <= set(ARCHITECTURES)
    with pytest.raises(ValueError, match="unknown SAE architecture 'gated'"):
        build("gated", 4, 8)


def test_decoder_rows_stay_unit_norm_and_parallel_gradient_is_removed() -> None:
    torch.manual_seed(0)
    sae = build("topk", 8, 32, k=3)
    sae.loss(torch.randn(16, 8)).loss.backward()
    sae.remove_parallel_decoder_grad()
    assert (sae.decoder.grad * sae.decoder).sum(1).abs().max() < 1e-6
    with torch.no_grad():
        sae.decoder.mul_(3.0)
    sae.normalise_decoder()
    torch.testing.assert_close(sae.decoder.norm(dim=1), torch.ones(32))


def test_schedule_and_width_scaled_lr() -> None:
    assert lr_multiplier(0, 100, 10, 0.2) == pytest.approx(0.1)
    assert lr_multiplier(50, 100, 10, 0.2) == 1.0
    assert lr_multiplier(90, 100, 10, 0.2) == pytest.approx(0.5)
    cfg = TrainConfig(lr=2e-4, lr_reference_size=16384, n_latents=4096)
    assert cfg.scaled_lr() == pytest.approx(4e-4)


def test_geometric_median_resists_outliers() -> None:
    x = torch.cat([torch.randn(200, 3) * 0.1, torch.full((20, 3), 100.0)])
    assert geometric_median(x).norm() < 1.0 < x.mean(0).norm()


# ------------------------------------------------------------------------------------------
# Planted dictionary: synthetic activations = sparse non-negative combinations of known atoms
# ------------------------------------------------------------------------------------------


def planted(n_atoms: int = 128, d: int = 32, s: int = 4, n: int = 24000, seed: int = 1):
    """``s`` of ``n_atoms`` random unit atoms per token, with coefficients in [0.5, 1.5) and a
    little noise. The seed must differ from the trainer's (``sae.seed``, 0): with the same seed the
    atoms *are* the SAE's initial decoder rows (both a seeded ``randn(n, d)``), and a test would
    recover a dictionary it started from."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    which = torch.rand(n, n_atoms, generator=g).argsort(dim=1)[:, :s]
    coef = torch.rand(n, s, generator=g) + 0.5
    x = torch.zeros(n, d).index_add_(0, torch.arange(n).repeat_interleave(s),
                                     coef.reshape(-1, 1) * atoms[which.reshape(-1)])
    return atoms, x + 0.02 * torch.randn(n, d, generator=g)


def recovery(atoms: torch.Tensor, decoder: torch.Tensor) -> float:
    """Mean over true atoms of the max cosine to a learned decoder row."""
    w = decoder / decoder.norm(dim=1, keepdim=True)
    return float((atoms @ w.t()).max(dim=1).values.mean())


PLANTED_CFG = dict(k=4, lr=2e-3, lr_reference_size=128, batch_size=256, epochs=2, warmup_steps=10,
                   auxk_k=16, dead_after_tokens=2048, checkpoint_every=10**9, exclude_outliers=False)


def test_auxk_revives_latents_that_never_win_the_topk() -> None:
    """Half the latents start with a bias that keeps them out of the top-k: without AuxK they
    never get a gradient and stay dead; AuxK trains them back to life."""
    atoms, x = planted()
    dead_end = {}
    for alpha in (1 / 32, 0.0):
        cfg = TrainConfig(n_latents=128, auxk_alpha=alpha, **PLANTED_CFG)
        torch.manual_seed(0)
        start = build("topk", 32, 128, **cfg.sae_options())
        with torch.no_grad():
            start.b_enc[:64] = -1.0
        result = train_sae(cfg, TensorSource(x), progress=False, initial=start)
        dead_end[alpha] = result.summary["final_dead_fraction"]
    assert dead_end[0.0] >= 0.3  # measured 0.445 (a few drift back in without any help)
    assert dead_end[1 / 32] <= 0.05  # measured 0.008


# ------------------------------------------------------------------------------------------
# Kill and resume
# ------------------------------------------------------------------------------------------

RESUME_SCRIPT = """
import sys, time, torch
sys.path.insert(0, {tests!r})
from test_sae import planted
from saeatlas.sae.train import TensorSource, TrainConfig, train_sae
torch.set_num_threads(1)
_, x = planted(n=12000)
slow = float(sys.argv[2])
cfg = TrainConfig(architecture=sys.argv[3], n_latents=128, k=4, lr=2e-3, lr_reference_size=128, batch_size=256, epochs=3, warmup_steps=10,
                  auxk_k=16, dead_after_tokens=2048, checkpoint_every=5, log_every=5, exclude_outliers=False)
result = train_sae(cfg, TensorSource(x), checkpoint=__import__("pathlib").Path(sys.argv[1]),
                   on_log=lambda row: time.sleep(slow), progress=False)
torch.save(result.sae.state_dict(), sys.argv[1] + ".final")
"""


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_killed_training_resumes_to_the_same_result(tmp_path: Path, architecture: str) -> None:
    """BatchTopK also checks that its threshold buffers (EMA and late-window mean) resume: they are
    part of the state dict compared below."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(REPO / "tests")))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    ckpt = tmp_path / "killed.pt"
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), "0.3", architecture], env=env)
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # let it run past the first checkpoint
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first_step = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < first_step < 3 * (12000 // 256)
    subprocess.run([sys.executable, str(script), str(ckpt), "0", architecture], env=env, check=True, timeout=300)
    fresh = tmp_path / "fresh.pt"
    subprocess.run([sys.executable, str(script), str(fresh), "0", architecture], env=env, check=True, timeout=300)
    resumed = torch.load(str(ckpt) + ".final", weights_only=True)
    uninterrupted = torch.load(str(fresh) + ".final", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    if architecture == "batchtopk":
        assert {"threshold", "window_sum", "window_steps"} <= set(uninterrupted)
        assert int(uninterrupted["window_steps"]) > 0
    for name in uninterrupted:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_checkpoint_resumes_only_on_the_data_and_params_it_was_bound_to(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The stage binds a checkpoint to the store's manifest hash and the params hash: one written
    for other data is ignored (training starts afresh, as the uninterrupted run), never resumed."""
    import logging

    _, x = planted(n=3000)
    cfg = TrainConfig(n_latents=64, **{**PLANTED_CFG, "checkpoint_every": 5})
    ckpt = tmp_path / "checkpoint.pt"
    fresh = train_sae(cfg, TensorSource(x), checkpoint=ckpt, progress=False, binding={"store": "a"})
    assert torch.load(ckpt, weights_only=True)["step"] > 0  # the last checkpoint before the end stays
    caplog.set_level(logging.INFO, logger="saeatlas.sae.train")
    other = train_sae(cfg, TensorSource(x), checkpoint=ckpt, progress=False, binding={"store": "b"})
    assert "written for other data or params" in caplog.text and "resuming" not in caplog.text
    assert other.summary["steps"] == fresh.summary["steps"]
    torch.testing.assert_close(other.sae.decoder, fresh.sae.decoder)
    caplog.clear()
    train_sae(cfg, TensorSource(x), checkpoint=ckpt, progress=False, binding={"store": "b"})
    assert "resuming from" in caplog.text  # the same binding does resume


def test_a_non_finite_loss_stops_training_naming_the_step() -> None:
    from saeatlas.sae.train import TrainingDiverged

    _, x = planted(n=3000)
    cfg = TrainConfig(n_latents=64, **{**PLANTED_CFG, "lr": float("inf")})
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at step 2 .*sae\.lr"):
        train_sae(cfg, TensorSource(x), progress=False)
