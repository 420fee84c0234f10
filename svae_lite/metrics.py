"""Metrics: identifiability (MCC after optimal matching, recovery of intervention targets)
and predicted vs observed perturbation effects on one expression scale.

MCC comes at three levels (:func:`cell_level_mcc`): over all cells, within perturbation
groups and on control cells. With large shifts the pooled MCC mostly rewards putting the
groups on the right axes (see :func:`group_mean_oracle`, which knows only the labels); the
cell-level scores say what a model recovered about individual cells, and
:mod:`svae_lite.ceiling` gives the most any model can recover through the count noise.

Effects of perturbations are compared on the log of mean normalised expression: observed
groups through :func:`pseudobulk`, model predictions (mean expected counts) through
:func:`log_expression`, so that an effect (a group minus control) means the same on both
sides; :func:`effect_scores` then scores a predicted effect against the observed one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy import stats
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

__all__ = ["correlation_matrix", "match_latents", "mcc", "cell_level_mcc", "group_mean_oracle",
           "target_recovery", "target_scores",
           "pseudobulk", "log_expression", "effect_scores", "paired_difference"]


def _as_2d(z, name):
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (cells, latents); got shape {z.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return z


def _group_codes(groups, n_cells: int) -> tuple[np.ndarray, int]:
    """Integer codes (cells,) of one group label per cell, and the number of groups."""
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n_cells:
        raise ValueError(f"groups must hold one label per cell: the latents have {n_cells} cells "
                         f"but groups has shape {labels.shape}.")
    codes, uniques = pd.factorize(labels)
    if (codes < 0).any():
        raise ValueError(f"groups has {int((codes < 0).sum())} missing labels (NaN or None): "
                         "give every cell a group.")
    return codes, len(uniques)


def _group_means(z: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """(groups, d) mean of the rows of ``z`` in each group."""
    sums = np.zeros((n_groups, z.shape[1]))
    np.add.at(sums, codes, z)
    return sums / np.bincount(codes, minlength=n_groups)[:, None]


def _within_group_ranks(z: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Ranks of every column within each group, as fractions of the group's size."""
    ranks = np.empty_like(z)
    for g in range(n_groups):
        rows = np.flatnonzero(codes == g)
        ranks[rows] = rankdata(z[rows], axis=0) / rows.size
    return ranks


def _centred(z_true, z_learned, method: str, groups) -> tuple[np.ndarray, np.ndarray]:
    """Both latents checked, rank-transformed for ``spearman``, and centred: on the mean of
    all cells, or with ``groups`` on the mean of each cell's group."""
    a, b = _as_2d(z_true, "z_true"), _as_2d(z_learned, "z_learned")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"z_true has {a.shape[0]} cells but z_learned has {b.shape[0]}: pass the same cells."
        )
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method={method!r}: choose 'pearson' or 'spearman'.")
    if groups is None:
        if method == "spearman":
            a = np.apply_along_axis(rankdata, 0, a)
            b = np.apply_along_axis(rankdata, 0, b)
        return a - a.mean(0), b - b.mean(0)
    codes, n_groups = _group_codes(groups, a.shape[0])
    if method == "spearman":
        a = _within_group_ranks(a, codes, n_groups)
        b = _within_group_ranks(b, codes, n_groups)
    return (a - _group_means(a, codes, n_groups)[codes],
            b - _group_means(b, codes, n_groups)[codes])


def correlation_matrix(z_true, z_learned, method: str = "pearson", groups=None) -> np.ndarray:
    """Absolute correlations between every true latent (rows) and learned latent (columns).

    Parameters
    ----------
    z_true, z_learned
        Arrays of shape (cells, d_true) and (cells, d_learned), same cells in the same order.
    method
        ``"pearson"`` or ``"spearman"``.
    groups
        Optional label of every cell (array-like of length cells, e.g. ``obs['perturbation']``).
        Each group's mean is subtracted from both latents first, so that only the variation of
        cells within their group counts (for ``spearman``, ranks are taken within each group,
        as fractions of its size). ``None`` correlates over all cells.

    Returns
    -------
    (d_true, d_learned) array in [0, 1]. A constant column correlates 0 with everything.
    """
    a, b = _centred(z_true, z_learned, method, groups)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    na[na == 0] = np.inf
    nb[nb == 0] = np.inf
    return np.abs((a.T @ b) / np.outer(na, nb))


