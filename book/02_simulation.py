# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. A simulated screen with known answers
#
# **The question of this chapter:** what does a perturbation screen look like when we
# *know* the latent factors and which of them each perturbation changes, and how much of
# that structure is visible in the counts?
#
# :::{admonition} In this chapter
# :class: tip
#
# **Learning objectives.**
# - explain what a sparse intervention does to the latents, and why the counts hide it;
# - simulate a screen with `sl.simulate` and read its ground truth: the latents and the
#   {term}`intervention targets <Intervention target>`;
# - compute and interpret the PCA {term}`MCC`, the linear baseline of chapter 3.
#
# **Prerequisites.** Chapter 1 (the generative model, stated in full in the
# {doc}`method <method>`); the glossary's {term}`library size <Library size>` and
# {term}`Perturb-seq`; AnnData and a standard scanpy pipeline (PCA, UMAP); no PyTorch.
#
# **Run time.** About 45 s at CI scale (measured in the book's CI build of 2026-12-07, one
# CPU thread on a 2-core machine; a busy machine can take 2-3 times as long); nothing is
# trained. A few minutes at full scale (a UMAP of 20,000 cells).
# :::
#
# To score a model's latents we need the true ones, so chapters 3, 4 and 6 use data drawn
# from the generative model of chapter 1 by `sl.simulate`:
#
# - $d$ latents; $K$ perturbations plus a `control` group;
# - each perturbation targets 1 to 3 distinct latents, chosen without replacement; a
#   target's mean moves by a random sign times $\mathcal N(5, 0.5^2)$, in units of the
#   control standard deviation; all other latents keep $\mathcal N(0, 1)$;
# - a fixed random nonlinear decoder (3 hidden layers of 40 units, orthogonal weights,
#   LeakyReLU) maps $z$ to gene proportions (a softmax over genes); counts are Poisson with
#   a per-cell library size of about 2,000 UMIs;
# - the last perturbations are *held out* (`obs["split"] == "heldout"`): models never see
#   them in training, and chapters 4 and 6 use them to test generalisation.
#
# The ground truth travels inside the AnnData: `obsm["z_true"]`, `uns["true_targets"]`,
# `uns["true_shifts"]` and `uns["simulation"]` (every parameter and the seed; the same seed
# gives the same data, bit for bit).

# %% tags=["hide-input"]
# Set-up (the same in every chapter). Colab: run `%env SVAE_LITE_FULL=1` first for full scale.
import os, subprocess, sys
REPO = "https://github.com/svae-lite/svae_lite"  # written from _config.yml by book/_sync.py
if "google.colab" in sys.modules and not os.path.isdir("/content/svae_lite"):
    subprocess.run(f"git clone -q --depth 1 -b main {REPO} /content/svae_lite && bash "
                   "/content/svae_lite/book/colab_setup.sh", shell=True, check=True)
sys.path[:0] = [os.environ.get("SVAE_LITE_BOOK", "book"), "/content/svae_lite/book"]
import _helpers as H; H.setup()

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE). The book's simulation (H.simulation(), the one that
# chapters 3, 4 and 6 train on); SVAE_LITE_FULL=1 switches to full scale (the simulator's
# defaults).
FULL = H.full_scale()
SIM = H.simulation()
n_latent = SIM["n_latent"]
n_perturbations = SIM["n_perturbations"]
n_heldout = SIM["n_heldout"]
n_cells_per_perturbation = SIM["n_cells_per_perturbation"]
n_genes = SIM["n_genes"]
seed = SIM["seed"]
n_umap_cells = 20000 if FULL else 3000  # cells embedded by UMAP

# %% tags=["remove-input"]
# Validate the parameters first: a bad value fails here with a message naming it.
globals().update(H.check_parameters(
    n_latent=n_latent, n_perturbations=n_perturbations, n_heldout=n_heldout,
    n_cells_per_perturbation=n_cells_per_perturbation, n_genes=n_genes, seed=seed,
    n_umap_cells=n_umap_cells))

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import seaborn as sns

import svae_lite as sl
from svae_lite import plotting

# %% [markdown]
# ## Simulate

# %%
adata = sl.simulate(n_latent=n_latent, n_perturbations=n_perturbations,
                    n_cells_per_perturbation=n_cells_per_perturbation, n_genes=n_genes,
                    n_heldout=n_heldout, seed=seed)
adata

# %%
true = adata.uns["true_targets"]
print(f"{adata.n_obs} cells x {adata.n_vars} genes; {n_perturbations} perturbations "
      f"({n_perturbations - n_heldout} train, {n_heldout} held out) + control")
print("cells per split:", adata.obs["split"].value_counts().to_dict())
print("median UMIs per cell:", float(np.median(adata.X.sum(1))))
print(f"fraction of zero counts: {float((adata.X == 0).mean()):.2f}")

