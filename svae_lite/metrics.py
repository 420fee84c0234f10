"""Identifiability metrics: MCC after optimal matching and recovery of intervention targets."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

__all__ = ["correlation_matrix", "match_latents", "mcc", "target_recovery", "target_scores"]


def _as_2d(z, name):
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (cells, latents); got shape {z.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return z


def correlation_matrix(z_true, z_learned, method: str = "pearson") -> np.ndarray:
    """Absolute correlations between every true latent (rows) and learned latent (columns).

    Parameters
    ----------
    z_true, z_learned
        Arrays of shape (cells, d_true) and (cells, d_learned), same cells in the same order.
    method
        ``"pearson"`` or ``"spearman"``.

    Returns
    -------
    (d_true, d_learned) array in [0, 1]. A constant column correlates 0 with everything.
    """
    a, b = _as_2d(z_true, "z_true"), _as_2d(z_learned, "z_learned")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"z_true has {a.shape[0]} cells but z_learned has {b.shape[0]}: pass the same cells."
        )
    if method == "spearman":
        a = np.apply_along_axis(rankdata, 0, a)
        b = np.apply_along_axis(rankdata, 0, b)
    elif method != "pearson":
        raise ValueError(f"method={method!r}: choose 'pearson' or 'spearman'.")
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    na[na == 0] = np.inf
    nb[nb == 0] = np.inf
    return np.abs((a.T @ b) / np.outer(na, nb))


def match_latents(z_true, z_learned, method: str = "pearson"):
    """Hungarian matching of learned to true latents maximising total |correlation|.

    Returns
    -------
    ``(rows, cols, corr)``: true latent ``rows[i]`` is matched to learned latent ``cols[i]``,
    and ``corr`` is the full absolute correlation matrix.
    """
    corr = correlation_matrix(z_true, z_learned, method)
    rows, cols = linear_sum_assignment(-corr)
    return rows, cols, corr


def mcc(z_true, z_learned, method: str = "pearson") -> float:
    """Mean correlation coefficient: mean |corr| of matched pairs after Hungarian matching.

    1 means every true latent is recovered up to permutation, sign and (for ``spearman``)
    any monotone transformation; independent noise scores near 0.
    """
    rows, cols, corr = match_latents(z_true, z_learned, method)
    return float(corr[rows, cols].mean())


def target_scores(true_targets, learned, threshold: float = 0.5) -> dict:
    """Precision, recall, F1 (at ``threshold``) and AUROC of learned vs true target matrices.

    Both are (perturbations x latents) with columns already aligned.
    """
    t = np.asarray(true_targets, dtype=bool).ravel()
    p = np.asarray(learned, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"target matrices differ in shape: {np.shape(true_targets)} vs {np.shape(learned)}.")
    pred = p > threshold
    tp = float((pred & t).sum())
    precision = tp / pred.sum() if pred.sum() else 0.0
    recall = tp / t.sum() if t.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auroc = float(roc_auc_score(t, p)) if 0 < t.sum() < t.size else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "auroc": auroc}


def target_recovery(adata, model, threshold: float = 0.5, z_key: str = "z_true",
                    targets_key: str = "true_targets", method: str = "pearson") -> dict:
    """Compare a model's learned intervention targets with the simulator's true targets.

    The learned latents are first matched to the true ones (Hungarian matching on
    ``adata``'s cells, as in :func:`mcc`); the learned target matrix's columns are permuted
    accordingly and compared entrywise with ``adata.uns[targets_key]`` over the
    perturbations both know.

    Returns
    -------
    dict with ``precision``, ``recall``, ``f1`` (entries with probability > ``threshold``),
    ``auroc``, ``mcc`` and ``learned`` (the aligned learned DataFrame).
    """
    if z_key not in adata.obsm or targets_key not in adata.uns:
        raise KeyError(
            f"adata needs obsm[{z_key!r}] and uns[{targets_key!r}] (the ground truth "
            "written by svae_lite.simulate)."
        )
    true = pd.DataFrame(adata.uns[targets_key]).astype(bool)
    z = model.get_latent_representation(adata)
    rows, cols, corr = match_latents(adata.obsm[z_key], z, method)
    learned = model.get_intervention_targets()
    common = [p for p in true.index if p in learned.index]
    if not common:
        raise ValueError("The model knows none of the perturbations in the true target table.")
    aligned = pd.DataFrame(
        learned.loc[common].to_numpy()[:, cols], index=common, columns=true.columns[rows]
    )
    scores = target_scores(true.loc[common].to_numpy()[:, rows], aligned.to_numpy(), threshold)
    scores["mcc"] = float(corr[rows, cols].mean())
    scores["learned"] = aligned
    return scores
