"""BatchTopK (Bussmann, Leask & Nanda 2024) and its Matryoshka form (Bussmann, Nabeshima,
Karvonen & Nanda 2025): TopK's objective with the sparsity budget shared across the batch in
training, and a learned JumpReLU threshold at inference. Registered in ``model.ARCHITECTURES`` on
import (``model`` imports this module), with the conventions stated in ``model``'s docstring."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F

from saeatlas.config import valid_prefix_ends
from saeatlas.sae.model import Losses, TopKSAE, batch_fvu, register
from saeatlas.sae.sparse import RaggedDecode, RaggedSelectedPreacts, SelectedPreacts, SparseCode, row_topk


def ragged_offsets(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """CSR row offsets ``[n_rows + 1]`` of entries sorted by ``rows``."""
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return crow


@dataclass
class RaggedCode:
    """A batch's code with a variable number of active latents per token (BatchTopK's training
    code): entries sorted by token, ``crow`` their CSR offsets, ``values`` with gradients."""

    rows: torch.Tensor
    cols: torch.Tensor
    crow: torch.Tensor
    values: torch.Tensor

    def subset(self, keep: torch.Tensor) -> "RaggedCode":
        """The entries where ``keep`` holds (still sorted by token; gradients flow through)."""
        rows = self.rows[keep]
        return RaggedCode(rows, self.cols[keep], ragged_offsets(rows, self.crow.shape[0] - 1), self.values[keep])

    @torch.no_grad()
    def per_token(self, n_rows: int) -> SparseCode:
        """Detached, as ``[B, m]`` (``m`` = the most any token got; unused slots hold latent 0 with
        value 0): what the trainer's firing counts, L0 and the threshold read."""
        slot = torch.arange(self.rows.shape[0], device=self.rows.device) - self.crow[self.rows]
        width = max(int((self.crow[1:] - self.crow[:-1]).max()), 1) if n_rows else 1
        indices = torch.zeros(n_rows, width, dtype=torch.int64, device=self.rows.device)
        values = torch.zeros(n_rows, width, dtype=self.values.dtype, device=self.rows.device)
        indices[self.rows, slot] = self.cols
        values[self.rows, slot] = self.values.detach()
        return SparseCode(values, indices)


