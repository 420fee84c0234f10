"""The book's recurring figures (seaborn / matplotlib).

Every function draws one figure type from plain arrays or DataFrames, returns the
matplotlib ``Axes`` (or ``Figure`` for multi-panel figures) so callers can adjust it, and
never calls ``plt.show()``.

Functions
---------
- :func:`target_heatmaps`: learned vs true intervention targets (perturbations x latents).
- :func:`score_strip`: per-run scores (MCC, target F1, ...) as a box plot with the runs on top.
- :func:`likelihood_curves`: a score (e.g. held-out log-likelihood) against a number (cells,
  epochs), one line per model.
- :func:`latent_scatter`: each true latent against its matched learned latent.
- :func:`latent_shifts`: how a perturbation moves each latent coordinate (control vs
  perturbed cells).
- :func:`embedding`: a 2-d embedding (e.g. UMAP) coloured by perturbation, a few highlighted.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .metrics import match_latents

__all__ = [
    "target_heatmaps",
    "score_strip",
    "likelihood_curves",
    "latent_scatter",
    "latent_shifts",
    "embedding",
]


def _as_frame(m, name: str) -> pd.DataFrame:
    if isinstance(m, pd.DataFrame):
        return m
    a = np.asarray(m)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-d table (perturbations x latents); got shape {a.shape}.")
    return pd.DataFrame(a, index=[f"P{i}" for i in range(a.shape[0])],
                        columns=[f"z{j}" for j in range(a.shape[1])])


def target_heatmaps(true=None, learned=None, titles=None, max_rows: int | None = 40,
                    cmap: str = "rocket_r", figsize=None) -> plt.Figure:
    """Side-by-side heatmaps of intervention-target matrices.

    Parameters
    ----------
    true, learned
        (perturbations x latents) tables: booleans for the truth, probabilities in [0, 1] for
        a model, e.g. ``sl.metrics.target_recovery(adata, model)["learned"]`` (columns already
        matched to the true latents). Either may be ``None``; extra tables can be given as
        a list in ``learned``. Tables are shown in the row order of the first one.
    titles
        One title per panel (default ``"true"``, ``"learned"``).
    max_rows
        Show at most this many perturbations (the first ones), so labels stay readable;
        ``None`` shows all.

    Returns
    -------
    Figure with one heatmap per table on a shared [0, 1] colour scale.
    """
    tables = []
    if true is not None:
        tables.append(_as_frame(true, "true").astype(float))
    if learned is not None:
        for i, t in enumerate(learned if isinstance(learned, (list, tuple)) else [learned]):
            tables.append(_as_frame(t, f"learned[{i}]").astype(float))
    if not tables:
        raise ValueError("Pass at least one of `true` and `learned`.")
    if titles is None:
        titles = (["true"] if true is not None else []) + ["learned"] * (len(tables) - (true is not None))
    if len(titles) != len(tables):
        raise ValueError(f"Got {len(titles)} titles for {len(tables)} tables.")
    rows = list(tables[0].index)
    if max_rows is not None:
        rows = rows[:max_rows]
    n_rows, n_cols = len(rows), tables[0].shape[1]
    if figsize is None:
        figsize = (1.0 + 0.35 * n_cols * len(tables) + 1.0, 1.2 + 0.18 * n_rows)
    fig, axes = plt.subplots(1, len(tables), figsize=figsize, sharey=True, squeeze=False)
    for k, (ax, t, title) in enumerate(zip(axes[0], tables, titles)):
        t = t.reindex(rows)
        sns.heatmap(t, ax=ax, vmin=0, vmax=1, cmap=cmap, cbar=k == len(tables) - 1,
                    linewidths=0.3, linecolor="white", square=False,
                    cbar_kws={"label": "P(target)"} if k == len(tables) - 1 else None)
        ax.set_title(title)
        ax.set_xlabel("latent")
        ax.set_ylabel("perturbation" if k == 0 else "")
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def score_strip(scores: pd.DataFrame, y: str = "mcc", x: str = "model", hue: str | None = None,
                order=None, ax=None, ylim=(0, 1), reference: float | None = None,
                reference_label: str | None = None) -> plt.Axes:
    """Box plot of a per-run score with each run drawn as a dot on top.

    Parameters
    ----------
    scores
        Long table, one row per run (e.g. model x seed) with columns ``x``, ``y`` (and ``hue``).
    y, x, hue
        Column names: the score, the group on the x axis, an optional second grouping.
    order
        Order of the x groups (default: as first seen).
    ylim
        y-axis limits; ``None`` lets matplotlib choose.
    reference, reference_label
        Draws a dashed horizontal line (e.g. a chance level or an oracle score).

    Returns
    -------
    Axes.
    """
    for c in [x, y] + ([hue] if hue else []):
        if c not in scores.columns:
            raise KeyError(f"score table has no column {c!r} (columns: {list(scores.columns)}).")
    data = scores.dropna(subset=[y])
    if order is None:
        order = list(pd.unique(data[x]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 1.1 * len(order), 3.6))
    sns.boxplot(data=data, x=x, y=y, hue=hue, order=order, ax=ax, fliersize=0,
                boxprops={"alpha": 0.35}, legend=False)
    sns.stripplot(data=data, x=x, y=y, hue=hue, order=order, ax=ax, dodge=hue is not None,
                  size=6, edgecolor="black", linewidth=0.6, jitter=0.15,
                  legend=hue is not None)
    if reference is not None:
        ax.axhline(reference, ls="--", color="grey", lw=1)
        if reference_label:
            ax.text(len(order) - 0.5, reference, reference_label, ha="right", va="bottom",
                    color="grey", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("")
    sns.despine(ax=ax)
    return ax


def likelihood_curves(table: pd.DataFrame, x: str = "n_cells", y: str = "log_likelihood",
                      hue: str = "model", ax=None, logx: bool = True,
                      errorbar=("sd",)) -> plt.Axes:
    """A score against a number, one line (with markers) per ``hue`` group.

    Parameters
    ----------
    table
        Long table with columns ``x`` (e.g. cells per perturbation used for transfer), ``y``
        (e.g. mean held-out log-likelihood per cell, nats) and ``hue`` (e.g. model). Repeated
        rows for the same (x, hue) are averaged and shown with an error band.
    logx
        Log-scale x axis (sensible for cell counts).
    errorbar
        Passed to :func:`seaborn.lineplot`.

    Returns
    -------
    Axes.
    """
    for c in (x, y, hue):
        if c not in table.columns:
            raise KeyError(f"table has no column {c!r} (columns: {list(table.columns)}).")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6))
    sns.lineplot(data=table, x=x, y=y, hue=hue, style=hue, markers=True, dashes=False,
                 errorbar=errorbar[0] if len(errorbar) == 1 else errorbar, ax=ax)
    if logx:
        ax.set_xscale("log")
        xs = np.sort(pd.unique(table[x]))
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{v:g}" for v in xs])
        ax.minorticks_off()
    sns.despine(ax=ax)
    ax.legend(frameon=False, fontsize=8)
    return ax


def latent_scatter(z_true, z_learned, max_latents: int = 8, n_points: int = 2000,
                   hue=None, seed: int = 0, method: str = "pearson") -> plt.Figure:
    """Each true latent against the learned latent matched to it (Hungarian matching).

    Parameters
    ----------
    z_true, z_learned
        Arrays (cells, d_true) and (cells, d_learned) for the same cells.
    max_latents
        Panels for at most this many true latents (the first ones).
    n_points
        Random subsample of cells drawn (for speed and legibility).
    hue
        Optional array (cells,) of labels, e.g. perturbation; only the 8 most frequent get a
        colour, other cells are grey.

    Returns
    -------
    Figure with one panel per true latent, titled with the matched pair's |correlation|.
    """
    z_true, z_learned = np.asarray(z_true), np.asarray(z_learned)
    rows, cols, corr = match_latents(z_true, z_learned, method)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(z_true.shape[0])[:n_points]
    k = min(max_latents, len(rows))
    n_c = min(4, k)
    n_r = int(np.ceil(k / n_c))
    fig, axes = plt.subplots(n_r, n_c, figsize=(2.6 * n_c, 2.5 * n_r), squeeze=False)
    colors = None
    if hue is not None:
        hue = np.asarray(hue).astype(str)[idx]
        top = pd.Series(hue).value_counts().index[:8]
        pal = dict(zip(top, sns.color_palette("tab10", len(top))))
        colors = [pal.get(h, (0.8, 0.8, 0.8)) for h in hue]
    for i in range(n_r * n_c):
        ax = axes.flat[i]
        if i >= k:
            ax.axis("off")
            continue
        r, c = rows[i], cols[i]
        ax.scatter(z_true[idx, r], z_learned[idx, c], s=3, alpha=0.5,
                   c=colors if colors is not None else "C0", rasterized=True)
        ax.set_title(f"true z{r} vs learned {c}  |r|={corr[r, c]:.2f}", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.supxlabel("true latent", fontsize=9)
    fig.supylabel("matched learned latent", fontsize=9)
    fig.tight_layout()
    return fig


def latent_shifts(z, labels, perturbations, targets=None, control: str = "control",
                  n_points: int = 300, seed: int = 0) -> plt.Figure:
    """How perturbations move each latent coordinate: control vs perturbed cells.

    Parameters
    ----------
    z
        (cells, d) latents (true or learned).
    labels
        (cells,) perturbation label of each cell.
    perturbations
        The perturbations to show (one panel each).
    targets
        Optional (perturbations x latents) boolean table; target latents are marked with a
        star under the axis.
    n_points
        Cells drawn per group and panel.

    Returns
    -------
    Figure, one panel per perturbation: for every latent, control cells (grey) beside the
    perturbation's cells (colour).
    """
    z = np.asarray(z)
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    d = z.shape[1]
    perturbations = list(perturbations)
    if not perturbations:
        raise ValueError("Pass at least one perturbation to show.")
    fig, axes = plt.subplots(len(perturbations), 1, figsize=(0.55 * d + 1.6, 2.1 * len(perturbations)),
                             sharex=True, squeeze=False)
    frames = []
    for p in [control] + perturbations:
        idx = np.flatnonzero(labels == p)
        if idx.size == 0:
            raise ValueError(f"No cell has the label {p!r}.")
        idx = rng.choice(idx, size=min(n_points, idx.size), replace=False)
        f = pd.DataFrame(z[idx], columns=[f"z{j}" for j in range(d)]).melt(var_name="latent", value_name="value")
        f["group"] = p
        frames.append(f)
    ctrl = frames[0]
    for ax, p, f in zip(axes[:, 0], perturbations, frames[1:]):
        both = pd.concat([ctrl, f])
        both["group"] = np.where(both["group"] == control, control, "perturbed")
        sns.stripplot(data=both, x="latent", y="value", hue="group", dodge=True, size=1.5,
                      alpha=0.5, jitter=0.25, palette={control: "0.6", "perturbed": "C3"},
                      ax=ax, legend=ax is axes[0, 0], rasterized=True)
        ax.set_ylabel(p)
        ax.axhline(0, color="black", lw=0.5)
        if targets is not None and p in targets.index:
            hit = np.flatnonzero(np.asarray(targets.loc[p], dtype=bool))
            ymin = ax.get_ylim()[0]
            ax.scatter(hit, np.full(hit.size, ymin), marker="*", s=90, color="black",
                       clip_on=False, zorder=5, label="true target" if ax is axes[0, 0] else None)
        sns.despine(ax=ax)
    axes[0, 0].legend(loc="upper right", fontsize=8, markerscale=2, frameon=False, ncols=3)
    axes[-1, 0].set_xlabel("latent coordinate")
    fig.tight_layout()
    return fig


def embedding(coords, labels, highlight=None, control: str = "control", ax=None,
              title: str | None = None, point_size: float = 3.0) -> plt.Axes:
    """Scatter of a 2-d embedding (e.g. UMAP) with a few perturbations highlighted.

    Parameters
    ----------
    coords
        (cells, 2) embedding coordinates.
    labels
        (cells,) perturbation label of each cell.
    highlight
        Perturbations drawn in colour (default: the 6 largest groups besides control);
        control cells are black, everything else light grey.

    Returns
    -------
    Axes.
    """
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (cells, 2); got {coords.shape}.")
    labels = pd.Series(np.asarray(labels).astype(str))
    if len(labels) != coords.shape[0]:
        raise ValueError(f"{len(labels)} labels for {coords.shape[0]} cells.")
    if highlight is None:
        highlight = [p for p in labels.value_counts().index if p != control][:6]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    rest = ~labels.isin(list(highlight) + [control]).to_numpy()
    ax.scatter(coords[rest, 0], coords[rest, 1], s=point_size, color="0.85", label="other",
               rasterized=True, linewidths=0)
    ctl = (labels == control).to_numpy()
    ax.scatter(coords[ctl, 0], coords[ctl, 1], s=point_size, color="black", label=control,
               rasterized=True, linewidths=0)
    pal = sns.color_palette("tab10", len(highlight))
    for p, col in zip(highlight, pal):
        m = (labels == p).to_numpy()
        ax.scatter(coords[m, 0], coords[m, 1], s=point_size * 1.5, color=col, label=p,
                   rasterized=True, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    if title:
        ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=3,
              fontsize=8)
    sns.despine(ax=ax)
    return ax
