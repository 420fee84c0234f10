"""The generative module shared by every model: encoder q(z|x), a prior p(z|a), decoder p(x|z).

One torch module (scvi-tools ``BaseModuleClass``) with a swappable prior from
:mod:`svae_lite.priors`. The encoder sees log1p counts only (never the perturbation label);
the decoder is scVI's: gene proportions from a softmax, times the observed library size,
negative binomial (or Poisson) likelihood with per-gene inverse dispersion.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Normal, Poisson
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data

from .priors import DenseShift, SparseShift, StandardNormal

__all__ = ["ShiftVAEModule", "make_prior", "sparsest_rotation"]


def make_prior(kind: str, n_labels: int, n_latent: int, control_index: int, **kwargs):
    """Build a prior by name: ``standard``, ``dense`` or ``sparse``."""
    if kind == "standard":
        return StandardNormal(n_labels, n_latent, control_index)
    if kind == "dense":
        return DenseShift(n_labels, n_latent, control_index, **kwargs)
    if kind == "sparse":
        return SparseShift(n_labels, n_latent, control_index, **kwargs)
    raise ValueError(f"prior kind {kind!r}: choose 'standard', 'dense' or 'sparse'.")


def _mlp(n_in, n_hidden, n_layers, dropout_rate, use_batch_norm):
    layers, d = [], n_in
    for _ in range(n_layers):
        layers += [nn.Linear(d, n_hidden)]
        if use_batch_norm:
            layers += [nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3)]
        layers += [nn.ReLU()]
        if dropout_rate > 0:
            layers += [nn.Dropout(dropout_rate)]
        d = n_hidden
    return nn.Sequential(*layers)


class ShiftVAEModule(BaseModuleClass):
    """scVI-like VAE whose latent prior depends on the perturbation label.

    Parameters
    ----------
    n_input
        Number of genes G.
    n_labels
        Number of perturbation categories, control included.
    control_index
        Code of the control category.
    n_latent, n_hidden, n_layers, dropout_rate, use_batch_norm
        Architecture of encoder and decoder (both ``n_layers`` x ``n_hidden``).
    prior, prior_kwargs
        Prior kind (``standard``/``dense``/``sparse``) and its keyword arguments.
    beta
        Weight of the local KL term (beta-VAE when > 1).
    likelihood
        ``"nb"`` or ``"poisson"``.
    kl_free_bits
        Free bits (nats per latent per cell; 0 = the plain ELBO). While training, each
        latent's KL, averaged over the minibatch, enters the loss as at least this much, so a
        latent that carries less information costs nothing more and is not switched off
        (posterior collapse). Latents above the floor are unaffected; the reported
        ``kl_local`` and ELBO are always the true KL.
    """

    def __init__(self, n_input: int, n_labels: int, control_index: int, n_latent: int = 10,
                 n_hidden: int = 128, n_layers: int = 2, dropout_rate: float = 0.1,
                 use_batch_norm: bool = True, prior: str = "standard", prior_kwargs: dict | None = None,
                 beta: float = 1.0, likelihood: str = "nb", kl_free_bits: float = 0.0):
        super().__init__()
        if likelihood not in ("nb", "poisson"):
            raise ValueError(f"likelihood={likelihood!r}: choose 'nb' or 'poisson'.")
        self.n_input, self.n_latent, self.beta, self.likelihood = n_input, n_latent, beta, likelihood
        self.kl_free_bits = float(kl_free_bits)
        self.encoder = _mlp(n_input, n_hidden, n_layers, dropout_rate, use_batch_norm)
        self.z_loc = nn.Linear(n_hidden, n_latent)
        self.z_log_scale = nn.Linear(n_hidden, n_latent)
        self.decoder = _mlp(n_latent, n_hidden, n_layers, 0.0, use_batch_norm)
        self.px_logits = nn.Linear(n_hidden, n_input)
        self.px_log_theta = nn.Parameter(torch.zeros(n_input) + math.log(10.0))
        self.prior = make_prior(prior, n_labels, n_latent, control_index, **(prior_kwargs or {}))
        # Number of training cells: scales the global (mask) term so the loss is per cell.
        self.register_buffer("n_obs", torch.tensor(1.0))

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``; frozen networks (transfer learning) stay in eval mode."""
        super().train(mode)
        if getattr(self, "networks_frozen", False):
            for m in (self.encoder, self.decoder):
                m.eval()
        return self

    def _keep_frozen_in_eval(self):
        # Lightning may restore submodule modes one by one; frozen networks must not update
        # batch-norm statistics or use dropout.
        if getattr(self, "networks_frozen", False) and (self.encoder.training or self.decoder.training):
            self.encoder.eval()
            self.decoder.eval()

    # --- scvi-tools plumbing -------------------------------------------------------------
    def _get_inference_input(self, tensors):
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    def _get_generative_input(self, tensors, inference_outputs):
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "labels": tensors[REGISTRY_KEYS.LABELS_KEY].long().view(-1),
        }

    @auto_move_data
    def inference(self, x, n_samples: int = 1):
        """q(z|x). Returns ``qz`` (Normal, (cells, d)), ``z`` ((n_samples,) cells, d) and
        ``library`` (log total counts, (cells, 1))."""
        self._keep_frozen_in_eval()
        h = self.encoder(torch.log1p(x))
        loc = self.z_loc(h)
        scale = torch.exp(self.z_log_scale(h).clamp(-10, 5)) + 1e-4
        qz = Normal(loc, scale)
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        library = torch.log(x.sum(1, keepdim=True).clamp(min=1.0))
        return {"qz": qz, "z": z, "library": library}

    @auto_move_data
    def generative(self, z, library, labels=None):
        """p(x|z): ``px`` (NegativeBinomial or Poisson over genes) and ``px_scale``
        (gene proportions, rows sum to 1)."""
        self._keep_frozen_in_eval()
        shape = z.shape
        h = self.decoder(z.reshape(-1, shape[-1]))
        px_scale = torch.softmax(self.px_logits(h), -1).reshape(*shape[:-1], self.n_input)
        rate = torch.exp(library) * px_scale
        if self.likelihood == "nb":
            px = NegativeBinomial(mu=rate, theta=torch.exp(self.px_log_theta))
        else:
            px = Poisson(rate)
        return {"px": px, "px_scale": px_scale}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        x = tensors[REGISTRY_KEYS.X_KEY]
        labels = tensors[REGISTRY_KEYS.LABELS_KEY].long().view(-1)
        qz = inference_outputs["qz"]
        recon = -generative_outputs["px"].log_prob(x).sum(-1)
        kl_latent = self.prior.kl_per_latent(qz.loc, qz.scale, labels)  # (cells, d)
        kl_local = kl_latent.sum(-1)
        # penalty_scale "cells" tempers the mask prior: -log p(m) is paid once per cell of a
        # perturbation (weight n_obs / n_labels) instead of once per data set.
        tempered = getattr(self.prior, "penalty_scale", "dataset") == "cells"
        kl_global = self.prior.penalty(prior_weight=self.n_obs / self.prior.n_labels if tempered else 1.0)
        weight = kl_weight * self.beta
        global_term = kl_weight * kl_global / self.n_obs
        if self.training and self.kl_free_bits > 0:
            # Free bits: mean_cells(recon) + weight * sum_j max(mean_cells(KL_j), floor).
            kl_term = torch.clamp(kl_latent.mean(0), min=self.kl_free_bits).sum()
            loss = torch.mean(recon) + weight * kl_term + global_term
        else:
            loss = torch.mean(recon + weight * kl_local) + global_term
        return LossOutput(loss=loss, reconstruction_loss=recon, kl_local=kl_local, kl_global=kl_global)

    # --- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def marginal_ll(self, x, labels, n_samples: int = 100):
        """Importance-weighted estimate of log p(x | a, library) per cell, (cells,), in nats."""
        out = self.inference(x, n_samples=n_samples)
        qz, z = out["qz"], out["z"]  # z: (S, cells, d)
        px = self.generative(z, out["library"])["px"]
        log_px = px.log_prob(x.unsqueeze(0).expand_as(px.mean)).sum(-1)
        log_pz = self.prior.log_prob(z, labels)
        log_qz = qz.log_prob(z).sum(-1)
        return torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(n_samples)

    # --- the alignment step of the sparse models ---------------------------------------
    @torch.no_grad()
    def rotate_latents_(self, R: torch.Tensor):
        """Reparameterise the latent space as z' = z @ R (R orthogonal, (d, d)).

        The encoder's mean head, the decoder's first layer and the prior's shifts are rotated
        together, so the likelihood and the control prior N(0, I) are unchanged; only the
        encoder's (diagonal) posterior variances are approximated.
        """
        R = R.to(self.z_loc.weight)
        self.z_loc.weight.copy_(R.T @ self.z_loc.weight)
        self.z_loc.bias.copy_(self.z_loc.bias @ R)
        # Log-scales mixed with weights R**2 (rows sum to one): a geometric-mean approximation.
        self.z_log_scale.bias.copy_(self.z_log_scale.bias @ (R**2))
        self.z_log_scale.weight.copy_((R**2).T @ self.z_log_scale.weight)
        first = self.decoder[0]
        first.weight.copy_(first.weight @ R)
        self.prior.rotate_(R)


