"""Sparse kernels for k-sparse codes, with hand-written backward passes.

A k-sparse code is a pair ``(values [B, m], indices [B, m])``: token ``b`` uses latents
``indices[b]`` with weights ``values[b]`` (a zero weight is an unused slot). Three primitives cover
every product an SAE step needs, each costing O(B·m·d) instead of the O(B·n·d) of a dense
``[B x n_latents]`` matmul:

- ``bag_sum(w, idx, T)[b]      = Σ_j w[b,j] · T[idx[b,j]]``         (decode; ``F.embedding_bag``)
- ``gather_dot(u, T, idx)[b,j] = <u[b], T[idx[b,j]]>``              (sampled dense-dense product)
- ``scatter_outer(w, u, idx)[i]= Σ_{(b,j): idx[b,j]=i} w[b,j]·u[b]`` (gradient of a table)

``SparseDecode`` and ``SelectedPreacts`` are autograd functions built from them: the first is the
decoder, the second routes gradients of the k selected pre-activations back into the encoder rows,
its bias and ``b_dec``, touching only the selected latents. ``tests/test_sae_model.py`` checks both
against plain dense autograd (values and gradients).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

# The CSR pattern below is built correctly by construction; torch's "beta" notice is noise.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class SparseCode(NamedTuple):
    """Per-token active latents: ``values [B, m]`` (>= 0; 0 = unused slot), ``indices [B, m]``."""

    values: torch.Tensor
    indices: torch.Tensor

    def dense(self, n_latents: int) -> torch.Tensor:
        """The code as a dense ``[B, n_latents]`` matrix (for tests and small analyses only)."""
        out = self.values.new_zeros(self.values.shape[0], n_latents)
        return out.scatter_add_(1, self.indices, self.values)

    def active(self) -> torch.Tensor:
        """Boolean mask ``[B, m]`` of slots that hold an active latent (value > 0)."""
        return self.values > 0


def topk_group_size(n: int, k: int) -> int:
    """Columns per group in ``row_topk``: the power of two nearest below ``sqrt(n / k)``."""
    return 1 << max(0, int(math.log2(math.sqrt(n / max(k, 1)))))


def row_topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row of ``x [B, n]`` (values, indices; in no particular
    order): the values exactly those of ``x.topk(k, dim=1, sorted=False)``; among tied entries,
    which ones are chosen may differ.

    On CPU a two-level search is ~25% faster at the widths that matter (n >> k): split each row into
    ``nb`` strided groups ``{j, j + nb, j + 2nb, ...}`` of ``g`` columns, take each group's max (a
    vectorised elementwise max of ``g`` contiguous slices), keep the ``k`` groups with the largest
    maxima, and run the exact top-k over their ``k·g`` columns only. The values are exact: the i-th
    largest selected group max is at least the i-th largest entry of the row (that entry's group,
    or one with a larger max, is selected), so the candidates hold k entries at least as large as
    the true top k. ``g ≈ sqrt(n/k)`` balances the two small top-k calls. CUDA's top-k is already
    fast, so other devices take the plain call.
    """
    b, n = x.shape
    g = topk_group_size(n, k)
    if x.device.type != "cpu" or g < 4 or n % g or not x.is_contiguous():
        return x.topk(k, dim=1, sorted=False)
    groups = n // g
    group_max = x.view(b, g, groups).amax(dim=1)  # [B, groups]
    _, best = group_max.topk(k, dim=1, sorted=False)
    columns = (best.unsqueeze(2) + torch.arange(0, n, groups, device=x.device)).view(b, k * g)
    values, j = x.gather(1, columns).topk(k, dim=1, sorted=False)
    return values, columns.gather(1, j)


