"""Quality control, gene selection and count recovery shared by the loaders and users."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger(__name__)

#: The label of cells with non-targeting guides in ``obs['perturbation']``.
CONTROL = "control"


def categorical(values) -> pd.Categorical:
    """Values as a categorical of Python strings (object dtype, not numpy ``<U``)."""
    return pd.Categorical(np.asarray(values, dtype=object))


def without_empty_genes(adata: AnnData) -> AnnData:
    """``adata`` without the genes that have no counts in any of its cells."""
    keep = np.asarray(adata.X.sum(0)).ravel() > 0
    if keep.all():
        return adata
    logger.info("Dropping %d genes without counts", int((~keep).sum()))
    return adata[:, keep].copy()


def recover_counts(X, max_multiplier: int = 20, tol: float = 1e-6) -> sp.csr_matrix:
    """Raw counts from ``log1p(normalize_total(counts))`` values, exactly.

    Each cell's ``expm1(X)`` is its counts times one unknown factor. Dividing by the cell's
    smallest nonzero value gives the counts when that value is one UMI; otherwise the
    quotients are fractions with a small common denominator ``k`` (the smallest count), and
    multiplying by the smallest such ``k`` gives integers again.

    Parameters
    ----------
    X
        (cells, genes) log1p-normalized values, dense or sparse.

    Returns
    -------
    CSR matrix (cells, genes), float32, of integer counts.

    Raises
    ------
    ValueError
        If some cell's values are not integers up to a factor ``k <= max_multiplier``.
    """
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    X.eliminate_zeros()
    X.data = np.expm1(X.data)
    bad = []
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        if s == e:
            continue
        v = X.data[s:e] / X.data[s:e].min()
        for k in range(1, max_multiplier + 1):
            w = v * k
            if np.abs(w - np.round(w)).max() < tol:
                X.data[s:e] = np.round(w)
                break
        else:
            bad.append(i)
    if bad:
        raise ValueError(
            f"{len(bad)} cells (e.g. rows {bad[:5]}) are not log1p-normalized counts: their "
            f"expm1 values are not integers up to a common factor <= {max_multiplier}."
        )
    return X.astype(np.float32)


def _passing_cells(adata: AnnData, min_counts: int, min_genes: int,
                   max_mito_fraction: float | None) -> np.ndarray:
    """(cells,) bool: at least ``min_counts`` UMIs and ``min_genes`` detected genes, and at
    most ``max_mito_fraction`` of the UMIs on mitochondrial (``MT-``) genes if given."""
    X = adata.X
    tot = np.asarray(X.sum(1)).ravel()
    ngenes = np.asarray((X > 0).sum(1)).ravel()
    keep = (tot >= min_counts) & (ngenes >= min_genes)
    if max_mito_fraction is not None:
        mito = adata.var_names.str.upper().str.startswith("MT-")
        frac = np.asarray(X[:, mito].sum(1)).ravel() / np.maximum(tot, 1)
        keep &= frac <= max_mito_fraction
    return keep


def _drop_small_perturbations(adata: AnnData, key: str, min_cells: int,
                              control: str) -> tuple[AnnData, list[str]]:
    """``adata`` without the perturbation groups of ``obs[key]`` that have fewer than
    ``min_cells`` cells (the controls are always kept), and the labels removed."""
    if key not in adata.obs:
        raise KeyError(f"adata.obs has no column {key!r}.")
    lab = adata.obs[key].astype(str)
    counts = lab.value_counts()
    small = [p for p in counts.index if counts[p] < min_cells and p != control]
    adata = adata[~lab.isin(small).to_numpy()].copy()
    if hasattr(adata.obs[key], "cat"):
        adata.obs[key] = adata.obs[key].cat.remove_unused_categories()
    return adata, small


def preprocess(adata: AnnData, min_counts_per_cell: int = 1, min_genes_per_cell: int = 0,
               min_cells_per_gene: int = 1, max_mito_fraction: float | None = None,
               n_top_genes: int | None = None, min_cells_per_perturbation: int | None = None,
               perturbation_key: str = "perturbation", control: str = CONTROL) -> AnnData:
    """Quality control and gene selection that keep raw counts in ``X``; returns a copy.

    In order: drop cells with fewer than ``min_counts_per_cell`` UMIs or
    ``min_genes_per_cell`` detected genes, or (if ``max_mito_fraction``) a larger share of
    mitochondrial (``MT-``) UMIs; drop genes detected in fewer than ``min_cells_per_gene``
    cells; keep the ``n_top_genes`` highly variable genes (scanpy,
    ``flavor="seurat_v3"``, computed on the counts; needs ``scikit-misc``); drop
    perturbation groups with fewer than ``min_cells_per_perturbation`` cells (never the
    controls). ``adata`` itself is not modified.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``uns['svae_lite_preprocess']`` (parameters and
    how many cells/genes each step removed).
    """
    import scanpy as sc

    from .._validation import check_counts

    check_counts(adata.X, "adata.X")
    a = adata.copy()
    report = {"n_cells_in": int(a.n_obs), "n_genes_in": int(a.n_vars)}
    keep = _passing_cells(a, min_counts_per_cell, min_genes_per_cell, max_mito_fraction)
    report["cells_removed_qc"] = int((~keep).sum())
    a = a[keep].copy()
    detected = np.asarray((a.X > 0).sum(0)).ravel()
    gkeep = detected >= min_cells_per_gene
    report["genes_removed_qc"] = int((~gkeep).sum())
    a = a[:, gkeep].copy()
    if n_top_genes is not None and n_top_genes < a.n_vars:
        sc.pp.highly_variable_genes(a, n_top_genes=int(n_top_genes), flavor="seurat_v3")
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
    report["n_genes_hvg"] = int(a.n_vars)
    if min_cells_per_perturbation is not None:
        a, report["perturbations_removed"] = _drop_small_perturbations(
            a, perturbation_key, min_cells_per_perturbation, control)
    report["n_cells_out"], report["n_genes_out"] = int(a.n_obs), int(a.n_vars)
    a.uns["svae_lite_preprocess"] = {
        **report,
        "params": {k: v for k, v in {
            "min_counts_per_cell": min_counts_per_cell, "min_genes_per_cell": min_genes_per_cell,
            "min_cells_per_gene": min_cells_per_gene, "max_mito_fraction": max_mito_fraction,
            "n_top_genes": n_top_genes, "min_cells_per_perturbation": min_cells_per_perturbation,
        }.items() if v is not None},
    }
    logger.info("preprocess: %s", report)
    return a


def cap_cells(adata: AnnData, max_cells: int, max_control: int, seed, key: str = "perturbation") -> AnnData:
    """A copy of ``adata`` with at most ``max_cells`` random cells of every perturbation and
    at most ``max_control`` control cells (0: keep them all), in their original order.

    ``seed`` is an int or a ``numpy.random.Generator`` (whose stream later draws continue);
    the same seed gives the same cells, so the book's chapters and the benchmarks that cap
    a screen with one seed fit the same cells. ``obs[key]`` keeps its categories.
    """
    if key not in adata.obs:
        raise KeyError(f"cap_cells: adata.obs has no column {key!r}.")
    for name, value in (("max_cells", max_cells), ("max_control", max_control)):
        if int(value) != value or value < 0:
            raise ValueError(f"cap_cells: {name}={value!r} must be a whole number >= 0 (0: keep all).")
    rng = np.random.default_rng(seed)
    keep = []
    for p, idx in adata.obs.groupby(key, observed=True).indices.items():
        cap = max_control if p == CONTROL else max_cells
        keep.append(idx if not cap or idx.size <= cap else rng.choice(idx, size=cap, replace=False))
    return adata[np.sort(np.concatenate(keep))].copy()
