"""Training machinery: the training plan, the alignment callback and the checked arguments
of ``ShiftModel.train``.

A sparse model (sVAE, sVAE+) trains in three phases, switched here:

1. dense warm-up (``prior.set_dense(True)``): shifts without masks, an iVAE;
2. the alignment step (:class:`AlignmentCallback`, at ``dense_fraction * max_epochs``):
   ``module.align_`` rotates the latent space to make the learned shifts sparsest and
   starts the masks from the rotated shifts;
3. the sparse phase: masks, shifts and networks trained together.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from lightning.pytorch.callbacks import Callback
from scvi.train import TrainingPlan

from . import _validation as V

__all__ = ["ShiftTrainingPlan", "AlignmentCallback", "TrainingArgs", "default_max_epochs", "phase_callbacks",
           "DEFAULT_LR_ANNEAL"]


#: ``train()``'s default ``lr_anneal``: both learning rates fall along a half cosine over the
#: last quarter of the epochs. With constant rates the fit wanders by about half a nat per
#: cell between late epochs (benchmarks/README.md, "Learning rates annealed at the end").
DEFAULT_LR_ANNEAL = 0.25


def default_max_epochs(n_obs: int) -> int:
    """scvi-tools' rule: 400 epochs for < 20k cells, fewer above (at least 100)."""
    return max(100, min(400, int(round(20000 / n_obs * 400))))


@dataclass
class TrainingArgs:
    """``ShiftModel.train``'s arguments after checking (see its docstring)."""

    max_epochs: int
    lr: float
    prior_lr: float
    batch_size: int
    n_epochs_kl_warmup: int
    early_stopping: bool
    train_size: float
    seed: int | None
    lr_anneal: float = DEFAULT_LR_ANNEAL
    plan_kwargs: dict = field(default_factory=dict)

    @classmethod
    def check(cls, n_obs, max_epochs, lr, prior_lr, batch_size, n_epochs_kl_warmup,
              early_stopping, train_size, seed, plan_kwargs, trainer_kwargs,
              lr_anneal=DEFAULT_LR_ANNEAL) -> "TrainingArgs":
        """Validate every argument before the trainer starts (clear errors, not Lightning's)."""
        if max_epochs is None:
            max_epochs = default_max_epochs(n_obs)
        max_epochs = V.check_positive_int(max_epochs, "max_epochs")
        if n_epochs_kl_warmup is None:
            n_epochs_kl_warmup = max(1, max_epochs // 10)
        V.check_early_stopping(early_stopping, trainer_kwargs)
        early_stopping = bool(early_stopping)
        if train_size is None:
            train_size = 0.9 if early_stopping else 1.0
        train_size = V.check_fraction(train_size, "train_size")
        if train_size == 0:
            raise ValueError("train_size=0 leaves no training cells: use a fraction in (0, 1].")
        if early_stopping and train_size >= 1.0:
            raise ValueError("early_stopping=True needs validation cells: use train_size < 1.")
        return cls(max_epochs=max_epochs, lr=V.check_positive_float(lr, "lr"),
                   prior_lr=V.check_positive_float(prior_lr, "prior_lr"),
                   batch_size=V.check_positive_int(batch_size, "batch_size"),
                   n_epochs_kl_warmup=V.check_kl_warmup(n_epochs_kl_warmup, max_epochs),
                   early_stopping=early_stopping, train_size=train_size,
                   seed=V.check_seed(seed),
                   lr_anneal=V.check_fraction(lr_anneal, "lr_anneal", closed_right=False),
                   plan_kwargs=V.check_plan_kwargs(plan_kwargs, max_epochs))

    def plan(self) -> dict:
        """Keyword arguments of the training plan."""
        plan = dict(lr=self.lr, prior_lr=self.prior_lr, n_epochs_kl_warmup=self.n_epochs_kl_warmup,
                    lr_anneal=self.lr_anneal)
        plan.update(self.plan_kwargs)
        return plan


def phase_callbacks(model, args: TrainingArgs, dense_fraction, rotation, trainer_kwargs) -> list:
    """Set the prior's phase for ``model.train``: a sparse model with ``dense_fraction > 0``
    (default 0.5) starts dense and gets the alignment callback; otherwise no phases.
    ``trainer_kwargs`` gets ``min_epochs`` past the alignment when early stopping."""
    prior = model.module.prior
    if not prior.learns_targets:
        if dense_fraction is not None or rotation is not None:
            raise ValueError("dense_fraction and alignment_rotation only apply to sparse "
                             f"models, not {type(model).__name__}.")
        return []
    dense_fraction = 0.5 if dense_fraction is None else V.check_fraction(
        dense_fraction, "dense_fraction", closed_right=False)
    align_epoch = int(round(dense_fraction * args.max_epochs))
    prior.set_dense(align_epoch > 0)
    if align_epoch == 0:
        return []
    if args.early_stopping:
        trainer_kwargs.setdefault("min_epochs", align_epoch + 1)
    return [AlignmentCallback(model, align_epoch, args.seed or 0, rotation)]


class AlignmentCallback(Callback):
    """Ends the dense warm-up of a sparse model after epoch ``epoch``: the alignment step.

    ``rotation`` is None (the sparsest rotation), a (d, d) array, or a callable
    ``f(model) -> array | None`` evaluated just before the step (for diagnostics: it may
    read the model's latents; None keeps the sparsest rotation). The step's record
    (``epoch``, ``objective``, ``rotation``) is stored as ``model.alignment_``.
    """

    def __init__(self, model, epoch: int, seed: int, rotation=None):
        self.model, self.epoch, self.seed, self.rotation = model, epoch, seed, rotation

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 != self.epoch:
            return
        module = self.model.module
        was_training = module.training
        rotation = self.rotation(self.model) if callable(self.rotation) else self.rotation
        record = module.align_(rotation=rotation, seed=self.seed)
        module.train(was_training)
        self.model.alignment_ = {"epoch": self.epoch, **record}
        for opt in trainer.optimizers:
            opt.state = defaultdict(dict)  # Adam's moments refer to the old coordinates


def anneal_factor(epoch: int, max_epochs: int, fraction: float) -> float:
    """Multiplier of the learning rates in ``epoch`` (0-based) of ``max_epochs``: 1, then
    over the last ``fraction`` of the epochs a half cosine from 1 towards 0 (the last epoch
    still learns a little). With constant rates, Adam's steps keep the fit wandering by
    about half a nat per cell between late epochs; annealing lets it settle."""
    start = (1.0 - fraction) * max_epochs
    if fraction <= 0 or epoch < start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - start) / (max_epochs - start)))