def bag_sum(weights: torch.Tensor, indices: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``out[b] = Σ_j weights[b, j] · table[indices[b, j]]`` without materialising ``[B, m, d]``."""
    return F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")


def gather_dot(u: torch.Tensor, table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``out[b, j] = <u[b], table[indices[b, j]]>``: a sampled product (SDDMM), O(B·m·d).

    ``torch.sparse.sampled_addmm`` evaluates ``u @ table.T`` only at the CSR pattern given by
    ``indices`` (CPU and CUDA kernels); gathering ``table[indices]`` instead would move a
    ``[B, m, d]`` tensor through memory and is several times slower on CPU.
    """
    b, m = indices.shape
    crow = torch.arange(0, b * m + 1, m, device=indices.device, dtype=torch.int64)
    pattern = torch.sparse_csr_tensor(crow, indices.reshape(-1), u.new_zeros(b * m), (b, table.shape[0]),
                                      check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, u, table.t(), beta=0.0).values().view(b, m)


def scatter_outer(weights: torch.Tensor, u: torch.Tensor, indices: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``out[i] = Σ_{(b,j): indices[b,j] = i} weights[b, j] · u[b]``, shape ``[n_rows, d]``.

    Sorting the (token, slot) pairs by latent turns this into one ``embedding_bag`` over the rows
    of ``u`` with a bag per latent: no ``[B·m, d]`` intermediate, no atomic scatter.
    """
    flat = indices.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tokens = torch.div(order, indices.shape[1], rounding_mode="floor")
    counts = torch.bincount(flat, minlength=n_rows)
    offsets = torch.zeros(n_rows, dtype=torch.int64, device=indices.device)
    offsets[1:] = counts.cumsum(0)[:-1]
    return F.embedding_bag(tokens, u, offsets, per_sample_weights=weights.reshape(-1)[order], mode="sum")


class SparseDecode(torch.autograd.Function):
    """``x_hat[b] = Σ_j values[b, j] · decoder[indices[b, j]]`` with sparse gradients.

    d values  = gather_dot(grad, decoder, indices)
    d decoder = scatter_outer(values, grad, indices)  (only the used rows are non-zero)
    """

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, indices: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values, indices, decoder)
        return bag_sum(values, indices, decoder)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor | None]:
        values, indices, decoder = ctx.saved_tensors
        grad = grad.contiguous()
        g_values = gather_dot(grad, decoder, indices) if ctx.needs_input_grad[0] else None
        g_decoder = scatter_outer(values, grad, indices, decoder.shape[0]) if ctx.needs_input_grad[2] else None
        return g_values, None, g_decoder


class SelectedPreacts(torch.autograd.Function):
    """The selected pre-activations ``pre[b, j] = <x[b] - b_dec, encoder[i]> + b_enc[i]``,
    ``i = indices[b, j]``, whose values were already computed by the dense forward (``pre_sel``).

    Only the gradient is new: with ``g = d loss / d pre_sel``,
    d encoder = scatter_outer(g, x - b_dec, indices)     (k rows per token, not n)
    d b_enc   = per-latent sum of g
    d b_dec   = -(per-latent sum of g) @ encoder          (b_dec is subtracted from every input)
    d x       = bag_sum(g, indices, encoder)               (only if x itself needs a gradient)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, b_dec: torch.Tensor, encoder: torch.Tensor, b_enc: torch.Tensor,
                indices: torch.Tensor, pre_sel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, b_dec, encoder, indices)
        ctx.n_latents = b_enc.shape[0]
        return pre_sel.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, b_dec, encoder, indices = ctx.saved_tensors
        grad = grad.contiguous()
        per_latent = torch.zeros(ctx.n_latents, dtype=grad.dtype, device=grad.device)
        per_latent.index_add_(0, indices.reshape(-1), grad.reshape(-1))
        g_x = bag_sum(grad, indices, encoder) if ctx.needs_input_grad[0] else None
        g_b_dec = -(per_latent @ encoder) if ctx.needs_input_grad[1] else None
        g_encoder = (scatter_outer(grad, x - b_dec, indices, ctx.n_latents)
                     if ctx.needs_input_grad[2] else None)
        g_b_enc = per_latent if ctx.needs_input_grad[3] else None
        return g_x, g_b_dec, g_encoder, g_b_enc, None, None


# ------------------------------------------------------------------------------------------
# Ragged codes: a variable number of latents per token (BatchTopK's training selection)
# ------------------------------------------------------------------------------------------
# ``rows [nnz]`` (sorted), ``cols [nnz]`` and ``crow [B + 1]`` (row r's entries are
# ``crow[r]:crow[r+1]``): the CSR layout of the selection. A padded ``[B, max per token]`` layout
# would do the work of the busiest token for every token (~5x k early in BatchTopK training).


def ragged_bag_sum(weights: torch.Tensor, cols: torch.Tensor, crow: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``out[b] = Σ_{e in row b} weights[e] · table[cols[e]]``; an empty row gives 0."""
    return F.embedding_bag(cols, table, crow, per_sample_weights=weights, mode="sum", include_last_offset=True)


def ragged_gather_dot(u: torch.Tensor, table: torch.Tensor, cols: torch.Tensor, crow: torch.Tensor) -> torch.Tensor:
    """``out[e] = <u[row(e)], table[cols[e]]>`` (``gather_dot`` on a ragged pattern)."""
    pattern = torch.sparse_csr_tensor(crow, cols, u.new_zeros(cols.shape[0]), (u.shape[0], table.shape[0]),
                                      check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, u, table.t(), beta=0.0).values()


def ragged_scatter_outer(weights: torch.Tensor, u: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                         n_rows: int) -> torch.Tensor:
    """``out[i] = Σ_{e: cols[e] = i} weights[e] · u[rows[e]]``, ``[n_rows, d]`` (as ``scatter_outer``)."""
    order = torch.argsort(cols, stable=True)
    counts = torch.bincount(cols, minlength=n_rows)
    offsets = torch.zeros(n_rows, dtype=torch.int64, device=cols.device)
    offsets[1:] = counts.cumsum(0)[:-1]
    return F.embedding_bag(rows[order], u, offsets, per_sample_weights=weights[order], mode="sum")


class RaggedDecode(torch.autograd.Function):
    """``SparseDecode`` for a ragged code: ``x_hat[b] = Σ_{e in row b} values[e] · decoder[cols[e]]``."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, crow: torch.Tensor,
                decoder: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values, rows, cols, crow, decoder)
        return ragged_bag_sum(values, cols, crow, decoder)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, rows, cols, crow, decoder = ctx.saved_tensors
        grad = grad.contiguous()
        g_values = ragged_gather_dot(grad, decoder, cols, crow) if ctx.needs_input_grad[0] else None
        g_decoder = (ragged_scatter_outer(values, grad, rows, cols, decoder.shape[0])
                     if ctx.needs_input_grad[4] else None)
        return g_values, None, None, None, g_decoder


class RaggedSelectedPreacts(torch.autograd.Function):
    """``SelectedPreacts`` for a ragged selection: returns ``pre_sel [nnz]`` (already computed by
    the dense forward); the backward touches only the selected (token, latent) pairs."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, b_dec: torch.Tensor, encoder: torch.Tensor, b_enc: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor, crow: torch.Tensor, pre_sel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, b_dec, encoder, rows, cols, crow)
        ctx.n_latents = b_enc.shape[0]
        return pre_sel.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, b_dec, encoder, rows, cols, crow = ctx.saved_tensors
        grad = grad.contiguous()
        per_latent = torch.zeros(ctx.n_latents, dtype=grad.dtype, device=grad.device)
        per_latent.index_add_(0, cols, grad)
        g_x = ragged_bag_sum(grad, cols, crow, encoder) if ctx.needs_input_grad[0] else None
        g_b_dec = -(per_latent @ encoder) if ctx.needs_input_grad[1] else None
        g_encoder = (ragged_scatter_outer(grad, x - b_dec, rows, cols, ctx.n_latents)
                     if ctx.needs_input_grad[2] else None)
        g_b_enc = per_latent if ctx.needs_input_grad[3] else None
        return g_x, g_b_dec, g_encoder, g_b_enc, None, None, None, None
