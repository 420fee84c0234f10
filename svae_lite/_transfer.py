"""Transfer learning: new perturbations learned with everything shared frozen.

:class:`TransferMixin` is mixed into :class:`svae_lite.ShiftModel`.
"""
from __future__ import annotations

import math
import warnings

import pandas as pd
import torch
from anndata import AnnData

from . import _validation as V

__all__ = ["TransferMixin", "MIN_TRANSFER_STEPS"]

#: Fewest optimisation steps of a default ``transfer()``.
MIN_TRANSFER_STEPS = 1000


class TransferMixin:
    """``transfer()`` of a fitted :class:`~svae_lite.ShiftModel`."""

    def transfer(self, adata_new: AnnData, max_epochs: int | None = None, prior_lr: float = 1e-2,
                 batch_size: int = 256, dense_fraction: float | None = None, seed: int | None = 0,
                 **train_kwargs):
        """Learn perturbations unseen in training with everything shared frozen.

        Returns a new model of the same class on ``adata_new`` whose encoder, decoder and
        dispersion are copies of this model's and stay fixed; only the new perturbations'
        prior parameters (shift, scale, and mask for sparse models) are trained, on the cells
        of ``adata_new`` (which may be few per perturbation). Perturbations already known keep
        their parameters.

        Sparse models learn the new perturbations as ``train()`` learns all of them: dense
        shifts first (``dense_fraction`` of the epochs, default 0.5), then the new masks start
        from those shifts (no rotation: the latent space is frozen) and masks and shifts
        train together, each new perturbation's mask row paid for by each of its cells in
        ``adata_new``, as in ``train()``.

        ``self`` is not modified; ``adata_new`` is registered with the new model like
        :meth:`setup_anndata` does (adds ``obs['_svae_perturbation']``,
        ``obs['_scvi_labels']`` and ``uns['_scvi_*']``; counts untouched). It must hold the
        training genes in the training order and may lack control cells.

        ``max_epochs`` defaults to at least 200 epochs and at least
        :data:`MIN_TRANSFER_STEPS` optimisation steps: with few cells an epoch is one step,
        and the prior's parameters (shifts of several control SDs at ``prior_lr``) need
        hundreds of Adam steps to get there. As in ``train()``, the learning rate falls
        along a half cosine over the last quarter of the epochs (``lr_anneal``, 0 for a
        constant rate); ``train_kwargs`` go to ``train()``.
        """
        new = self._check_transfer_data(adata_new)
        batch_size = V.check_positive_int(batch_size, "batch_size")
        batches = math.ceil(adata_new.n_obs / batch_size)
        if max_epochs is None:
            max_epochs = max(200, math.ceil(MIN_TRANSFER_STEPS / batches))
        elif V.check_positive_int(max_epochs, "max_epochs") * batches < MIN_TRANSFER_STEPS // 2:
            warnings.warn(
                f"transfer() runs only {max_epochs * batches} optimisation steps "
                f"({max_epochs} epochs of {batches} minibatches): the new shifts may stay too "
                "small for their masks to switch on. Leave max_epochs unset (at least "
                f"{MIN_TRANSFER_STEPS} steps) unless this is a quick check.",
                V.SvaeLiteWarning, stacklevel=2)
        model = self._transfer_copy(adata_new, new)
        n_old = len(self.perturbations_)
        trainable = torch.zeros(len(model.perturbations_), dtype=torch.bool)
        trainable[n_old:] = True
        hooks = model.module.freeze_shared_(trainable)
        try:
            extra = {} if dense_fraction is None else {"dense_fraction": dense_fraction}
            model.train(max_epochs=max_epochs, prior_lr=prior_lr, batch_size=batch_size, seed=seed,
                        n_epochs_kl_warmup=train_kwargs.pop("n_epochs_kl_warmup", None),
                        **extra, **train_kwargs)
        finally:
            for h in hooks:
                h.remove()
        model.transferred_from_ = type(self).__name__
        return model

    def _check_transfer_data(self, adata_new) -> list[str]:
        """Check ``adata_new`` and return its perturbations the model does not know."""
        if not isinstance(adata_new, AnnData):
            raise TypeError(f"adata_new must be an AnnData, got {type(adata_new).__name__}.")
        if not self.module.prior.has_shifts:
            raise ValueError(
                f"{type(self).__name__} has no perturbation-specific parameters to transfer: its "
                "prior is N(0, I) for every cell, so new perturbations need no training."
            )
        V.check_not_view(adata_new, "adata_new")
        V.check_unique_genes(adata_new.var_names, "adata_new")
        self._counts(adata_new)  # gene and count checks
        args = self.adata_manager.registry["setup_args"]
        labels = V.check_perturbation_column(adata_new.obs, args["perturbation_key"], args["control"],
                                             require_control=False, where="adata_new")
        known = set(self.perturbations_)
        new = [p for p in pd.unique(labels) if p not in known]
        if not new:
            raise ValueError("adata_new holds no perturbation the model does not already know.")
        return new

    def _transfer_copy(self, adata_new, new: list[str]):
        """A model of the same class on ``adata_new`` (registered with the known plus the new
        perturbations) holding a copy of this model's parameters; new rows of the prior's
        tables keep their initial values."""
        args = dict(self.adata_manager.registry["setup_args"])
        key, control, layer = args["perturbation_key"], args["control"], args.get("layer")
        labels = adata_new.obs[key].astype(str)
        setup_method_args = type(self)._get_setup_method_args(
            cls=type(self), adata=adata_new, perturbation_key=key, control=control, layer=layer)
        type(self)._register(adata_new, labels, self.perturbations_ + new, layer, setup_method_args)
        init = dict(self.init_params_["non_kwargs"])
        init.update(self.init_params_["kwargs"].get("prior_kwargs", {}))
        model = type(self)(adata_new, **init)
        sd = model.module.state_dict()
        n_old = len(self.perturbations_)
        for name, val in self.module.state_dict().items():
            if sd[name].shape == val.shape:
                sd[name] = val.clone()
            else:  # the prior's (labels, d) tables: copy the known rows
                sd[name][:n_old] = val
        model.module.load_state_dict(sd)
        return model
