"""First-order change of a log-probability under an actual update, from the gradient's factors.

For a linear layer y = W x, the gradient of a scalar f with respect to W is G = Δᵀ X
(Δ: T×out output gradients, X: T×in inputs, one row per token of one sequence). For an
update U = W_{s+1} − W_s, ⟨G, U⟩ = Σ_t Δ_t · (U X_t): one T×in by in×out product, and G is
never formed. Summed over every trained matrix this is the first-order prediction of
f(θ_{s+1}) − f(θ_s), exact for any optimizer because U is the update it made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def predicted_delta(x: torch.Tensor, delta: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """⟨Δᵀ X, U⟩ per sequence of a batch: x (B,T,in), delta (B,T,out), update (out,in) -> (B,).

    Padded positions carry Δ = 0 (right padding, causal attention), so no mask is needed.
    fp32 whatever the model's dtype.
    """
    import torch

    moved = torch.matmul(x.float(), update.float().T)  # (B, T, out): U X_t for every token
    return (moved * delta.float()).sum(dim=(1, 2))


def r_squared(predicted, measured) -> float:
    """Coefficient of determination of `measured` by `predicted` (1 − SS_res / SS_tot), as plotted.

    NaN when the measured values do not vary (nothing to explain).
    """
    import numpy as np

    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    total = float(((m - m.mean()) ** 2).sum()) if m.size else 0.0
    if m.size < 2 or total == 0.0:
        return float("nan")
    return 1.0 - float(((m - p) ** 2).sum()) / total
