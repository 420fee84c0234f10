"""Latent priors p(z | a): the only part of the generative model that differs between models.

Every prior is indexed by the perturbation code ``a`` of each cell (``control_index`` is the
control group; control cells always use the base mechanism N(0, I)) and answers the same
methods, so that the module and the models never ask which prior they hold:

- ``kl_per_latent(qz_loc, qz_scale, labels)``: KL( q(z_j|x) || p(z_j|a) ) per cell and
  latent, (cells, d), nats; ``kl(...)`` is its sum over latents, (cells,);
- ``log_prob(z, labels)``: log p(z|a) at the most probable mask, for importance sampling
  (``z``: (..., cells, d));
- ``penalty(cells_per_label)``: the global term of the ELBO (KL of the masks), nats;
- ``compose(codes)``: the prior of a combination of perturbations ("A+B"), (d,) loc and scale;
- ``shifts()``: the learned mean shifts at the most probable mask, (labels, d);
- ``intervention_probabilities()``: (labels, d) probability that each latent is targeted;
- ``set_dense(flag)`` and ``start_sparse_phase()``: the phases of the sparse models' training (a
  no-op or an error for priors without masks);
- ``rotate_(R)``: re-express the prior in rotated latent coordinates z' = z @ R.

Two class attributes say what a prior can do: ``has_shifts`` (perturbation-specific
parameters exist: iVAE, sVAE, sVAE+) and ``learns_targets`` (sparse masks: sVAE, sVAE+).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validation import check_positive_float

__all__ = ["StandardNormal", "DenseShift", "SparseShift", "gaussian_kl", "make_prior"]


def gaussian_kl(q_loc, q_scale, p_loc, p_scale):
    """Elementwise KL( N(q_loc, q_scale^2) || N(p_loc, p_scale^2) ), nats."""
    var_ratio = (q_scale / p_scale) ** 2
    return 0.5 * (var_ratio + ((q_loc - p_loc) / p_scale) ** 2 - 1.0 - torch.log(var_ratio))


def _normal_log_prob(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def _log_beta(x, y):
    return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)


class StandardNormal(nn.Module):
    """p(z | a) = N(0, I) for every cell (VAE and beta-VAE)."""

    has_shifts = False
    learns_targets = False

    def __init__(self, n_labels: int, n_latent: int, control_index: int):
        super().__init__()
        self.n_labels, self.n_latent, self.control_index = n_labels, n_latent, control_index

    def loc_scale(self, labels, mask=None):
        """Prior mean and standard deviation of each cell: two (cells, d) tensors.
        ``mask`` (labels, d) gates the interventions (None: all on)."""
        shape = (labels.shape[0], self.n_latent)
        zero = torch.zeros(shape, device=labels.device)
        return zero, torch.ones_like(zero)

    def kl(self, q_loc, q_scale, labels):
        """Per-cell KL( q(z|x) || p(z|a) ), summed over latents: (cells,), nats."""
        return self.kl_per_latent(q_loc, q_scale, labels).sum(-1)

    def kl_per_latent(self, q_loc, q_scale, labels):
        """KL( q(z_j|x) || p(z_j|a) ) of every cell and latent: (cells, d), nats."""
        loc, scale = self.loc_scale(labels)
        return gaussian_kl(q_loc, q_scale, loc, scale)

    def log_prob(self, z, labels):
        """log p(z | a) summed over latents at the most probable mask: z.shape[:-1], nats."""
        loc, scale = self.loc_scale(labels, mask=self.map_mask())
        return _normal_log_prob(z, loc, scale).sum(-1)

    def map_mask(self):
        """The most probable mask (labels, d) in {0, 1}; None where every latent may shift."""
        return None

    def penalty(self, cells_per_label=1.0):
        """Global term of the ELBO (nats): none for a prior without masks."""
        return torch.zeros((), device=self._device())

    def compose(self, codes):
        """Prior of the combination of the perturbations ``codes`` (list of int): (d,) loc
        and (d,) scale. N(0, I) for every combination."""
        return torch.zeros(self.n_latent), torch.ones(self.n_latent)

    def shifts(self):
        """Mean shift of every latent per label (labels, d) at the most probable mask."""
        raise ValueError("This model has no perturbation shifts: its prior is N(0, I) for every cell.")

    def intervention_probabilities(self):
        """(labels, d) probability that each label targets each latent: 0 for N(0, I)."""
        return torch.zeros(self.n_labels, self.n_latent)

    def set_dense(self, dense: bool) -> None:
        """Hold the masks at 1 (``True``, the dense warm-up) or use them: no masks here."""

    def start_sparse_phase(self, rows=None) -> None:
        """End the dense warm-up: masks of ``rows`` ((labels,) bool; None: all) initialised
        from their shifts, and the masks switched on."""
        raise ValueError(f"{type(self).__name__} has no masks: only sparse priors have a sparse phase.")

    def rotate_(self, R):
        """Re-express the prior in rotated latent coordinates z' = z @ R (N(0, I) is invariant)."""

    def _device(self):
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


