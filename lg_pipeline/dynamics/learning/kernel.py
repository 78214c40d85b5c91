"""Per-layer gradient inner products between probes and training examples, from the gradients' factors.

`grad_inner(o, u)` = ⟨∇_W log p(probe o), ∇_W L_u⟩ for one layer's weight W: one number per (probe, training
example, layer). In Ren & Sutherland's decomposition Δ log π(o) ≈ −η A_o K_{o,u} G_u (A: the probe's softmax
Jacobian, K: the empirical NTK between the two inputs, G: the training example's loss residual) this is A·K·G
already contracted to a scalar, closer to TracIn's gradient product than to the paper's eNTK K itself (the study
and earlier versions of this module called it `ntk`).

⟨Δ_oᵀ X_o, Δ_uᵀ X_u⟩ = Σ_{t,t'} (Δ_o Δ_uᵀ)_{tt'} (X_o X_uᵀ)_{tt'}: two token-by-token Gram
matrices instead of two out×in gradients. With plain SGD the update of a batch of B examples
is −lr/B Σ_u ∇L_u, so −lr/B Σ_u grad_inner(o, u) is the probe's predicted change through that layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def grad_inner(x_o: torch.Tensor, d_o: torch.Tensor, x_u: torch.Tensor, d_u: torch.Tensor) -> torch.Tensor:
    """Inner products of per-sequence gradients: probes (P,T,·) × training examples (U,S,·) -> (P, U).

    x_*: layer inputs, d_*: output gradients; padded rows must have Δ = 0 (they then add nothing).
    """
    import torch

    x_o, d_o, x_u, d_u = x_o.float(), d_o.float(), x_u.float(), d_u.float()
    inputs = torch.einsum("pti,usi->puts", x_o, x_u)
    outputs = torch.einsum("pto,uso->puts", d_o, d_u)
    return (inputs * outputs).sum(dim=(2, 3))
