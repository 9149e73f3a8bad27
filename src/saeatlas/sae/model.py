"""SAE architectures behind a small registry.

Conventions (shared by every architecture, and by ``io.py``'s SAELens export):
- inputs are residual-stream vectors already scaled by the store's normalisation (E||x||^2 = d);
- ``encoder [n, d]`` holds one row per latent (the transpose of SAELens' ``W_enc [d, n]``) so that
  the sparse backward touches contiguous rows; ``decoder [n, d]`` is SAELens' ``W_dec``;
- ``pre = (x - b_dec) @ encoder.T + b_enc`` when ``apply_b_dec_to_input`` else ``x @ encoder.T + b_enc``;
- ``x_hat = Σ_active a_i · decoder[i] + b_dec``, computed sparsely (``sparse.SparseDecode``).

Adding an architecture (gated, ...) is one subclass with ``@register("name")``
implementing ``encode_with_preacts`` and ``loss`` (BatchTopK and Matryoshka: ``batchtopk.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from saeatlas.sae.sparse import SelectedPreacts, SparseCode, SparseDecode, row_topk

ARCHITECTURES: dict[str, type["SAE"]] = {}


def register(name: str) -> Callable[[type["SAE"]], type["SAE"]]:
    def wrap(cls: type["SAE"]) -> type["SAE"]:
        cls.architecture = name
        ARCHITECTURES[name] = cls
        return cls
    return wrap


def build(architecture: str, d_in: int, n_latents: int, **options: Any) -> "SAE":
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown SAE architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](d_in, n_latents, **options)


@dataclass
class Losses:
    """One training step's objective and the numbers the training curve shows."""

    loss: torch.Tensor  # what is minimised
    fvu: torch.Tensor  # Σ||x - x_hat||² / Σ||x - mean(x)||² over the batch (detached)
    aux: torch.Tensor  # AuxK or L1 term before its coefficient (detached; 0 if unused)
    code: SparseCode