class DenseShift(StandardNormal):
    """iVAE prior: p(z | a) = N(delta_a, diag(sigma_a^2)); every latent may move.

    Parameters
    ----------
    learn_scale
        Also learn a per-perturbation, per-latent log standard deviation (stochastic
        interventions that change the variance).
    """

    has_shifts = True

    def __init__(self, n_labels, n_latent, control_index, learn_scale: bool = True):
        super().__init__(n_labels, n_latent, control_index)
        self.shift = nn.Parameter(torch.zeros(n_labels, n_latent))
        self.log_scale = nn.Parameter(torch.zeros(n_labels, n_latent), requires_grad=learn_scale)
        is_pert = torch.ones(n_labels, 1)
        is_pert[control_index] = 0.0
        self.register_buffer("is_perturbed", is_pert)

    def _gate(self, mask):
        """(labels, d) gate on each latent's intervention; None means all latents."""
        return self.is_perturbed if mask is None else self.is_perturbed * mask

    def loc_scale(self, labels, mask=None):
        g = self._gate(mask)
        loc = (g * self.shift)[labels]
        scale = torch.exp((g * self.log_scale)[labels])
        return loc, scale

    def compose(self, codes):
        """The union of the perturbations' targets, their shifts and log-scales added (the
        mechanisms of independent interventions on different latents combine this way)."""
        g = self._gate(self.map_mask())
        idx = torch.as_tensor(list(codes), dtype=torch.long, device=self.shift.device)
        loc = (g * self.shift)[idx].sum(0)
        log_scale = (g * self.log_scale)[idx].sum(0)
        return loc.detach().cpu(), torch.exp(log_scale).detach().cpu()

    def shifts(self):
        return (self._gate(self.map_mask()) * self.shift).detach().cpu()

    def perturbation_shifts(self):
        """Learned shifts of the perturbed labels only (no masks): (perturbations, d)."""
        return self.shift[self.is_perturbed.squeeze(1).bool()].detach()

    def intervention_probabilities(self):
        return self.is_perturbed.expand(-1, self.n_latent).detach().cpu().clone()

    @torch.no_grad()
    def rotate_(self, R):
        self.shift.copy_(self.shift @ R)
        # Variances are not rotation-equivariant: restart them at the control value.
        self.log_scale.zero_()


PENALTY_SCALES = ("dataset", "cells", "log_cells", "lead_log_cells")