# %% [markdown]
# ## The target matrix
#
# Each row is a perturbation, each column a latent; a dark cell means "this perturbation
# changes this latent's mechanism". This is the matrix sVAE and sVAE+ try to learn.

# %% mystnb={"figure": {"caption": "The true intervention targets of the simulated screen: one row per perturbation (training and held-out), one column per latent. Dark (1): the perturbation shifts that latent's mean; light (0): it leaves the latent at its control distribution N(0, 1).", "name": "fig-ch2-true-targets"}, "image": {"alt": "Heatmap of perturbations by latents with one to three dark cells per row"}}
fig = plotting.target_heatmaps(true=true, titles=["true targets"], max_rows=None)
fig.axes[-1].set_ylabel("true target (1 = yes, 0 = no)")
fig.axes[-1].set_yticks([0, 1])
fig.axes[0].tick_params(axis="y", labelsize=8)

# %%
per_pert = true.sum(1).value_counts().sort_index()
train_perts = adata.obs.loc[adata.obs["split"] == "train", "perturbation"].astype(str)
per_latent = true[true.index.isin(train_perts.unique())].sum(0)
print("perturbations with 1 / 2 / 3 targets:", per_pert.to_dict())
print("training perturbations that target each latent:", per_latent.to_dict())

# %% [markdown]
# Identifiability needs every latent to be moved by *some* training perturbation (and,
# roughly, by enough different combinations of perturbations): a latent that no
# perturbation touches is, to the model, indistinguishable from any rotation of it with the
# other untouched latents.
#
# ## What a sparse intervention does to the latents
#
# For three perturbations, every latent coordinate of control cells (grey) next to the
# perturbed cells (red). Stars mark the true targets: only those coordinates move.

# %% mystnb={"figure": {"caption": "Every true latent coordinate of 300 random control cells (grey) beside 300 cells of one perturbation (red), for three perturbations (one panel each); y axis: the latent's value in control standard deviations. Stars under each panel mark the perturbation's true targets: only those coordinates move.", "name": "fig-ch2-latent-shifts"}, "image": {"alt": "Three strip plots of latent values, control versus perturbed cells, with stars under the shifted latents"}}
show = list(true.index[:3])
fig = plotting.latent_shifts(adata.obsm["z_true"], adata.obs["perturbation"], show,
                             targets=true)
for ax in fig.axes:
    ax.set_title(ax.get_ylabel(), loc="left", fontsize=10)
    ax.set_ylabel("value (control s.d.)", fontsize=9)
fig.axes[0].get_legend().remove()  # one legend above the panels, with readable markers
marker = dict(linestyle="", markeredgewidth=0)
fig.legend(handles=[plt.Line2D([], [], marker="o", color="0.6", label="control", **marker),
                    plt.Line2D([], [], marker="o", color="C3", label="perturbed", **marker),
                    plt.Line2D([], [], marker="*", color="black", markersize=10,
                               label="true target", **marker)],
           loc="upper center", ncols=3, frameon=False, fontsize=9)
fig.tight_layout(rect=(0, 0, 1, 0.95))

# %% [markdown]
# ## What the counts show
#
# We do not observe $z$, only counts. A standard scanpy pipeline (library-size
# normalisation, $\log(1+x)$, PCA, a $k$-nearest-neighbour graph, UMAP
# {cite:p}`mcinnes2018umap`) on a random subset of cells, coloured by perturbation:

# %% mystnb={"figure": {"caption": "UMAP of the log-normalised counts of a random subset of cells (3,000 at CI scale; UMAP axes have no units). Black: control cells; colours: the three perturbations of the previous figure; light grey: all other perturbations.", "name": "fig-ch2-umap"}, "image": {"alt": "UMAP scatter plot of cells with control cells in black and three perturbations in colour"}}
rng = np.random.default_rng(seed)
sub = adata[np.sort(rng.permutation(adata.n_obs)[:min(n_umap_cells, adata.n_obs)])].copy()
sc.pp.normalize_total(sub, target_sum=1e4)
sc.pp.log1p(sub)
sc.pp.pca(sub, n_comps=min(30, n_genes - 1), random_state=seed)
sc.pp.neighbors(sub, n_neighbors=15, random_state=seed)
sc.tl.umap(sub, random_state=seed)
ax = plotting.embedding(sub.obsm["X_umap"], sub.obs["perturbation"], highlight=show,
                        title="UMAP of log-normalised counts")

# %% [markdown]
# Perturbed cells form their own regions, but the picture alone cannot say *which* factors
# changed: a perturbation that moves one latent by 5 standard deviations and one that moves
# three latents look alike. How separable are the groups in expression space, and how much
# of the latent information does a linear method recover? Two checks: the silhouette of the
# perturbation labels in PCA space, and the best-matched correlation (MCC) between the true
# latents and the top principal components.

# %%
from sklearn.metrics import silhouette_score

