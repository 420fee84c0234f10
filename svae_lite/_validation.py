"""Input checks shared by every entry point.

Each check raises a ``ValueError``/``TypeError`` (or warns) with a message that names the
problem and what to do about it, before any training starts.
"""
from __future__ import annotations

import numbers
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
    if vals.size == 0:
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
    frac = np.abs(vals - np.round(vals))
    if (frac > 1e-3).any():
        raise ValueError(
            f"{where} contains non-integer values (e.g. {vals[frac > 1e-3][0]:g}): this looks "
            "like normalized or log-transformed data. The models use a negative binomial "
            "likelihood on raw UMI counts; pass the raw counts (e.g. `layer='counts'`)."
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


def check_perturbation_column(obs: pd.DataFrame, key: str, control: str) -> pd.Series:
    """Return the perturbation labels as strings after checking them."""
    if key not in obs.columns:
        raise KeyError(
            f"perturbation_key={key!r} is not a column of adata.obs (columns: "
            f"{list(obs.columns)[:20]}). Pass the column that holds each cell's perturbation."
        )
    col = obs[key]
    if col.isna().any():
        raise ValueError(
            f"adata.obs[{key!r}] has {int(col.isna().sum())} missing labels; give every cell "
            f"a perturbation (use {control!r} for controls) or drop those cells."
        )
    uniq = pd.unique(col)
    as_str = pd.Series([str(u) for u in uniq])
    dup = as_str[as_str.duplicated()]
    if len(dup):
        raise ValueError(
            f"adata.obs[{key!r}] has distinct labels that become the same string "
            f"({sorted(set(dup))}, e.g. 1 and '1'): make the labels unique strings."
        )
    labels = col.astype(str)
    if control not in set(as_str):
        raise ValueError(
            f"control={control!r} is not a label in adata.obs[{key!r}] (labels: "
            f"{sorted(set(as_str))[:10]}...). Pass the label of the unperturbed cells."
        )
    counts = labels.value_counts()
    small = counts[counts < MIN_CELLS_WARN]
    if len(small):
        warnings.warn(
            f"{len(small)} perturbation groups have fewer than {MIN_CELLS_WARN} cells "
            f"({dict(small.head(5))}): their shifts and targets will be poorly determined.",
            SvaeLiteWarning,
            stacklevel=3,
        )
    return labels


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