def match_latents(z_true, z_learned, method: str = "pearson", groups=None):
    """Hungarian matching of learned to true latents maximising total |correlation|.

    ``groups`` (one label per cell) matches on within-group correlations, as in
    :func:`correlation_matrix`.

    Returns
    -------
    ``(rows, cols, corr)``: true latent ``rows[i]`` is matched to learned latent ``cols[i]``,
    and ``corr`` is the full absolute correlation matrix.
    """
    corr = correlation_matrix(z_true, z_learned, method, groups)
    rows, cols = linear_sum_assignment(-corr)
    return rows, cols, corr


def mcc(z_true, z_learned, method: str = "pearson", groups=None) -> float:
    """Mean correlation coefficient: mean |corr| of matched pairs after Hungarian matching.

    1 means every true latent is recovered up to permutation, sign and (for ``spearman``)
    any monotone transformation; independent noise scores near 0. With ``groups`` (one label
    per cell) each group's mean is removed from both latents first: the within-group MCC,
    which a representation scores only by telling apart cells of the same group.
    """
    rows, cols, corr = match_latents(z_true, z_learned, method, groups)
    return float(corr[rows, cols].mean())


def cell_level_mcc(z_true, z_learned, labels, control: str = "control",
                   method: str = "pearson") -> dict:
    """MCC over all cells, within groups and on control cells.

    When perturbations shift latents by several control standard deviations, most of a
    latent's variance lies between groups, and the pooled MCC mostly measures whether the
    groups land on the right axes; the two cell-level scores measure the rest. Each score
    matches the latents anew on its own cells.

    Parameters
    ----------
    z_true, z_learned
        (cells, d_true) and (cells, d_learned) latents of the same cells.
    labels
        Group of every cell (array-like of length cells, e.g. ``obs['perturbation']``).
    control
        The label of control cells.
    method
        ``"pearson"`` or ``"spearman"``.

    Returns
    -------
    dict of floats:

    - ``pooled``: :func:`mcc` over all cells; a representation that knows only the labels
      (:func:`group_mean_oracle`) scores high on it;
    - ``within_groups``: :func:`mcc` with ``groups=labels``, how well the variation of cells
      around their group's mean is recovered;
    - ``control``: :func:`mcc` on the control cells alone, how well the latents of
      unperturbed cells (the control mechanism ``N(0, I)`` in a simulation) are recovered.
    """
    pooled = mcc(z_true, z_learned, method)
    within = mcc(z_true, z_learned, method, groups=labels)
    is_control = np.asarray(labels) == control
    if is_control.sum() < 2:
        seen = list(pd.unique(np.asarray(labels)))[:5]
        raise ValueError(f"{int(is_control.sum())} cells are labelled control={control!r} (labels "
                         f"include {seen}): the control score needs at least 2 control cells.")
    ctrl = mcc(np.asarray(z_true)[is_control], np.asarray(z_learned)[is_control], method)
    return {"pooled": pooled, "within_groups": within, "control": ctrl}


def group_mean_oracle(z_true, labels) -> np.ndarray:
    """The baseline that knows only the labels: every cell gets its group's mean true latent.

    Parameters
    ----------
    z_true
        (cells, d) true latents.
    labels
        Group of every cell (array-like of length cells).

    Returns
    -------
    (cells, d) float64 array, constant within each group. Its pooled MCC is high when the
    groups' shifts dominate the latents' variance; within groups it scores 0 and on control
    cells (one constant row) 0, so cell-level scores above it are what a model learned
    about individual cells.
    """
    z = _as_2d(z_true, "z_true")
    codes, n_groups = _group_codes(labels, z.shape[0])
    return _group_means(z, codes, n_groups)[codes]


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