pca_mcc = sl.metrics.mcc(sub.obsm["z_true"], sub.obsm["X_pca"][:, :n_latent])
sil = silhouette_score(sub.obsm["X_pca"][:, :10], sub.obs["perturbation"].astype(str),
                       sample_size=min(3000, sub.n_obs), random_state=seed)

# %% [markdown]
# ## What we saw

# %%
n_tg = true.sum(1)
print(f"targets per perturbation: mean {n_tg.mean():.2f}; each latent is targeted by "
      f"{int(per_latent.min())} to {int(per_latent.max())} training perturbations")
print(f"silhouette of perturbation labels in PCA space: {sil:.2f}")
print(f"MCC between true latents and the top {n_latent} principal components: "
      f"{pca_mcc:.2f}")
H.save_results("02_simulation", {"pca_mcc": pca_mcc, "silhouette": float(sil),
                                 "mean_targets": float(n_tg.mean())})
print(f"chapter ran in {H.elapsed()}")

# %% tags=["hide-input"]
# The conclusions, written from the numbers above (they change when the numbers do).
from IPython.display import Markdown, display

saw = [f"Each perturbation targets {int(n_tg.min())} to {int(n_tg.max())} of the "
       f"{n_latent} latents (mean {n_tg.mean():.2f}) and leaves the others at their "
       "control distribution, as the heatmap and the strip plots show."]
untouched = list(per_latent.index[per_latent == 0])
if untouched:
    saw.append(f"{len(untouched)} latent(s) ({', '.join(map(str, untouched))}) are moved "
               "by NO training perturbation: by chapter 1's argument the models cannot "
               "identify them.")
else:
    saw.append(f"Every latent is moved by at least {int(per_latent.min())} training "
               f"perturbations (at most {int(per_latent.max())}), which chapter 1's "
               "argument needs for identifiability.")
if sil >= 0.5:
    sep = "well separated"
elif sil >= 0.25:
    sep = "partly separated"
elif sil >= 0:
    sep = "weakly separated, with much overlap,"
else:
    sep = "NOT separated (more similar to other groups than to their own)"
saw.append(f"The silhouette of the perturbation labels in PCA space is {sil:.2f} (on a "
           f"scale from -1 to 1, where 1 means tight, separate groups): the groups are "
           f"{sep} in expression space.")
if pca_mcc >= 0.9:
    lin = ("a linear method already recovers most of the latent information, which "
           "leaves the nonlinear models of chapter 3 little room to do better")
elif pca_mcc >= 0.5:
    lin = ("a linear method recovers the latents only partially (the decoder is "
           "nonlinear and every gene mixes several latents). This is the bar a "
           "nonlinear model must clear in chapter 3")
else:
    lin = ("a linear method recovers little of the latent information (the decoder is "
           "nonlinear and every gene mixes several latents). This low bar is the one a "
           "nonlinear model must clear in chapter 3")
saw.append(f"The top {n_latent} principal components match the true latents with MCC "
           f"{pca_mcc:.2f} (1 = every latent recovered exactly), so {lin}. "
           f"These are the numbers of one simulation (seed {seed}).")
display(Markdown("\n".join(f"- {x}" for x in saw)))

# %% [markdown]
# ## Exercises
#
# Difficulty: ★ easy, ★★ medium, ★★★ project. No exercise here trains a model; a simulation
# at this chapter's size takes seconds.
#
# 1. **★** Simulate with `target_scale=3.0`, so that a perturbation also changes the spread of
#    its targets. How do the strip plots change? Which models of chapter 1 can represent
#    that change?
#
#    :::{dropdown} Hint
#    Look at the spread, not the centre, of the starred coordinates. Chapter 1's table says
#    which priors have a per-perturbation scale $\sigma_k$.
#    :::
# 2. **★** Set `n_targets=(3, 5)`. How does the target heatmap change, and what do you expect
#    that to do to identifiability (see chapter 1's argument)?
#
#    :::{dropdown} Hint
#    With $d$ = `n_latent` latents (6 at CI scale) and 3 to 5 targets each, how much
#    sparser are the shifts in the true axes than in a rotated basis?
#    :::
# 3. **★** Lower `library_size` to 500 UMIs per cell. What happens to the fraction of zeros, the
#    silhouette, and the PCA MCC?
#
#    :::{dropdown} Hint
#    Poisson noise on a count with mean $\mu$ has relative standard deviation
#    $1/\sqrt{\mu}$; what happens to $\mu$ for a typical gene?
#    :::
# 4. **★★** Check determinism: simulate twice with the same seed and compare `X` with
#    `np.array_equal`. Then change one parameter and check which parts of the ground truth
#    stay the same.
#
#    :::{dropdown} Hint
#    Compare each piece of the ground truth separately (`obsm["z_true"]`,
#    `uns["true_targets"]`, `uns["true_shifts"]`); which ones can survive a change depends on
#    the order in which the simulator draws from its random generator.
#    :::
