"""The alignment step of the sparse models: the rotation that makes learned shifts sparsest.

After the dense warm-up (an iVAE), the latent space is close to a rotation of the true one:
control cells keep N(0, I), which is invariant under rotations, so nothing in the dense
model picks the axes. If every perturbation moves only a few true latents, the rotation
that makes the K x d matrix of learned shifts sparsest undoes the unknown rotation.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["sparsest_rotation"]


def sparsest_rotation(S: np.ndarray, n_restarts: int = 10, n_steps: int = 400, seed: int = 0,
                      eps: float = 1e-2) -> tuple[np.ndarray, float]:
    """Orthogonal R (d, d) minimising the smoothed L1 norm sum sqrt((S R)^2 + eps^2).

    ``S`` (perturbations, d) holds the dense shifts of a fitted model, in control standard
    deviations. Several restarts (the identity, then random rotations, seeded by ``seed``)
    are optimised with Adam over R = Q0 expm(X - X^T); the lowest objective wins (no
    ground truth used). Returns ``(R, objective)`` with the objective of ``S`` scaled to a
    largest entry of 1.
    """
    if S.ndim != 2 or S.shape[0] == 0:
        raise ValueError(f"sparsest_rotation needs a (perturbations, d) matrix with at least one "
                         f"row; got shape {S.shape} (were there perturbed cells in training?).")
    with torch.enable_grad():
        return _sparsest_rotation(S, n_restarts, n_steps, seed, eps)


def _sparsest_rotation(S, n_restarts, n_steps, seed, eps):
    S_t = torch.as_tensor(S, dtype=torch.float64)
    d = S_t.shape[1]
    S_t = S_t / S_t.abs().max().clamp(min=1e-8)
    gen = torch.Generator().manual_seed(seed)
    # Starting rotations: the identity, then random ones.
    Q0 = torch.eye(d, dtype=torch.float64).repeat(n_restarts, 1, 1)
    for r in range(1, n_restarts):
        A = torch.randn(d, d, generator=gen, dtype=torch.float64)
        Q0[r] = torch.linalg.matrix_exp(A - A.T)
    # All restarts are optimised at once: the gradient of the summed objective for restart r
    # is that of restart r alone, and Adam acts elementwise, so these are independent runs.
    X = torch.zeros(n_restarts, d, d, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([X], lr=0.05)
    for _ in range(n_steps):
        R = Q0 @ torch.linalg.matrix_exp(X - X.transpose(1, 2))
        obj = torch.sqrt((S_t @ R) ** 2 + eps**2).sum()
        opt.zero_grad()
        obj.backward()
        opt.step()
    with torch.no_grad():
        R = Q0 @ torch.linalg.matrix_exp(X - X.transpose(1, 2))
        objs = torch.sqrt((S_t @ R) ** 2 + eps**2).sum((1, 2))
    best = int(torch.argmin(objs))  # the first of equal minima
    return R[best].numpy(), float(objs[best])
