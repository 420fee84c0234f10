"""Smoke tests of svae_lite.plotting: each figure draws on the Agg backend and returns
matplotlib objects with the expected content."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from svae_lite import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _targets(k=6, d=4, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.random((k, d)) < 0.3
    return pd.DataFrame(t, index=[f"P{i}" for i in range(k)], columns=[f"z{j}" for j in range(d)])


def test_target_heatmaps_two_panels():
    true = _targets()
    learned = true.astype(float) * 0.9 + 0.05
    fig = plotting.target_heatmaps(true, learned)
    assert isinstance(fig, plt.Figure)
    heat = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heat] == ["true", "learned"]
    with pytest.raises(ValueError, match="at least one"):
        plotting.target_heatmaps()
    with pytest.raises(ValueError, match="titles"):
        plotting.target_heatmaps(true, learned, titles=["only one"])


def test_score_strip_and_reference():
    df = pd.DataFrame({"model": ["VAE"] * 3 + ["SVAEPlus"] * 3,
                       "mcc": [0.5, 0.55, 0.6, 0.8, 0.85, 0.9]})
    ax = plotting.score_strip(df, y="mcc", reference=0.3, reference_label="chance")
    assert isinstance(ax, plt.Axes)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["VAE", "SVAEPlus"]
    # six runs drawn as points
    assert sum(len(c.get_offsets()) for c in ax.collections) >= 6
    with pytest.raises(KeyError, match="f1"):
        plotting.score_strip(df, y="f1")


def test_likelihood_curves():
    df = pd.DataFrame({"model": ["iVAE", "iVAE", "SVAEPlus", "SVAEPlus"], "n_cells": [10, 50, 10, 50],
                       "log_likelihood": [-200.0, -190.0, -195.0, -185.0]})
    ax = plotting.likelihood_curves(df)
    assert isinstance(ax, plt.Axes)
    assert ax.get_xscale() == "log"
    assert len(ax.get_lines()) >= 2


def test_latent_scatter_matches_permuted_latents():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 3))
    fig = plotting.latent_scatter(z, -z[:, [2, 0, 1]], n_points=100)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 3 and all("|r|=1.00" in t for t in titles)


def test_latent_shifts_and_embedding():
    rng = np.random.default_rng(1)
    labels = np.repeat(["control", "P0", "P1"], 50)
    z = rng.standard_normal((150, 4))
    z[labels == "P0", 1] += 5
    fig = plotting.latent_shifts(z, labels, ["P0", "P1"], targets=_targets(2, 4))
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    with pytest.raises(ValueError, match="No cell"):
        plotting.latent_shifts(z, labels, ["P9"])
    ax = plotting.embedding(rng.standard_normal((150, 2)), labels, highlight=["P0"])
    assert isinstance(ax, plt.Axes)
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"other", "control", "P0"}
    with pytest.raises(ValueError, match="shape"):
        plotting.embedding(rng.standard_normal((150, 3)), labels)
