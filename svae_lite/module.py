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

from .alignment import sparsest_rotation
from .priors import make_prior

__all__ = ["ShiftVAEModule"]


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
        # Cells of each label in the data being fitted (set by set_label_cells_ before
        # training): a tempered mask prior is paid by each cell of its perturbation.
        self.register_buffer("label_cells", torch.ones(n_labels), persistent=False)
        # After freeze_shared_(): the networks are fixed and only these labels' prior rows train.
        self.networks_frozen = False
        self.trainable_labels = None

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``; frozen networks (transfer learning) stay in eval mode."""
        super().train(mode)
        if self.networks_frozen:
            for m in (self.encoder, self.decoder):
                m.eval()
        return self

    def _keep_frozen_in_eval(self):
        # Lightning may restore submodule modes one by one; frozen networks must not update
        # batch-norm statistics or use dropout.
        if self.networks_frozen and (self.encoder.training or self.decoder.training):
            self.encoder.eval()
            self.decoder.eval()

    def freeze_shared_(self, trainable_labels: torch.Tensor) -> list:
        """Freeze everything the labels share (encoder, decoder, dispersion) for transfer
        learning: those parameters stop requiring gradients and the networks stay in eval
        mode (no batch-norm updates, no dropout). Of the prior's tables only the rows where
        ``trainable_labels`` (labels,) is True receive gradients.

        Returns the gradient hooks that zero the other rows; remove them
        (``handle.remove()``) after training.
        """
        for name, p in self.named_parameters():
            if not name.startswith("prior."):
                p.requires_grad_(False)
        self.networks_frozen = True
        self.trainable_labels = trainable_labels.bool().clone()
        keep = trainable_labels.reshape(-1, 1).float()
        return [p.register_hook(lambda g, keep=keep: g * keep.to(g.device))
                for p in self.prior.parameters() if p.requires_grad]

    def set_label_cells_(self, counts) -> None:
        """Cells of each label (labels,) in the data about to be fitted. Labels that do not
        train (frozen by :meth:`freeze_shared_`) count 0: their mask rows are not fitted."""
        counts = torch.as_tensor(counts, dtype=torch.float32, device=self.label_cells.device)
        if self.trainable_labels is not None:
            counts = counts * self.trainable_labels.to(counts.device).float()
        self.label_cells.copy_(counts)

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
        kl_global = self.prior.penalty(cells_per_label=self.label_cells)
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
        qz, z = out["qz"], out["z"]
        if n_samples == 1:  # inference() drops the sample axis for one sample
            z = z.unsqueeze(0)  # (S, cells, d)
        px = self.generative(z, out["library"])["px"]
        log_px = px.log_prob(x.unsqueeze(0).expand_as(px.mean)).sum(-1)
        log_pz = self.prior.log_prob(z, labels)
        log_qz = qz.log_prob(z).sum(-1)
        return torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(n_samples)

    # --- the alignment step of the sparse models ---------------------------------------
    @torch.no_grad()
    def align_(self, rotation=None, seed: int = 0) -> dict:
        """End the dense warm-up of a sparse prior: rotate the latent space by ``rotation``
        ((d, d) orthogonal; default the sparsest rotation of the learned shifts, see
        :func:`svae_lite.alignment.sparsest_rotation`), initialise the masks from the rotated
        shifts and switch them on.

        With frozen networks (transfer learning) the latent space cannot rotate: the step
        only starts the masks of the trainable labels from their shifts.

        Returns ``{"objective": float (nan for a given rotation), "rotation": (d, d) array}``.
        Latents after the step are the latents before it times the rotation.
        """
        if not self.prior.learns_targets:
            raise ValueError(f"{type(self.prior).__name__} has no masks: only sparse models are aligned.")
        if self.networks_frozen:
            self.prior.start_sparse_phase(rows=self.trainable_labels)
            return {"objective": float("nan"), "rotation": np.eye(self.n_latent)}
        if rotation is None:
            shifts = self.prior.perturbation_shifts().cpu().numpy()
            R, objective = sparsest_rotation(shifts, seed=seed)
        else:
            R, objective = np.asarray(rotation, dtype=np.float64), float("nan")
        self.rotate_latents_(torch.as_tensor(R, dtype=torch.float32))
        self.prior.start_sparse_phase()
        return {"objective": objective, "rotation": R}

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