# ---------------------------------------------------------------------------- effects
def pseudobulk(adata, key: str = "perturbation", groups=None, target_sum: float = 1e4,
               layer: str | None = None) -> pd.DataFrame:
    """Log of the mean normalised expression of each group of cells.

    Every cell's counts are scaled to ``target_sum`` in total (cells without counts stay
    zero), averaged over the cells of each group, and ``log1p`` is applied to the means:
    ``log1p(mean_i(target_sum * x_i / sum(x_i)))``. This is the scale of
    :func:`log_expression`, which puts a model's expected counts on it. Sparse counts stay
    sparse: the group means are one sparse product, the matrix is never densified.

    Parameters
    ----------
    adata
        AnnData with counts in ``X`` (or ``layers[layer]``), dense or sparse.
    key
        Column of ``adata.obs`` with the group labels.
    groups
        Groups to return, in this order (default: every group with cells, in the order of
        the categories when the column is categorical, else sorted).
    target_sum
        Total counts of a cell after normalisation.
    layer
        Read counts from ``adata.layers[layer]`` instead of ``X``.

    Returns
    -------
    DataFrame (groups x genes), columns ``adata.var_names``.
    """
    if key not in adata.obs:
        raise KeyError(f"adata.obs has no column {key!r} (columns: {list(adata.obs.columns)}).")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"adata has no layer {layer!r} (layers: {list(adata.layers)}).")
    if not np.isfinite(target_sum) or target_sum <= 0:
        raise ValueError(f"target_sum={target_sum!r} must be a positive number.")
    X = adata.X if layer is None else adata.layers[layer]
    col = adata.obs[key]
    labels = col.astype(str).to_numpy()
    if groups is None:
        present = set(labels)
        categorical = isinstance(col.dtype, pd.CategoricalDtype)
        order = [str(c) for c in col.cat.categories] if categorical else sorted(present)
        groups = [g for g in order if g in present]
    else:
        groups = [str(g) for g in ([groups] if isinstance(groups, str) else groups)]
        missing = [g for g in groups if g not in set(labels)]
        if missing:
            raise KeyError(f"groups {missing} have no cells in adata.obs[{key!r}].")
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    else:
        X = np.asarray(X)
    lib = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    scale = np.where(lib > 0, target_sum / np.where(lib > 0, lib, 1.0), 0.0)
    code = pd.Index(groups).get_indexer(labels)
    cells = np.flatnonzero(code >= 0)
    sizes = np.bincount(code[cells], minlength=len(groups)).astype(np.float64)
    # (groups, cells) weights: row g averages the normalised counts of group g's cells
    W = sp.csr_matrix((scale[cells] / sizes[code[cells]], (code[cells], cells)),
                      shape=(len(groups), adata.n_obs))
    means = W @ X
    means = means.toarray() if sp.issparse(means) else np.asarray(means)
    return pd.DataFrame(np.log1p(means), index=pd.Index(groups, name=key), columns=adata.var_names)


def log_expression(expected, target_sum: float = 1e4) -> pd.DataFrame:
    """A model's expected expression on the scale of :func:`pseudobulk`.

    Each row (e.g. a perturbation's mean expected counts from ``model.predict``) is scaled
    to ``target_sum`` in total and ``log1p`` is applied. Since ``predict`` averages cells of
    one library size, this is ``log1p`` of the mean expected gene proportions times
    ``target_sum``: the model's counterpart of the observed group means.

    Parameters
    ----------
    expected
        DataFrame or 2-d array (rows x genes), non-negative, every row with a positive sum.
    target_sum
        Total of a row after scaling.

    Returns
    -------
    DataFrame with the index and columns of ``expected`` (a range for an array).
    """
    df = expected if isinstance(expected, pd.DataFrame) else pd.DataFrame(np.asarray(expected))
    if df.ndim != 2:
        raise ValueError(f"expected must be 2-d (rows x genes); got shape {np.shape(expected)}.")
    if not np.isfinite(target_sum) or target_sum <= 0:
        raise ValueError(f"target_sum={target_sum!r} must be a positive number.")
    values = df.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or (values < 0).any():
        raise ValueError("expected must hold finite, non-negative expression values.")
    total = values.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        empty = list(df.index[(total <= 0).ravel()])
        raise ValueError(f"rows {empty} of expected sum to 0: they cannot be normalised.")
    return pd.DataFrame(np.log1p(values / total * target_sum), index=df.index, columns=df.columns)