class ShiftTrainingPlan(TrainingPlan):
    """scvi-tools TrainingPlan with its own learning rate for the prior's parameters, an
    optional annealing of both rates at the end of training (``lr_anneal``, see
    :func:`anneal_factor`) and a loss check that stops training with a clear error when the
    loss stops being finite.

    It optimises with fused Adam and sums the epoch's ELBO terms on the device, logging them
    once per epoch rather than with five Lightning ``log`` calls per step: the same history
    keys and values as scvi-tools' plan (``train_loss``, ``elbo_train``,
    ``reconstruction_loss_train``, ``kl_local_train``, ``kl_global_train``, ``kl_weight``)
    with one device synchronisation per epoch.
    """

    def __init__(self, module, *, prior_lr: float = 1e-2,
                 lr_anneal: float = DEFAULT_LR_ANNEAL, **kwargs):
        super().__init__(module, **kwargs)
        self.prior_lr = prior_lr
        self.lr_anneal = lr_anneal
        self._sums = None
        self._n_obs = self._n_batches = 0

    def configure_optimizers(self):
        prior_ids = {id(p) for p in self.module.prior.parameters()}
        net = [p for p in self.module.parameters() if p.requires_grad and id(p) not in prior_ids]
        prior = [p for p in self.module.prior.parameters() if p.requires_grad]
        groups = []
        if net:
            groups.append({"params": net, "lr": self.lr, "weight_decay": self.weight_decay})
        if prior:
            groups.append({"params": prior, "lr": self.prior_lr, "weight_decay": 0.0})
        optimizer = torch.optim.Adam(groups, eps=self.eps, fused=True)
        if self.lr_anneal <= 0:
            return {"optimizer": optimizer}
        max_epochs = self.trainer.max_epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: anneal_factor(epoch, max_epochs, self.lr_anneal))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def training_step(self, batch, batch_idx):
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs.update({"kl_weight": self.kl_weight})
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        loss = out.loss
        with torch.no_grad():
            n = out.n_obs_minibatch
            terms = torch.stack([loss.detach() * n, out.reconstruction_loss_sum.detach(),
                                 out.kl_local_sum.detach(), torch.as_tensor(out.kl_global_sum).detach()
                                 .to(loss)]).float()
            self._sums = terms if self._sums is None else self._sums + terms
            self._n_obs += n
            self._n_batches += 1
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss.item()} in epoch {self.current_epoch + 1} "
                f"(step {self.global_step + 1}); training stopped. Try a smaller learning rate (lr, prior_lr), "
                "check that the data are raw counts without extreme outliers, or lengthen "
                "the KL warm-up."
            )
        return loss

    def on_train_epoch_end(self):
        """Log the epoch's ELBO terms (one device sync per epoch), as scvi-tools' metrics:
        reconstruction and local KL per cell, global KL per minibatch, ELBO = their sum with
        the global KL divided by the number of training cells."""
        if self._sums is None:
            return
        loss_sum, rec, kl_local, kl_global = self._sums.tolist()
        n, nb = max(self._n_obs, 1), max(self._n_batches, 1)
        rec, kl_local, kl_global = rec / n, kl_local / n, kl_global / nb
        n_total = self.n_obs_training if self.n_obs_training and self.n_obs_training > 0 else 1
        self.log("train_loss", loss_sum / n, on_epoch=True, prog_bar=True)
        self.log("elbo_train", rec + kl_local + kl_global / n_total, on_epoch=True)
        self.log("reconstruction_loss_train", rec, on_epoch=True)
        self.log("kl_local_train", kl_local, on_epoch=True)
        self.log("kl_global_train", kl_global, on_epoch=True)
        if "kl_weight" in self.loss_kwargs:
            self.log("kl_weight", float(self.loss_kwargs["kl_weight"]), on_epoch=True)
        self._sums = None
        self._n_obs = self._n_batches = 0


