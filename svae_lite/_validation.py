"""Input checks shared by every entry point.

Each check raises a ``ValueError``/``TypeError`` (or warns) with a message that names the
problem and what to do about it, before any training starts.
"""
from __future__ import annotations

import inspect
import numbers
import typing
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

MIN_CELLS_WARN = 20


class SvaeLiteWarning(UserWarning):
    """Warnings about the data or parameters given to svae_lite."""


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name}={value!r} must be an integer >= {minimum}.")
    if value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
    return int(value)


def check_positive_float(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a real number.")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be finite and {bound}.")
    return value


def check_fraction(value, name: str, closed_right: bool = True) -> float:
    value = check_positive_float(value, name, allow_zero=True)
    if value > 1 or (value == 1 and not closed_right):
        raise ValueError(f"{name}={value!r} must lie in [0, 1{']' if closed_right else ')'}.")
    return value


def _values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X)


def check_counts(X, where: str = "adata.X") -> None:
    """Raise on negative, non-finite or non-integer values; warn on all-zero cells/genes."""
    vals = _values(X)
    if 0 in X.shape:
        raise ValueError(f"{where} is empty: the AnnData has no cells or no genes.")
    if not np.issubdtype(vals.dtype, np.number):
        raise TypeError(f"{where} has dtype {vals.dtype}; raw counts must be numeric.")
    if not np.all(np.isfinite(vals)):
        n_bad = int((~np.isfinite(vals)).sum())
        raise ValueError(
            f"{where} contains {n_bad} NaN or infinite values. Models need raw UMI counts: "
            "remove or impute those entries before setup_anndata."
        )
    if (vals < 0).any():
        raise ValueError(
            f"{where} contains negative values (min {vals.min():g}). Models need raw, "
            "non-negative UMI counts, not scaled or centred data; pass the counts layer "
            "with `layer=`."
        )
    if not np.issubdtype(vals.dtype, np.integer):
        frac = np.abs(vals - np.round(vals))
        if (frac > 1e-3).any():
            vmax = float(vals.max())
            kind = ("log-normalized (e.g. `sc.pp.log1p`) data" if vmax < 20 else
                    "normalized or scaled data")
            raise ValueError(
                f"{where} contains non-integer values (e.g. {vals[frac > 1e-3][0]:g}, "
                f"max {vmax:g}): this looks like {kind}, not raw counts. The models use a "
                "negative binomial likelihood on raw UMI counts: pass the raw counts, e.g. "
                "`layer='counts'` if they are kept in a layer, or `adata.raw.to_adata()`."
            )
    cell_tot = np.asarray(X.sum(axis=1)).ravel()
    gene_tot = np.asarray(X.sum(axis=0)).ravel()
    if (cell_tot == 0).any():
        warnings.warn(
            f"{int((cell_tot == 0).sum())} cells have no counts in {where}; they carry no "
            "information and make the library size zero. Drop them first, e.g. "
            "`sc.pp.filter_cells(adata, min_counts=1)`.",
            SvaeLiteWarning,
            stacklevel=3,
        )
    if (gene_tot == 0).any():
        warnings.warn(
            f"{int((gene_tot == 0).sum())} genes have no counts in {where}; consider "
            "`sc.pp.filter_genes(adata, min_counts=1)`.",
            SvaeLiteWarning,
            stacklevel=3,
        )