def _as_effects(pred, obs):
    """Two aligned 1-d float arrays from Series or arrays (Series pairs align on the index)."""
    if isinstance(pred, pd.Series) and isinstance(obs, pd.Series):
        if not pred.index.is_unique or not obs.index.is_unique:
            raise ValueError("pred_effect and obs_effect need unique index labels to be aligned.")
        if len(pred) != len(obs) or not pred.index.isin(obs.index).all():
            only_p = list(pred.index.difference(obs.index)[:5])
            only_o = list(obs.index.difference(pred.index)[:5])
            raise ValueError(f"pred_effect and obs_effect have different genes (only in pred: "
                             f"{only_p}..., only in obs: {only_o}...): pass effects on the same genes.")
        pred = pred.reindex(obs.index)
    p = np.asarray(pred, dtype=np.float64)
    o = np.asarray(obs, dtype=np.float64)
    if p.ndim != 1 or o.ndim != 1:
        raise ValueError(f"effects must be 1-d (one value per gene); got shapes {p.shape} and {o.shape}.")
    if p.shape != o.shape:
        raise ValueError(f"pred_effect has {p.size} values but obs_effect has {o.size}: pass the same genes.")
    if p.size < 2:
        raise ValueError("effects need at least 2 genes.")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(o))):
        raise ValueError("effects contain NaN or infinite values.")
    return p, o


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) <= 1e-12 or np.std(b) <= 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def effect_scores(pred_effect, obs_effect, n_top: int = 20) -> dict:
    """Scores of a predicted perturbation effect against the observed one.

    Effects are per-gene differences on one scale, e.g. a group's :func:`pseudobulk` minus
    control's, and a model's :func:`log_expression` of the group minus that of control.

    Parameters
    ----------
    pred_effect, obs_effect
        Series or 1-d arrays, one value per gene. Two Series are aligned on their index
        (they must hold the same genes); otherwise the values are matched by position.
    n_top
        Number of genes with the largest observed ``|effect|`` scored by ``pearson_top`` and
        ``rmse_top`` (all genes when there are fewer).

    Returns
    -------
    dict with ``pearson_top`` (Pearson r on the top genes), ``pearson_all`` (on all genes),
    ``rmse_top`` (root mean squared error on the top genes) and ``mse_all`` (mean squared
    error on all genes). A Pearson r is NaN when either side is constant on its genes
    (standard deviation <= 1e-12): a prediction of no change, or of the same change for every
    gene, has no correlation.
    """
    p, o = _as_effects(pred_effect, obs_effect)
    if isinstance(n_top, bool) or not isinstance(n_top, (int, np.integer)) or n_top < 1:
        raise ValueError(f"n_top={n_top!r} must be a positive integer.")
    top = np.argsort(-np.abs(o), kind="stable")[:n_top]
    err = p - o
    return {"pearson_top": _pearson(p[top], o[top]),
            "pearson_all": _pearson(p, o),
            "rmse_top": float(np.sqrt(np.mean(err[top] ** 2))),
            "mse_all": float(np.mean(err ** 2))}


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """Mean of the paired differences ``a - b`` (e.g. two models' scores on the same seeds,
    cells and splits) with a ``confidence`` interval from the t distribution.

    Parameters
    ----------
    a, b
        Scores of two methods on the same units (seeds), in the same order, (n,).

    Returns
    -------
    dict with ``n``, ``mean``, ``low``, ``high`` and ``verdict``: ``"a > b"`` or ``"a < b"``
    when the interval excludes 0, else ``"tie"`` (the difference is inside seed noise).
    With one pair the interval is undefined (NaN) and the verdict is ``"tie"``.
    """
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same units: {a.size} vs {b.size} values.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must lie in (0, 1).")
    d = a - b
    if not np.all(np.isfinite(d)):
        raise ValueError("paired scores contain NaN or infinite values; drop those units first.")
    n, mean = d.size, float(d.mean()) if d.size else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "low": float("nan"), "high": float("nan"), "verdict": "tie"}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    low, high = mean - half, mean + half
    verdict = "a > b" if low > 0 else "a < b" if high < 0 else "tie"
    return {"n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}