def sparsest_rotation(S: np.ndarray, n_restarts: int = 10, n_steps: int = 400, seed: int = 0,
                      eps: float = 1e-2) -> tuple[np.ndarray, float]:
    """Orthogonal R (d, d) minimising the smoothed L1 norm of ``S @ R``.

    ``S`` (perturbations, d) holds the dense shifts of a fitted model. If the latent space is
    the true one up to a rotation, the true shifts are sparse, so the rotation that makes
    ``S @ R`` sparsest undoes it. Several random restarts; the lowest objective wins (no
    ground truth used). Returns ``(R, objective)``.
    """
    with torch.enable_grad():
        return _sparsest_rotation(S, n_restarts, n_steps, seed, eps)


def _sparsest_rotation(S, n_restarts, n_steps, seed, eps):
    S_t = torch.as_tensor(S, dtype=torch.float64)
    d = S_t.shape[1]
    scale = S_t.abs().max().clamp(min=1e-8)
    S_t = S_t / scale
    gen = torch.Generator().manual_seed(seed)
    # Starting rotations: the identity, then random ones.
    Q0 = torch.eye(d, dtype=torch.float64).repeat(n_restarts, 1, 1)
    for r in range(1, n_restarts):
        A = torch.randn(d, d, generator=gen, dtype=torch.float64)
        Q0[r] = torch.linalg.matrix_exp(A - A.T)
    # All restarts are optimised at once (about 8x faster than one after another): the
    # gradient of the summed objective for restart r is that of restart r alone, and Adam
    # acts elementwise, so this is n_restarts independent runs.
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
    best = int(torch.argmin(objs))  # the first of equal minima, as one by one
    return R[best].numpy(), float(objs[best])