def check_perturbation_column(obs: pd.DataFrame, key: str, control: str,
                              require_control: bool = True, where: str = "adata") -> pd.Series:
    """Return the perturbation labels as strings after checking them.

    Raises if the column is missing, has missing (NaN) labels, has distinct labels that
    become the same string (e.g. ``1`` and ``"1"``), or (``require_control``) lacks the
    ``control`` label; warns about groups with fewer than ``MIN_CELLS_WARN`` cells and about
    categories that have no cell at all (they are ignored).

    Returns
    -------
    Series (cells,) of ``str`` labels, index as ``obs``.
    """
    if not isinstance(key, str):
        raise TypeError(f"perturbation_key={key!r} must be the name (a string) of a column of {where}.obs.")
    if not isinstance(control, str):
        raise TypeError(
            f"control={control!r} must be a string: labels are compared as strings, so pass "
            f"control={str(control)!r}."
        )
    if key not in obs.columns:
        raise KeyError(
            f"perturbation_key={key!r} is not a column of {where}.obs (columns: "
            f"{list(obs.columns)[:20]}). Pass the column that holds each cell's perturbation."
        )
    col = obs[key]
    if col.isna().any():
        raise ValueError(
            f"{where}.obs[{key!r}] has {int(col.isna().sum())} missing (NaN) labels; give every "
            f"cell a perturbation (use {control!r} for controls) or drop those cells, e.g. "
            f"`adata = adata[adata.obs[{key!r}].notna()].copy()`."
        )
    uniq = pd.unique(col)
    as_str = pd.Series([str(u) for u in uniq])
    dup = as_str[as_str.duplicated()]
    if len(dup):
        raise ValueError(
            f"adata.obs[{key!r}] has distinct labels that become the same string "
            f"({sorted(set(dup))}, e.g. 1 and '1'): make the labels unique strings."
        )
    labels = pd.Series(col.astype(str).to_numpy(dtype=object), index=obs.index, name=key)
    if require_control and control not in set(as_str):
        raise ValueError(
            f"control={control!r} is not a label in {where}.obs[{key!r}] (labels: "
            f"{sorted(set(as_str))[:10]}{'...' if len(as_str) > 10 else ''}). Pass the label "
            "of the unperturbed (control, non-targeting) cells."
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        empty = [str(c) for c in col.cat.categories if str(c) not in set(as_str)]
        if empty:
            warnings.warn(
                f"{len(empty)} categories of {where}.obs[{key!r}] have no cells and are "
                f"ignored ({empty[:5]}{'...' if len(empty) > 5 else ''}).",
                SvaeLiteWarning,
                stacklevel=3,
            )
    counts = labels.value_counts()
    small = counts[counts < MIN_CELLS_WARN]
    if len(small):
        warnings.warn(
            f"{len(small)} perturbation groups have fewer than {MIN_CELLS_WARN} cells "
            f"({ {str(k): int(v) for k, v in small.head(5).items()} }): their shifts and targets will be poorly determined. "
            "Drop them or collect more cells.",
            SvaeLiteWarning,
            stacklevel=3,
        )
    return labels


def check_unique_genes(var_names, where: str = "adata") -> None:
    """Raise on duplicated gene names: saved models and transfer match genes by name."""
    names = pd.Index(var_names)
    if names.has_duplicates:
        dup = names[names.duplicated()].unique()
        raise ValueError(
            f"{where}.var_names has {len(dup)} duplicated gene names (e.g. {list(dup[:5])}); "
            "loading a saved model and transfer() match genes by name, so each must be "
            f"unique. Make them unique first: `{where}.var_names_make_unique()`."
        )


def check_has_perturbations(n_perturbations: int, model: str, control: str) -> None:
    """A model with perturbation shifts needs perturbed cells besides the controls."""
    if n_perturbations == 0:
        raise ValueError(
            f"The AnnData holds only control cells (label {control!r}): {model} learns how "
            "perturbations shift the latents and needs perturbed cells too. Register an "
            "AnnData with perturbed cells, or use VAE for control cells alone."
        )


def check_n_latent(n_latent, n_genes: int, n_perturbations: int) -> int:
    n_latent = check_positive_int(n_latent, "n_latent")
    if n_latent >= n_genes:
        raise ValueError(
            f"n_latent={n_latent} is not smaller than the number of genes ({n_genes}); "
            "a latent space should compress the data: use fewer latents."
        )
    if n_latent > 100:
        warnings.warn(
            f"n_latent={n_latent} is unusually large for these models (typical: 5-50).",
            SvaeLiteWarning,
            stacklevel=3,
        )
    return n_latent


def check_seed(seed, name: str = "seed", allow_none: bool = True):
    """A seed must be an integer >= 0 (or None where allowed)."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"{name}={seed!r} must be an integer >= 0{' or None' if allow_none else ''}.")
    return int(seed)


def check_not_view(adata, name: str = "adata") -> None:
    """Registration writes columns into ``adata.obs``; on a view that would silently turn the
    view into a copy, so ask for an explicit copy instead (as scvi-tools does)."""
    if getattr(adata, "is_view", False):
        raise ValueError(
            f"{name} is a view of another AnnData (e.g. `adata[mask]`); registering it would "
            f"write into it. Pass an explicit copy: `{name} = {name}[mask].copy()`."
        )


def check_genes_match(var_names, expected, where: str = "The AnnData") -> None:
    """Raise unless ``var_names`` equals ``expected`` (same genes, same order)."""
    var_names, expected = pd.Index(var_names), pd.Index(expected)
    if len(var_names) == len(expected) and (var_names == expected).all():
        return
    missing = [g for g in expected if g not in set(var_names)]
    extra = [g for g in var_names if g not in set(expected)]
    if not missing and not extra:
        detail = "the same genes in a different order"
    else:
        parts = []
        if missing:
            parts.append(f"{len(missing)} training genes missing, e.g. {missing[:5]}")
        if extra:
            parts.append(f"{len(extra)} genes the model does not know, e.g. {extra[:5]}")
        detail = "; ".join(parts)
    raise ValueError(
        f"{where} has genes that differ from the model's training genes ({len(var_names)} vs "
        f"{len(expected)} genes; {detail}). Subset and order it like the training data: "
        "`adata = adata[:, model.adata.var_names].copy()` (every training gene must be present)."
    )


def _trainer_parameters() -> dict:
    """scvi-tools Trainer's keyword parameters (name -> inspect.Parameter)."""
    from scvi.train import Trainer

    return dict(inspect.signature(Trainer.__init__).parameters)


def early_stopping_options() -> tuple[str, ...]:
    """The ``early_stopping_*`` options scvi-tools' Trainer accepts, read from its signature."""
    return tuple(k for k in _trainer_parameters() if k.startswith("early_stopping_"))


def early_stopping_monitors() -> tuple[str, ...]:
    """Metrics early stopping may monitor (the Trainer's ``Literal`` annotation)."""
    ann = _trainer_parameters()["early_stopping_monitor"].annotation
    return tuple(typing.get_args(ann)) or ("elbo_validation",)


def check_early_stopping(early_stopping, trainer_kwargs: dict) -> None:
    """Validate ``early_stopping`` and the ``early_stopping_*`` keyword arguments in place of
    the cryptic errors Lightning would raise after the first validation epoch; warn when the
    options are given without ``early_stopping=True`` (they would be ignored)."""
    if not isinstance(early_stopping, (bool, np.bool_)):
        raise TypeError(f"early_stopping={early_stopping!r} must be True or False.")
    given = sorted(k for k in trainer_kwargs if k.startswith("early_stopping_"))
    known = set(early_stopping_options())
    unknown = [k for k in given if k not in known]
    if unknown:
        raise TypeError(f"Unknown early stopping option(s) {unknown}; valid: {sorted(known)}.")
    if given and not early_stopping:
        warnings.warn(
            f"{given} given but early_stopping=False: they are ignored. Pass early_stopping=True.",
            SvaeLiteWarning, stacklevel=3,
        )
    kw = trainer_kwargs
    monitors = early_stopping_monitors()
    if "early_stopping_monitor" in kw and kw["early_stopping_monitor"] not in monitors:
        raise ValueError(
            f"early_stopping_monitor={kw['early_stopping_monitor']!r}: choose one of "
            f"{list(monitors)}."
        )
    if "early_stopping_mode" in kw and kw["early_stopping_mode"] not in ("min", "max"):
        raise ValueError(f"early_stopping_mode={kw['early_stopping_mode']!r}: choose 'min' or 'max'.")
    if "early_stopping_patience" in kw:
        kw["early_stopping_patience"] = check_positive_int(kw["early_stopping_patience"], "early_stopping_patience")
    if "early_stopping_warmup_epochs" in kw:
        kw["early_stopping_warmup_epochs"] = check_positive_int(
            kw["early_stopping_warmup_epochs"], "early_stopping_warmup_epochs", minimum=0)
    if "early_stopping_min_delta" in kw:
        kw["early_stopping_min_delta"] = check_positive_float(
            kw["early_stopping_min_delta"], "early_stopping_min_delta", allow_zero=True)


def check_kl_warmup(n_epochs_kl_warmup, max_epochs: int) -> int:
    """KL warm-up length in epochs: an integer in [0, max_epochs] (0: no warm-up)."""
    n = check_positive_int(n_epochs_kl_warmup, "n_epochs_kl_warmup", minimum=0)
    if n > max_epochs:
        raise ValueError(
            f"n_epochs_kl_warmup={n} exceeds max_epochs={max_epochs}: the KL term would never "
            "reach full weight. Use a shorter warm-up (default max_epochs // 10)."
        )
    return n


#: scvi-tools plan options that svae_lite's own optimizer set-up would silently ignore.
UNSUPPORTED_PLAN_KWARGS = ("optimizer", "optimizer_creator", "update_only_decoder",
                           "reduce_lr_on_plateau", "lr_factor", "lr_patience", "lr_threshold",
                           "lr_scheduler_metric", "lr_min", "loss_kwargs")


def plan_kwargs_options() -> tuple[str, ...]:
    """``train(plan_kwargs=...)`` keys the training plan honours: scvi-tools TrainingPlan's
    keyword parameters (read from its signature) less the unsupported ones, plus ``prior_lr``."""
    from scvi.train import TrainingPlan

    params = inspect.signature(TrainingPlan.__init__).parameters.values()
    named = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    return tuple(n for n in named if n not in UNSUPPORTED_PLAN_KWARGS) + ("prior_lr",)


def check_plan_kwargs(plan_kwargs, max_epochs: int) -> dict:
    """Validate ``train(plan_kwargs=...)`` before the trainer starts.

    Keys must be among :func:`plan_kwargs_options` (scvi-tools' optimizer and scheduler options are not
    used: the models train with Adam, one learning rate for the networks and one for the
    prior); numeric options (KL warm-up, KL weights, learning rates, weight decay, eps) are
    range-checked. Returns a checked copy.
    """
    if plan_kwargs is None:
        return {}
    if not isinstance(plan_kwargs, dict):
        raise TypeError(f"plan_kwargs must be a dict, got {type(plan_kwargs).__name__}.")
    pk = dict(plan_kwargs)
    unsupported = sorted(set(pk) & set(UNSUPPORTED_PLAN_KWARGS))
    if unsupported:
        raise ValueError(
            f"plan_kwargs {unsupported} are not supported: svae_lite trains with Adam and "
            "separate learning rates for the networks (lr) and the prior (prior_lr)."
        )
    valid = plan_kwargs_options()
    unknown = sorted(set(pk) - set(valid))
    if unknown:
        raise TypeError(f"Unknown plan_kwargs {unknown}; valid: {list(valid)}.")
    if pk.get("n_epochs_kl_warmup") is not None:
        pk["n_epochs_kl_warmup"] = check_kl_warmup(pk["n_epochs_kl_warmup"], max_epochs)
    if pk.get("n_steps_kl_warmup") is not None:
        pk["n_steps_kl_warmup"] = check_positive_int(pk["n_steps_kl_warmup"], "n_steps_kl_warmup", minimum=0)
    for name in ("lr", "prior_lr", "eps"):
        if name in pk:
            pk[name] = check_positive_float(pk[name], name)
    for name in ("weight_decay", "max_kl_weight", "min_kl_weight"):
        if name in pk:
            pk[name] = check_positive_float(pk[name], name, allow_zero=True)
    if pk.get("min_kl_weight", 0.0) > pk.get("max_kl_weight", 1.0):
        raise ValueError(
            f"min_kl_weight={pk['min_kl_weight']} exceeds max_kl_weight={pk.get('max_kl_weight', 1.0)}."
        )
    return pk