def batch_fvu(x: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained on a batch, centred on the batch mean."""
    return err.pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)


class SAE(nn.Module):
    architecture: ClassVar[str] = ""
    default_apply_b_dec_to_input: ClassVar[bool] = True
    unit_norm_decoder: ClassVar[bool] = True

    def __init__(self, d_in: int, n_latents: int, init_decoder_norm: float = 1.0,
                 apply_b_dec_to_input: bool | None = None):
        super().__init__()
        self.d_in, self.n_latents = d_in, n_latents
        # An option (not only a class constant) so that imported SAELens SAEs keep their convention.
        self.apply_b_dec_to_input = (self.default_apply_b_dec_to_input if apply_b_dec_to_input is None
                                     else apply_b_dec_to_input)
        decoder = torch.randn(n_latents, d_in)
        decoder *= init_decoder_norm / decoder.norm(dim=1, keepdim=True)
        self.decoder = nn.Parameter(decoder)
        self.encoder = nn.Parameter(decoder.clone())  # tied initialisation (Gao et al. 2024, §A.1)
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    # -- the architecture-specific part ----------------------------------------------------
    def encode_with_preacts(self, x: torch.Tensor) -> tuple[SparseCode, torch.Tensor]:
        raise NotImplementedError

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """Architecture options that ``build`` needs to recreate this SAE (saved in checkpoints)."""
        return {}

    def after_step(self, code: SparseCode, step: int, total: int) -> None:
        """Called by the trainer after optimiser step ``step`` (1-based) of ``total`` with that
        step's training code: where an architecture estimates inference-only state (BatchTopK's
        threshold). Anything it changes must be a buffer, so checkpoints carry it."""

    # -- shared ----------------------------------------------------------------------------
    def preacts(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Dense pre-activations ``[B, n]``; no autograd graph (gradients go through
        ``SelectedPreacts`` for the latents that are actually used).

        ``out``, if given, is overwritten and returned: a training step reuses one buffer, because
        a fresh ``[B, n]`` tensor (300 MB at B=4096, n=18432) is fresh pages from the kernel on
        every step, and faulting them in cost ~15% of a CPU step (``benchmarks/sae_train.py``).
        """
        with torch.no_grad():
            inp = x - self.b_dec if self.apply_b_dec_to_input else x
            pre = inp @ self.encoder.t() if out is None else torch.mm(inp, self.encoder.t(), out=out)
            return pre.add_(self.b_enc)  # in place: addmm would first copy the bias into [B, n]

    def input_shift(self) -> torch.Tensor:
        """What the encoder subtracts from its input: ``b_dec``, or zeros for an SAE that does not
        (``apply_b_dec_to_input``); the sparse backward kernels take it as an argument."""
        return self.b_dec if self.apply_b_dec_to_input else torch.zeros_like(self.b_dec)

    def _scratch(self, x: torch.Tensor) -> torch.Tensor:
        """The reusable ``[B, n]`` pre-activation buffer for ``loss`` (not part of the state; one
        per module, so one module must not run ``loss`` from two threads at once)."""
        buf = getattr(self, "_preact_buffer", None)
        shape = (x.shape[0], self.n_latents)
        dtype = torch.promote_types(x.dtype, self.encoder.dtype)  # what the matmul produces
        if (buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != x.device
                or buf.is_inference() != torch.is_inference_mode_enabled()):
            buf = torch.empty(shape, dtype=dtype, device=x.device)
            self._preact_buffer = buf
        return buf

    def drop_scratch(self) -> None:
        """Free the training buffer (the trainer calls this when it is done)."""
        self.__dict__.pop("_preact_buffer", None)

    def encode(self, x: torch.Tensor) -> SparseCode:
        return self.encode_with_preacts(x)[0]

    def decode(self, code: SparseCode) -> torch.Tensor:
        return SparseDecode.apply(code.values, code.indices, self.decoder) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        if self.unit_norm_decoder:
            self.decoder /= self.decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out of each decoder row's gradient its component along the row: with unit-norm
        rows this is the tangent direction of the sphere, so Adam's step does not fight the
        renormalisation that follows it (Bricken et al. 2023; Gao et al. 2024)."""
        if self.unit_norm_decoder and self.decoder.grad is not None:
            g, w = self.decoder.grad, self.decoder
            along = torch.einsum("nd,nd->n", g, w).unsqueeze(1)  # row dots as a batched matmul: no [n, d] temporary
            g.addcmul_(along, w, value=-1.0)


@register("topk")
class TopKSAE(SAE):
    """TopK SAE (Makhzani & Frey 2013; Gao et al. 2024): keep the k largest pre-activations,
    ReLU them, decode with unit-norm decoder rows. Dead latents get the AuxK loss."""

    def __init__(self, d_in: int, n_latents: int, k: int = 32, auxk_k: int = 256, auxk_alpha: float = 1 / 32,
                 apply_b_dec_to_input: bool | None = None):
        super().__init__(d_in, n_latents, apply_b_dec_to_input=apply_b_dec_to_input)
        if not 0 < k <= n_latents:
            raise ValueError(f"k must be in 1..{n_latents}, got {k}")
        self.k, self.auxk_k, self.auxk_alpha = k, auxk_k, auxk_alpha

    def options(self) -> dict[str, Any]:
        return {"k": self.k, "auxk_k": self.auxk_k, "auxk_alpha": self.auxk_alpha}

    def _select(self, x: torch.Tensor, pre: torch.Tensor, k: int) -> SparseCode:
        values, indices = row_topk(pre, k)
        selected = SelectedPreacts.apply(x, self.input_shift(), self.encoder, self.b_enc, indices, values)
        return SparseCode(F.relu(selected), indices)

    def encode_with_preacts(self, x: torch.Tensor, out: torch.Tensor | None = None
                            ) -> tuple[SparseCode, torch.Tensor]:
        pre = self.preacts(x, out)
        return self._select(x, pre, self.k), pre

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        """FVU of the batch, plus ``auxk_alpha`` × AuxK: the top-``auxk_k`` *dead* latents
        reconstruct the (detached) residual error, normalised by its variance (Gao et al. 2024 §A.2).

        The dense pre-activations live in a buffer reused across steps: nothing returned aliases it
        (``_select`` gathers values and indices into new tensors)."""
        code, pre = self.encode_with_preacts(x, self._scratch(x))
        return self._with_auxk(x, pre, code, x - self.decode(code), dead)

    def _with_auxk(self, x: torch.Tensor, pre: torch.Tensor, code: SparseCode, err: torch.Tensor,
                   dead: torch.Tensor | None) -> Losses:
        """FVU of ``err`` plus the AuxK term: the top ``auxk_k`` dead latents (by ``pre``, which
        is overwritten: not needed afterwards) reconstruct the detached residual error."""
        fvu = batch_fvu(x, err)
        loss, aux = fvu, torch.zeros((), device=x.device)
        if dead is not None and self.auxk_alpha > 0:
            n_dead = int(dead.sum())
            if n_dead:
                masked = pre.masked_fill_(~dead, float("-inf"))
                aux_code = self._select(x, masked, min(self.auxk_k, n_dead))
                e = err.detach()
                e_hat = SparseDecode.apply(aux_code.values, aux_code.indices, self.decoder)
                aux = batch_fvu(e, e - e_hat)
                loss = loss + self.auxk_alpha * aux
        return Losses(loss, fvu.detach(), aux.detach(), code)

    def reference_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        """The same objective with plain dense autograd: the oracle the sparse path is tested against."""
        pre = (x - self.b_dec if self.apply_b_dec_to_input else x) @ self.encoder.t() + self.b_enc
        values, indices = pre.detach().topk(self.k, dim=1, sorted=False)
        acts = torch.zeros_like(pre).scatter(1, indices, F.relu(pre.gather(1, indices)))
        return self._dense_with_auxk(x, pre, acts, dead, SparseCode(acts.gather(1, indices), indices))

    def _dense_with_auxk(self, x: torch.Tensor, pre: torch.Tensor, acts: torch.Tensor, dead: torch.Tensor | None,
                         code: SparseCode) -> Losses:
        """The oracles' FVU of the dense code ``acts`` plus the AuxK term, in plain dense autograd."""
        err = x - (acts @ self.decoder + self.b_dec)
        fvu = batch_fvu(x, err)
        loss, aux = fvu, torch.zeros((), device=x.device)
        if dead is not None and self.auxk_alpha > 0 and int(dead.sum()):
            masked = pre.detach().masked_fill(~dead, float("-inf"))
            _, aux_idx = masked.topk(min(self.auxk_k, int(dead.sum())), dim=1, sorted=False)
            aux_acts = torch.zeros_like(pre).scatter(1, aux_idx, F.relu(pre.gather(1, aux_idx)))
            e = err.detach()
            aux = batch_fvu(e, e - aux_acts @ self.decoder)
            loss = loss + self.auxk_alpha * aux
        return Losses(loss, fvu.detach(), aux.detach(), code)