class SparseShift(DenseShift):
    """Sparse mechanism shift prior (sVAE, sVAE+).

    p(z_j | a) = N(m_aj * delta_aj, exp(m_aj * log_sigma_aj)^2) with a binary mask
    m_aj in {0, 1} that says whether perturbation a targets latent j. The mask has a
    variational Bernoulli posterior q(m_aj) = Bernoulli(sigmoid(logit_aj)).

    Parameters
    ----------
    penalty
        ``"l0"``: ``sparsity * E_q[||m||_0]`` (sVAE).
        ``"beta_bernoulli"``: KL(q(m) || p(m)) under a Beta(1, ``sparsity``)-Bernoulli prior
        shared by the perturbations for each latent (sVAE+); the Beta prior is integrated out,
        so latents that few perturbations target are cheaper to keep that way.
    estimator
        ``"gumbel"``: straight-through Gumbel-sigmoid (relaxed Bernoulli) samples of the mask;
        ``"exact"``: exact expectation of the KL over the Bernoulli mask (the KL factorises
        over latents, so E_q(m)[KL] = sum_j p_j KL_on_j + (1 - p_j) KL_off_j).
    temperature
        Temperature of the Gumbel-sigmoid relaxation.
    init_logit
        Initial mask logit (0 = probability 1/2).
    penalty_scale
        ``"dataset"``: the mask term enters the loss once, as in the ELBO; with thousands of
        cells it is then negligible and spurious mask entries that absorb small misfits stay
        on. ``"cells"``: the prior term -log p(m) is paid by every cell of the perturbation
        (a tempered prior; the entropy of q(m) keeps weight 1), so a mask entry must improve
        each cell's fit by about the per-entry penalty (nats) to stay on, and the sparsity
        strength does not fade as screens grow. ``"log_cells"``: the prior term of a
        perturbation's row is paid log(n) times, n its cells in the data being fitted: the
        evidence an entry needs grows like log n while the evidence of a real shift grows
        like n (as in BIC), so a weak effect that many cells support can stay on.
        ``"lead_log_cells"``: each row's lead entry (the latent of its largest |shift|) pays
        log(n) times, every other entry n times: a perturbation's main effect needs only
        evidence that grows with its cells, while each further target must be large in
        every cell (about one control SD), which keeps off the small spurious shifts that a
        strong main effect leaves on other latents of an imperfect latent space.
    penalty_weight
        Multiplies -log p(m) (after ``penalty_scale``): with ``penalty_scale="cells"`` an
        active entry then costs about ``penalty_weight`` times its prior code length (nats)
        per cell; for ``"l0"`` this is the same as scaling ``sparsity``.
    """

    learns_targets = True

    def __init__(self, n_labels, n_latent, control_index, learn_scale=True, penalty="beta_bernoulli",
                 sparsity: float = 1.0, estimator: str = "gumbel", temperature: float = 0.5,
                 init_logit: float = 3.0, penalty_scale: str = "dataset", penalty_weight: float = 1.0):
        super().__init__(n_labels, n_latent, control_index, learn_scale)
        self.penalty_weight = check_positive_float(penalty_weight, "penalty_weight")
        if penalty_scale not in PENALTY_SCALES:
            raise ValueError(f"penalty_scale={penalty_scale!r}: choose one of {PENALTY_SCALES}.")
        self.penalty_scale = penalty_scale
        if penalty not in ("l0", "beta_bernoulli"):
            raise ValueError(f"penalty={penalty!r}: choose 'l0' or 'beta_bernoulli'.")
        if estimator not in ("gumbel", "exact"):
            raise ValueError(f"estimator={estimator!r}: choose 'gumbel' or 'exact'.")
        self.penalty_kind, self.estimator = penalty, estimator
        self.sparsity, self.temperature = float(sparsity), float(temperature)
        self.mask_logit = nn.Parameter(torch.full((n_labels, n_latent), float(init_logit)))
        # While True the mask is held at 1 (dense shifts): the warm-up phase of training.
        self.register_buffer("dense", torch.tensor(False))
        self._sample = None

    def set_dense(self, dense: bool) -> None:
        self.dense.fill_(bool(dense))

    def probs(self):
        """q(m = 1) of every label and latent, (labels, d); 0 for the control row."""
        return torch.sigmoid(self.mask_logit) * self.is_perturbed

    def map_mask(self):
        if bool(self.dense):
            return torch.ones_like(self.mask_logit)
        return (self.probs() > 0.5).float()

    def sample_mask(self):
        """One straight-through Gumbel-sigmoid sample of the whole (labels, d) mask."""
        u = torch.rand_like(self.mask_logit).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((self.mask_logit + torch.log(u) - torch.log1p(-u)) / self.temperature)
        hard = (soft > 0.5).float()
        return hard + soft - soft.detach()

    def kl_per_latent(self, q_loc, q_scale, labels):
        if bool(self.dense):
            return super().kl_per_latent(q_loc, q_scale, labels)
        if self.training and self.estimator == "gumbel":
            self._sample = self.sample_mask()
            loc, scale = self.loc_scale(labels, self._sample)
            return gaussian_kl(q_loc, q_scale, loc, scale)
        p = self.probs()[labels]
        zero = torch.zeros_like(q_loc)
        kl_off = gaussian_kl(q_loc, q_scale, zero, zero + 1.0)
        loc, scale = self.loc_scale(labels)  # mask on
        kl_on = gaussian_kl(q_loc, q_scale, loc, scale)
        return p * kl_on + (1 - p) * kl_off

    def penalty(self, cells_per_label=1.0):
        """KL(q(m) || p(m)) in nats, -log p(m) weighted by ``penalty_weight``; None while the
        masks are held at 1.

        With ``penalty_scale="cells"`` the prior is tempered per perturbation: each row of
        the mask is paid by every cell of its perturbation (``cells_per_label``, (labels,)
        cells in the data being fitted; 0 for rows that are not fitted), whether the row is
        learned in ``train()`` or in ``transfer()``. For the Beta-Bernoulli prior a row's
        code length is then its conditional given the other rows, -log p(m_k | m_-k) (the
        pseudo-likelihood of the masks); with ``"dataset"`` it is the joint -log p(m), paid
        once, as in the ELBO.
        """
        if bool(self.dense):
            return torch.zeros((), device=self.mask_logit.device)
        rows = self.is_perturbed.squeeze(1).bool()
        logit = self.mask_logit[rows]
        p = torch.sigmoid(logit)
        weight = self.penalty_weight * self._entry_weights(cells_per_label, rows)
        if self.penalty_kind == "l0":
            return self.sparsity * (weight * p).sum()
        neg_entropy = (p * F.logsigmoid(logit) + (1 - p) * F.logsigmoid(-logit)).sum()
        m = self._sample[rows] if self._uses_sample() else p
        if self.penalty_scale == "dataset":
            return neg_entropy - self.penalty_weight * self._log_prior_joint(m)
        return neg_entropy - (weight * self._log_prior_entries(m)).sum()

    def _entry_weights(self, cells_per_label, rows):
        """How many times each entry of the fitted rows pays its prior code length
        (``penalty_scale``), (fitted rows, d): once ("dataset"), n ("cells") or log(n)
        ("log_cells") for a row of n cells; "lead_log_cells": log(n) for the row's largest
        |shift|, n for the others. Rows with no cells (not fitted) pay nothing."""
        shape = (int(rows.sum()), self.n_latent)
        dtype, device = self.mask_logit.dtype, self.mask_logit.device
        if self.penalty_scale == "dataset":
            return torch.ones(shape, dtype=dtype, device=device)
        n = torch.as_tensor(cells_per_label, dtype=dtype, device=device).expand(rows.shape[0])[rows]
        n = n.unsqueeze(1).expand(shape)
        log_n = torch.log(n.clamp(min=1.0))
        if self.penalty_scale == "cells":
            return n
        if self.penalty_scale == "log_cells":
            return log_n
        lead = F.one_hot(self.shift[rows].detach().abs().argmax(1), self.n_latent).bool()
        return torch.where(lead, log_n, n)

    def _uses_sample(self) -> bool:
        return self.training and self.estimator == "gumbel" and self._sample is not None

    def _log_prior_joint(self, m):
        """log p(m) under Beta(1, sparsity)-Bernoulli masks, the Beta integrated out per
        latent: sum_j log B(1 + n_j, b + K - n_j) - log B(1, b), n_j = sum_k m_kj."""
        n_on, K = m.sum(0), float(m.shape[0])
        a, b = 1.0, self.sparsity
        return (_log_beta(a + n_on, b + K - n_on)
                - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b)).sum()

    def _log_prior_entries(self, m):
        """log p(m_kj | m_-k) of every entry (K, d): under the integrated Beta(1, b) prior
        each entry is on with probability (1 + n_-kj) / (1 + b + K - 1), n_-kj the other
        rows' active entries on latent j. Summed over a row added to fixed rows (transfer),
        this is the exact increment of the joint code length."""
        K = m.shape[0]
        a, b = 1.0, self.sparsity
        pi = (a + m.sum(0, keepdim=True) - m) / (a + b + K - 1)
        return m * torch.log(pi) + (1 - m) * torch.log1p(-pi)

    def intervention_probabilities(self):
        if bool(self.dense):
            return super().intervention_probabilities()
        return self.probs().detach().cpu().clone()

    @torch.no_grad()
    def init_mask_from_shifts(self, rows=None, threshold: float = 1.0, slope: float = 3.0):
        """Set the mask logits of ``rows`` ((labels,) bool; None: all) from the size of each
        (dense) shift, in control standard deviations: |delta| > threshold -> on."""
        logits = slope * (self.shift.abs() - threshold)
        if rows is None:
            self.mask_logit.copy_(logits)
        else:
            rows = torch.as_tensor(rows, dtype=torch.bool, device=logits.device)
            self.mask_logit[rows] = logits[rows]

    @torch.no_grad()
    def start_sparse_phase(self, rows=None) -> None:
        self.init_mask_from_shifts(rows)
        self.set_dense(False)


def make_prior(kind: str, n_labels: int, n_latent: int, control_index: int, **kwargs):
    """Build a prior by name: ``standard``, ``dense`` or ``sparse``."""
    if kind == "standard":
        return StandardNormal(n_labels, n_latent, control_index)
    if kind == "dense":
        return DenseShift(n_labels, n_latent, control_index, **kwargs)
    if kind == "sparse":
        return SparseShift(n_labels, n_latent, control_index, **kwargs)
    raise ValueError(f"prior kind {kind!r}: choose 'standard', 'dense' or 'sparse'.")