def batch_topk(pre: torch.Tensor, budget: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``budget`` largest entries of the whole ``[B, n]`` matrix as ``(rows, cols, values)``,
    the values exactly those of ``pre.view(-1).topk(budget)``.

    A top-k over all ``B·n`` entries (75M at B=4096, n=18432) costs ~13x a row top-k on CPU, so
    each row first offers its ``m = 4k`` largest entries and the top ``budget`` is taken over
    those ``B·m`` candidates. That is exact whenever every row's smallest candidate falls below
    the smallest value kept: the row's other entries are no larger, so none of them belongs to
    the top ``budget``. A row that fails this (it may hold more than ``m`` winners: usual early
    in training, when large-norm tokens take many latents) doubles ``m`` and the search repeats;
    at ``m >= n/4`` the full search is as cheap.
    """
    b, n = pre.shape
    m = 4 * k
    while 4 * m < n:
        if budget <= b * m:
            cand_values, cand_indices = row_topk(pre, m)
            values, j = cand_values.view(-1).topk(budget, sorted=False)
            if not bool((cand_values.amin(dim=1) >= values.min()).any()):
                return torch.div(j, m, rounding_mode="floor"), cand_indices.view(-1)[j], values
        m *= 2
    values, flat = pre.view(-1).topk(budget, sorted=False)
    return torch.div(flat, n, rounding_mode="floor"), flat % n, values


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    """BatchTopK SAE (Bussmann, Leask & Nanda 2024): TopK's objective with the sparsity budget
    shared across the batch. A training step keeps the ``k × B`` largest ReLU'd pre-activations of
    the whole ``[B, n]`` batch, so each token uses a variable number of latents (hard tokens more,
    easy ones fewer) and only the batch mean is ``k``. Dead latents get TopK's AuxK loss unchanged.

    Inference cannot look at a batch (a token's code must not depend on its neighbours), so
    ``encode`` is a JumpReLU: ``z · 1[z > θ]`` with ``z`` the pre-activation (ReLU'd: ``θ`` below 0
    acts as 0). The threshold is **one global scalar**: the mean, over the last
    ``THRESHOLD_WINDOW`` of the training steps, of the smallest activation each batch kept (before
    that window, an exponential moving average of it, rate ``THRESHOLD_EMA``, so the SAE encodes
    sensibly mid-run). The late window, not a plain EMA, because the threshold must match the
    *final* weights: the learning rate decays to 0 over the last ``sae.decay_fraction`` (0.2) of the
    steps, so in the last tenth the weights barely move, while an EMA over a short run still carries
    early, larger thresholds (measured: mean L0 2.9 instead of 4 on the planted test). Global,
    not per-latent, because that is the rule the training selection itself applies: in a BatchTopK
    step a latent is active iff its activation beats the batch's ``k·B``-th largest, one number for
    all latents; a per-latent estimate would be noisy for rare latents, which are kept only a few
    times per batch. Applied to the training distribution it gives a mean L0 close to ``k``.

    The threshold is kept as a per-latent buffer ``threshold [n]`` filled with that scalar: it is
    then in every checkpoint (``state_dict``) and is exactly SAELens 6's saved form of a BatchTopK
    SAE (a JumpReLU SAE with a threshold vector), so an imported JumpReLU SAE with genuinely
    per-latent thresholds is represented exactly too. Such an import has no ``k`` (``k=None``):
    it encodes and decodes, but cannot be trained.

    The batch count is ``batch_k`` rather than ``k``: ``features.encode_store`` stores ``sae.k``
    codes per token when an SAE has one, which would truncate tokens above the mean; without it
    the store keeps ``features.max_active`` per token, as for ReLU SAEs.
    """

    THRESHOLD_WINDOW: ClassVar[float] = 0.1  # the final fraction of the steps the threshold averages
    THRESHOLD_EMA: ClassVar[float] = 0.01  # before that window: ~the last 100 steps

    def __init__(self, d_in: int, n_latents: int, k: int | None = 32, auxk_k: int = 256,
                 auxk_alpha: float = 1 / 32, apply_b_dec_to_input: bool | None = None):
        super().__init__(d_in, n_latents, k=1 if k is None else k, auxk_k=auxk_k, auxk_alpha=auxk_alpha,
                         apply_b_dec_to_input=apply_b_dec_to_input)
        del self.k  # see the class docstring: ``batch_k``, never ``k``
        self.batch_k = k
        self.register_buffer("threshold", torch.zeros(n_latents))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.int64))  # EMA steps
        self.register_buffer("window_sum", torch.zeros((), dtype=torch.float64))  # Σ smallest kept
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.int64))

    def options(self) -> dict[str, Any]:
        return {"k": self.batch_k, "auxk_k": self.auxk_k, "auxk_alpha": self.auxk_alpha}

    def encode_with_preacts(self, x: torch.Tensor, out: torch.Tensor | None = None
                            ) -> tuple[SparseCode, torch.Tensor]:
        """The inference code: JumpReLU with the learned threshold, as wide as the busiest token."""
        pre = self.preacts(x, out)
        keep = pre > self.threshold.clamp_min(0)
        width = max(int(keep.sum(dim=1).max()), 1) if pre.shape[0] else 1
        values, indices = torch.where(keep, pre, 0.0).topk(min(width, self.n_latents), dim=1, sorted=False)
        selected = SelectedPreacts.apply(x, self.input_shift(), self.encoder, self.b_enc, indices, values)
        return SparseCode(selected * (values > 0), indices), pre

    def _batch_pick(self, x: torch.Tensor, pre: torch.Tensor) -> "RaggedCode":
        """The training code: the ``k·B`` largest entries of the whole batch, as a ragged code
        sorted by token, its values carrying gradients (through ``RaggedSelectedPreacts``: each
        token costs what it uses). A negative pick is ReLU'd to 0: it decodes to nothing and,
        through ReLU's zero slope at 0, gets no gradient."""
        b, n = pre.shape
        budget = min(int(self.batch_k) * b, b * n)
        rows, cols, flat_values = batch_topk(pre, budget, int(self.batch_k))
        order = torch.argsort(rows, stable=True)
        rows, cols, flat_values = rows[order], cols[order], flat_values[order].clamp_min(0)
        crow = ragged_offsets(rows, b)
        acts = F.relu(RaggedSelectedPreacts.apply(x, self.input_shift(), self.encoder, self.b_enc, rows, cols, crow,
                                                  flat_values))
        return RaggedCode(rows, cols, crow, acts)

    def _decode_ragged(self, code: "RaggedCode") -> torch.Tensor:
        """``Σ_active a_i · decoder[i]`` per token (no ``b_dec``), with gradients."""
        return RaggedDecode.apply(code.values, code.rows, code.cols, code.crow, self.decoder)

    def _batch_select(self, x: torch.Tensor, pre: torch.Tensor) -> tuple[SparseCode, torch.Tensor]:
        """The training code laid out per token (detached) and the reconstruction ``x_hat``
        (with gradients)."""
        code = self._batch_pick(x, pre)
        return code.per_token(x.shape[0]), self._decode_ragged(code) + self.b_dec

    @torch.no_grad()
    def after_step(self, code: SparseCode, step: int, total: int) -> None:
        """Fold this batch's smallest kept activation into the threshold: the window mean in the
        last ``THRESHOLD_WINDOW`` of the steps, else the EMA (whose first update takes the value
        as it is, so it does not start from the zero the buffer holds)."""
        kept = code.values.detach()
        kept = kept[kept > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min()
        if step > total - max(1, math.ceil(self.THRESHOLD_WINDOW * total)):
            self.window_sum += smallest.double()
            self.window_steps += 1
            self.threshold.fill_(float(self.window_sum / self.window_steps))
        elif int(self.threshold_updates) == 0:
            self.threshold.fill_(smallest)
            self.threshold_updates += 1
        else:
            self.threshold.mul_(1 - self.THRESHOLD_EMA).add_(self.THRESHOLD_EMA * smallest)
            self.threshold_updates += 1

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        """FVU with the batch-wide top ``k·B`` code, plus TopK's AuxK term for dead latents (per
        token, over the dead latents only, exactly as ``TopKSAE.loss``). The threshold is left to
        ``after_step`` (the trainer's call), so ``loss`` itself changes no state."""
        if self.batch_k is None:
            raise ValueError("this BatchTopK SAE was imported without k (a foreign JumpReLU SAE): "
                             "it can encode and decode but not train")
        pre = self.preacts(x, self._scratch(x))
        code, x_hat = self._batch_select(x, pre)
        return self._with_auxk(x, pre, code, x - x_hat, dead)

    def _dense_batch_acts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(pre, acts)`` with the batch-wide top ``k·B`` kept: the oracles' code."""
        pre = (x - self.b_dec if self.apply_b_dec_to_input else x) @ self.encoder.t() + self.b_enc
        flat = pre.detach().reshape(-1).topk(min(int(self.batch_k) * x.shape[0], pre.numel()), sorted=False).indices
        mask = torch.zeros(pre.numel(), dtype=torch.bool, device=pre.device)
        mask[flat] = True
        return pre, F.relu(pre) * mask.view_as(pre)

    def reference_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        """The same objective with plain dense autograd (no threshold update): the test oracle."""
        pre, acts = self._dense_batch_acts(x)
        nz = acts.detach()
        width = max(int((nz > 0).sum(1).max()), 1)
        values, indices = nz.topk(width, dim=1, sorted=False)
        return self._dense_with_auxk(x, pre, acts, dead, SparseCode(values, indices))


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen & Nanda 2025): BatchTopK whose
    dictionary is read as nested prefixes, latents ``[0, m_1) ⊂ [0, m_2) ⊂ ... ⊂ [0, n)``, each
    trained to reconstruct on its own. The loss sums the FVU of every prefix's reconstruction
    (``b_dec`` plus the active latents below the prefix's end), so the first latents must carry
    what a small dictionary would: broad, frequent features that do not hand their direction to
    narrower children (the absorption a plain SAE learns, because a child latent that also writes
    its parent's direction saves one active latent).

    The code is BatchTopK's: one selection over the whole dictionary per batch (the prefixes
    change only the loss), a global JumpReLU threshold at inference, exported to SAELens as
    ``jumprelu`` exactly like BatchTopK (the prefixes travel in the metadata). So an SAE of
    18,432 latents *contains* SAEs of its prefix sizes: encoding with the full model and keeping
    the latents below ``m`` is what the prefix-``m`` dictionary would emit under this threshold.

    ``prefixes`` are the inner prefix ends, each in ``1..n-1``; the full dictionary is always the
    last prefix. The ``fvu`` reported is the full dictionary's; the loss is larger than it by the
    inner prefixes' FVUs.
    """

    def __init__(self, d_in: int, n_latents: int, k: int | None = 32, prefixes: Sequence[int] = (),
                 auxk_k: int = 256, auxk_alpha: float = 1 / 32, apply_b_dec_to_input: bool | None = None):
        super().__init__(d_in, n_latents, k=k, auxk_k=auxk_k, auxk_alpha=auxk_alpha,
                         apply_b_dec_to_input=apply_b_dec_to_input)
        ends = [int(m) for m in prefixes]
        if not valid_prefix_ends(ends, n_latents):
            raise ValueError(f"Matryoshka prefixes must be strictly increasing, each in 1..{n_latents - 1}; "
                             f"got {ends}")
        self.prefixes = tuple(ends)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "prefixes": list(self.prefixes)}

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        """Σ over prefixes of the prefix reconstruction's FVU, plus TopK's AuxK term on the full
        reconstruction's error. Each latent group (between two prefix ends) is decoded once and
        the prefix reconstructions are running sums, so the decode costs what BatchTopK's does."""
        if self.batch_k is None:
            raise ValueError("this Matryoshka SAE was imported without k: it can encode and decode but not train")
        pre = self.preacts(x, self._scratch(x))
        code = self._batch_pick(x, pre)
        x_hat = self.b_dec.expand_as(x)
        inner = torch.zeros((), device=x.device)
        lo = 0
        for hi in (*self.prefixes, self.n_latents):
            group = code.subset((code.cols >= lo) & (code.cols < hi))
            x_hat = x_hat + self._decode_ragged(group)
            if hi < self.n_latents:
                inner = inner + batch_fvu(x, x - x_hat)
            lo = hi
        out = self._with_auxk(x, pre, code.per_token(x.shape[0]), x - x_hat, dead)
        out.loss = out.loss + inner
        return out

    def reference_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        """The same objective with dense autograd (BatchTopK's oracle plus the dense prefix sums)."""
        out = super().reference_loss(x, dead)
        _, acts = self._dense_batch_acts(x)
        for m in self.prefixes:
            out.loss = out.loss + batch_fvu(x, x - (acts[:, :m] @ self.decoder[:m] + self.b_dec))
        return out