@register("relu")
class ReLUSAE(SAE):
    """ReLU SAE with an L1 penalty weighted by decoder norms, as in *Scaling Monosemanticity*
    (Templeton et al. 2024, and Anthropic's April 2024 update): loss = E||x - x_hat||² +
    λ Σ_i f_i ||W_dec,i||; decoder norms are free (no renormalisation), b_dec is not subtracted
    from the input. The encoder backward is dense (ReLU keeps many latents active early on); the
    decode still only gathers the active rows."""

    default_apply_b_dec_to_input = False
    unit_norm_decoder = False

    def __init__(self, d_in: int, n_latents: int, l1_coefficient: float = 5.0,
                 apply_b_dec_to_input: bool | None = None):
        super().__init__(d_in, n_latents, init_decoder_norm=0.1, apply_b_dec_to_input=apply_b_dec_to_input)
        self.l1_coefficient = l1_coefficient

    def options(self) -> dict[str, Any]:
        return {"l1_coefficient": self.l1_coefficient}

    def encode_with_preacts(self, x: torch.Tensor) -> tuple[SparseCode, torch.Tensor]:
        pre = torch.addmm(self.b_enc, x - self.b_dec if self.apply_b_dec_to_input else x, self.encoder.t())
        acts = F.relu(pre)
        width = max(int((acts > 0).sum(dim=1).max()), 1)
        values, indices = acts.topk(width, dim=1, sorted=False)
        return SparseCode(values, indices), pre

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> Losses:
        code, _ = self.encode_with_preacts(x)
        err = x - self.decode(code)
        norms = self.decoder.norm(dim=1)
        l1 = (code.values * norms[code.indices]).sum(dim=1).mean()
        loss = err.pow(2).sum(dim=1).mean() + self.l1_coefficient * l1
        return Losses(loss, batch_fvu(x, err).detach(), l1.detach(), code)


# BatchTopK and Matryoshka live in their own module; importing it registers them.
from saeatlas.sae import batchtopk as _batchtopk  # noqa: E402,F401
