"""User-facing models: ``VAE``, ``BetaVAE``, ``iVAE``, ``SVAE`` and ``SVAEPlus``.

All five are presets of one class, :class:`ShiftModel`, over one torch module
(:class:`svae_lite.module.ShiftVAEModule`); they differ only in the latent prior and a few
hyper-parameters. The API follows scvi-tools::

    SVAEPlus.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = SVAEPlus(adata, n_latent=15)
    model.train()
    z = model.get_latent_representation()
    targets = model.get_intervention_targets()

``ShiftModel`` holds registration, construction and training; the queries live in
:mod:`svae_lite._queries`, transfer learning in :mod:`svae_lite._transfer`, the training
plan and the alignment step in :mod:`svae_lite._training`.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from . import _validation as V
from ._data import TensorDataSplitter
from ._queries import QueryMixin
from ._training import DEFAULT_LR_ANNEAL, ShiftTrainingPlan, TrainingArgs, phase_callbacks
from ._transfer import TransferMixin
from .module import ShiftVAEModule

__all__ = ["ShiftModel", "VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus"]

LABEL_COLUMN = "_svae_perturbation"
# Model arguments a preset's ``_defaults`` may set besides the prior's, with their values when
# it does not; every other key of ``_defaults`` goes to the prior.
_MODULE_DEFAULTS = {"dropout_rate": 0.1, "beta": 1.0, "kl_free_bits": 0.0}


class ShiftModel(QueryMixin, TransferMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """A VAE for perturbation screens whose latent prior depends on the perturbation.

    Use one of the presets (:class:`VAE`, :class:`BetaVAE`, :class:`iVAE`, :class:`SVAE`,
    :class:`SVAEPlus`) rather than this class.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (raw counts, perturbation labels).
    n_latent
        Latent dimension d.
    n_hidden, n_layers
        Width and depth of encoder and decoder.
    dropout_rate, use_batch_norm
        Regularisation of the encoder (and batch norm of the decoder). Default dropout: the
        preset's (0.1; 0 for the sparse models).
    likelihood
        ``"nb"`` (negative binomial, default) or ``"poisson"``.
    beta
        Weight of the KL term (1 for a VAE).
    kl_free_bits
        Free bits, nats per latent per cell (see :class:`svae_lite.module.ShiftVAEModule`):
        keeps latents that carry little information from collapsing onto the prior during
        training. Default: the preset's (0 = the plain ELBO).
    seed
        Seeds the initial weights (None: torch's global random state), so that the same
        seeds in ``__init__`` and :meth:`train` give the same fit on CPU.
    **prior_kwargs
        Passed to the prior (see :mod:`svae_lite.priors`).
    """

    _prior = "standard"
    _defaults: dict = {}
    _module_cls = ShiftVAEModule
    _training_plan_cls = ShiftTrainingPlan
    _data_splitter_cls = TensorDataSplitter  # minibatches from counts preloaded on the device

    def __init__(self, adata: AnnData | None = None, n_latent: int = 10, n_hidden: int = 128,
                 n_layers: int = 2, dropout_rate: float | None = None, use_batch_norm: bool = True,
                 likelihood: str = "nb", beta: float | None = None, kl_free_bits: float | None = None,
                 seed: int | None = 0, **prior_kwargs):
        super().__init__(adata)
        if adata is None:
            raise ValueError("Pass the AnnData registered with setup_anndata.")
        self.perturbations_ = list(self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY).categorical_mapping)
        control = self.adata_manager.registry["setup_args"]["control"]
        self.control_ = control
        n_latent = V.check_n_latent(n_latent, adata.n_vars, len(self.perturbations_) - 1)
        V.check_positive_int(n_hidden, "n_hidden")
        V.check_positive_int(n_layers, "n_layers")
        dropout_rate, beta, kl_free_bits = self._network_settings(dropout_rate, beta, kl_free_bits)
        kwargs = {k: v for k, v in self._defaults.items() if k not in _MODULE_DEFAULTS}
        kwargs.update(prior_kwargs)
        seed = V.check_seed(seed)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights; global RNG untouched
            if seed is not None:
                torch.manual_seed(seed)
            self.module = self._module_cls(
                n_input=adata.n_vars,
                n_labels=len(self.perturbations_),
                control_index=self.perturbations_.index(control),
                n_latent=n_latent,
                n_hidden=n_hidden,
                n_layers=n_layers,
                dropout_rate=dropout_rate,
                use_batch_norm=use_batch_norm,
                prior=self._prior,
                prior_kwargs=kwargs,
                beta=beta,
                likelihood=likelihood,
                kl_free_bits=kl_free_bits,
            )
        if self.module.prior.has_shifts:
            V.check_has_perturbations(len(self.perturbations_) - 1, type(self).__name__, control)
        self._model_summary_string = (
            f"{type(self).__name__}: n_latent={n_latent}, {len(self.perturbations_) - 1} "
            f"perturbations + control, prior={type(self.module.prior).__name__}, beta={beta}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _network_settings(self, dropout_rate, beta, kl_free_bits) -> tuple[float, float, float]:
        """Checked dropout, KL weight and free bits: None means the preset's value
        (``_defaults``), else the module's default (``_MODULE_DEFAULTS``)."""
        given = {"dropout_rate": dropout_rate, "beta": beta, "kl_free_bits": kl_free_bits}
        net = {k: self._defaults.get(k, _MODULE_DEFAULTS[k]) if v is None else v for k, v in given.items()}
        return (V.check_fraction(net["dropout_rate"], "dropout_rate", closed_right=False),
                V.check_positive_float(net["beta"], "beta"),
                V.check_positive_float(net["kl_free_bits"], "kl_free_bits", allow_zero=True))

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(cls, adata: AnnData, perturbation_key: str = "perturbation",
                      control: str = "control", layer: str | None = None, **kwargs):
        """Register an AnnData of raw counts with one perturbation label per cell.

        Checks the genes (unique names), the counts (non-negative, integer, finite) and the
        labels (column present, ``control`` present, no name collisions, warns on tiny
        groups) before anything else.

        Side effects, as in scvi-tools: adds the columns ``_svae_perturbation`` (the labels
        with ``control`` first) and ``_scvi_labels`` to ``adata.obs`` and a ``_scvi_*``
        entry to ``adata.uns``. Nothing else in ``adata`` is modified.

        Parameters
        ----------
        perturbation_key
            Column of ``adata.obs`` with each cell's perturbation.
        control
            Label of the unperturbed (control, non-targeting) cells.
        layer
            Layer with the raw counts (default ``adata.X``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if not isinstance(adata, AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        V.check_not_view(adata)
        V.check_unique_genes(adata.var_names)
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"layer={layer!r} is not in adata.layers ({list(adata.layers)}).")
        X = adata.X if layer is None else adata.layers[layer]
        V.check_counts(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
        # Loading a saved model (source_registry given) needs no control cells in the data.
        labels = V.check_perturbation_column(adata.obs, perturbation_key, control,
                                             require_control="source_registry" not in kwargs)
        cats = _label_categories(adata.obs[perturbation_key], labels, control,
                                 kwargs.get("source_registry"))
        cls._register(adata, labels, cats, layer, setup_method_args, **kwargs)

    @classmethod
    def _register(cls, adata, labels, categories, layer, setup_method_args, **kwargs):
        adata.obs[LABEL_COLUMN] = pd.Categorical(labels.to_numpy(), categories=categories)
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, LABEL_COLUMN),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, dir_path, adata: AnnData | None = None, prefix: str | None = None, **kwargs):
        """Load a model saved with :meth:`save` (scvi-tools' ``load``), checking first that it
        was saved from this class and that ``adata`` has the training genes in the training
        order (scvi-tools only warns about the order, which would give wrong results).

        ``adata`` may hold any subset of the training perturbations; a perturbation the saved
        model never saw raises (use :meth:`transfer`). ``adata`` is registered in place, as by
        :meth:`setup_anndata`.
        """
        saved, var_names = _saved_model_name_and_genes(dir_path, prefix)
        if saved is not None and saved != cls.__name__:
            raise ValueError(
                f"{dir_path} holds a saved {saved}, not a {cls.__name__}: load it with "
                f"`svae_lite.{saved}.load(...)`."
            )
        if isinstance(adata, AnnData):
            V.check_genes_match(adata.var_names, var_names, where="The AnnData passed to load")
        return super().load(dir_path, adata=adata, prefix=prefix, **kwargs)

    # ------------------------------------------------------------------ training
    def train(self, max_epochs: int | None = None, lr: float = 1e-3, prior_lr: float = 1e-2,
              batch_size: int = 256, n_epochs_kl_warmup: int | None = None,
              dense_fraction: float | None = None, early_stopping: bool = False,
              train_size: float | None = None, accelerator: str = "auto", devices="auto",
              seed: int | None = 0, plan_kwargs: dict | None = None, alignment_rotation=None,
              lr_anneal: float = DEFAULT_LR_ANNEAL, **trainer_kwargs):
        """Fit the model by maximising the ELBO (scvi-tools trainer: progress bar, history,
        optional early stopping).

        Parameters
        ----------
        max_epochs
            Passes over the training cells (default: 400 for < 20k cells, fewer above, as
            in scvi-tools, at least 100).
        lr, prior_lr
            Adam learning rates of the networks and of the prior's parameters (shifts,
            scales, mask logits).
        batch_size
            Cells per minibatch.
        n_epochs_kl_warmup
            Epochs over which the KL weight rises linearly from 0 to 1 (default
            ``max_epochs // 10``).
        dense_fraction
            Sparse models only: fraction of the epochs trained with dense shifts (masks all
            on) before the *alignment step*, which rotates the latent space so that the
            learned shifts are sparsest and initialises the masks from them (default 0.5;
            0 trains the masks from the start). The step is recorded in ``alignment_``.
        early_stopping
            Stop when the validation ELBO stops improving (holds out 10% of cells unless
            ``train_size`` is given). For sparse models it never stops before the alignment.
        train_size
            Fraction of cells used for training (default 1, or 0.9 with early stopping).
        seed
            Seeds torch, the shuffling of cells before the train/validation split and the
            alignment restarts: with the model's ``seed``, the same fit on CPU.
        alignment_rotation
            Sparse models only, for diagnostics: the rotation of the alignment step, a
            (d, d) orthogonal array or a callable ``f(model) -> array | None`` evaluated just
            before the step (None: the sparsest rotation, the default).
        lr_anneal
            Fraction of the epochs, at the end, over which both learning rates fall along a
            half cosine towards 0 (default 0.25, the last quarter; 0: constant rates). With
            constant rates the fit wanders by about half a nat per cell (held-out
            log-likelihood) between late epochs, so where training stops decides part of the
            result; annealing lets it settle (benchmarks/README.md, "Learning rates annealed
            at the end").
        """
        args = TrainingArgs.check(self.adata.n_obs, max_epochs, lr, prior_lr, batch_size,
                                  n_epochs_kl_warmup, early_stopping, train_size, seed,
                                  plan_kwargs, trainer_kwargs, lr_anneal)
        callbacks = list(trainer_kwargs.pop("callbacks", []) or [])
        callbacks += phase_callbacks(self, args, dense_fraction, alignment_rotation, trainer_kwargs)
        if args.seed is not None:
            torch.manual_seed(args.seed)
            np.random.seed(args.seed)
        self._set_cell_counts(args.train_size)
        splitter = dict(trainer_kwargs.pop("datasplitter_kwargs", None) or {})
        splitter.setdefault("split_seed", args.seed)
        trainer_kwargs.setdefault("enable_progress_bar", True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*sanity.*")
            result = super().train(
                max_epochs=args.max_epochs, accelerator=accelerator, devices=devices,
                train_size=args.train_size, batch_size=args.batch_size,
                early_stopping=args.early_stopping, plan_kwargs=args.plan(), callbacks=callbacks,
                datasplitter_kwargs=splitter, **trainer_kwargs,
            )
        self.module.eval()
        return result

    def _set_cell_counts(self, train_size: float) -> None:
        """Tell the module how many cells it fits: in all (the loss is per cell) and of each
        label (each perturbation's cells pay for its mask row), expected under the split."""
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        counts = np.bincount(codes.astype(np.int64), minlength=len(self.perturbations_))
        self.module.n_obs.fill_(max(1.0, train_size * self.adata.n_obs))
        self.module.set_label_cells_(train_size * counts)


def _label_categories(column: pd.Series, labels: pd.Series, control: str,
                      source_registry: dict | None) -> list[str]:
    """The label categories of a registration: ``control`` first, then the perturbations in
    the column's category order (sorted if not categorical). Loading a saved model keeps
    the saved categories, and every label must be among them."""
    if source_registry is not None:
        cats = list(source_registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]
                    ["state_registry"]["categorical_mapping"])
        unknown = sorted(set(labels) - set(cats))
        if unknown:
            raise ValueError(
                f"The AnnData has perturbations the saved model never saw: {unknown[:10]}. "
                "Load with the training AnnData, or use model.transfer() for new ones."
            )
        return cats
    present = set(labels)
    if isinstance(column.dtype, pd.CategoricalDtype):
        order = [str(c) for c in column.cat.categories]
    else:
        order = sorted(present)
    return [control] + [c for c in order if c in present and c != control]


def _saved_model_name_and_genes(dir_path, prefix: str | None):
    """Class name and genes of a model saved with ``save`` (read from its ``model.pt``)."""
    path = os.path.join(str(dir_path), f"{prefix or ''}model.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved model at {path}: save one with `model.save({str(dir_path)!r})`.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    name = saved.get("attr_dict", {}).get("registry_", {}).get("model_name")
    return name, saved["var_names"]


class VAE(ShiftModel):
    """Variational autoencoder: p(z) = N(0, I) for every cell; ignores the perturbations."""

    _prior = "standard"


class BetaVAE(ShiftModel):
    """beta-VAE: a VAE whose KL term is weighted by ``beta`` (default 4) for disentanglement."""

    _prior = "standard"
    _defaults = {"beta": 4.0}


class iVAE(ShiftModel):  # noqa: N801  (the name of the method)
    """identifiable VAE: p(z | a) = N(delta_a, diag(sigma_a^2)), a dense shift per
    perturbation (every latent may move)."""

    _prior = "dense"


class SVAE(ShiftModel):
    """Sparse VAE: shifts gated by learned masks with an expected-L0 penalty
    (``sparsity`` = 0.5 nats per active entry and per cell of the perturbation), the KL
    integrated exactly over the Bernoulli masks. Like sVAE+, trained without encoder dropout
    and with free bits (``kl_free_bits=0.25``) so that no latent collapses."""

    _prior = "sparse"
    _defaults = {"penalty": "l0", "sparsity": 0.5, "estimator": "exact", "penalty_scale": "cells",
                 "dropout_rate": 0.0, "kl_free_bits": 0.25}


class SVAEPlus(ShiftModel):
    """sVAE+: masks with a Beta(1, ``sparsity`` = 10)-Bernoulli prior (integrated out per
    latent), fitted with a straight-through Gumbel-sigmoid (relaxed Bernoulli) estimator.

    The prior is tempered (``penalty_scale="lead_log_cells"``): a perturbation's *lead*
    entry, the latent of its largest shift, is paid ``penalty_weight`` = 0.3 times its prior
    code length log(n) times for n cells, and every other entry 0.3 times per cell. An extra
    entry then costs about 0.3 x log((10 + K - n_j) / (1 + n_j)) nats per cell (K
    perturbations, n_j of them on latent j), 0.3 to 0.6 nats on the benchmarks: shifts under
    about one control SD beside the main effect stay off however many cells support them
    (a shift of delta SDs improves a cell's fit by about delta^2 / 2 nats), which keeps off
    the small spurious shifts that a strong effect leaves on other latents. The lead entry
    needs only evidence that grows with n, so a knockout whose only effect is weak in the
    latent space can still get its target (benchmarks/README.md, "Which Papalexi knockouts get
    targets"). ``penalty_scale="cells"`` prices every entry per cell, ``"log_cells"`` every
    entry log(n) times.

    The networks train without encoder dropout (``dropout_rate=0``) and with free bits
    (``kl_free_bits=0.25`` nats per latent and cell), so that a latent which few training
    perturbations target does not collapse onto the prior (benchmarks/README.md)."""

    _prior = "sparse"
    _defaults = {"penalty": "beta_bernoulli", "sparsity": 10.0, "estimator": "gumbel",
                 "penalty_scale": "lead_log_cells", "penalty_weight": 0.3, "dropout_rate": 0.0,
                 "kl_free_bits": 0.25}
