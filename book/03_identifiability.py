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
# # 3. Do sparse models recover the latents?
#
# **The question of this chapter:** trained on the same simulated screen, do the sparse
# mechanism shift models (sVAE, sVAE+) recover the true latents and each perturbation's
# targets, where a VAE, a $\beta$-VAE and a dense-shift iVAE cannot? When does it work, and
# when does it not?
#
# :::{admonition} In this chapter
# :class: tip
#
# **Learning objectives.**
# - explain why a VAE or $\beta$-VAE cannot prefer the true axes, and what the sparsity prior
#   and the {term}`alignment step <Alignment step>` add;
# - compute latent recovery ({term}`MCC`) and target recovery
#   ({term}`F1 <Precision, recall, F1>`, {term}`AUROC`) of five models over seeds;
# - interpret cell-level MCC against a labels-only oracle and the
#   {term}`count-noise ceiling <Count-noise ceiling>`, and the sweeps that show when it fails.
#
# **Prerequisites.** Chapters 1 and 2; the {doc}`method <method>` (objectives, training
# schedule, metrics); the glossary's {term}`ELBO` and {term}`posterior collapse <Posterior collapse>`;
# what a VAE is (the models are used through their API, no PyTorch code).
#
# **Run time.** About 6 minutes at CI scale (355 s; measured in the book's CI build of
# 2026-12-07, one CPU thread on a 2-core machine; a busy machine can take 2-3 times as
# long): 16 fits of 30 epochs on about 9,150 cells, 15-30 s each (each fit prints its
# seconds). Full scale: about 8 minutes per fit on one CPU core, 15 fits and 8 sweep fits,
# so about 3 hours: use a GPU. Every page's time in the build you are reading is on the
# {doc}`execution` page.
# :::
#
# Two scores, both computed against the simulator's ground truth:
#
# - **MCC** (`sl.metrics.mcc`): match learned to true latents one-to-one (Hungarian
#   algorithm on absolute Pearson correlations, over the training cells) and average the
#   matched correlations. 1 = every latent recovered up to permutation, sign and scale.
# - **Target recovery** (`sl.metrics.target_recovery`): after the same matching, compare
#   the learned target probabilities $P(m_{kj} = 1)$ with the true target matrix:
#   precision, recall and F1 at 0.5, and AUROC. Only sVAE and sVAE+ learn masks; iVAE
#   shifts every latent (all entries 1), the VAEs none (all 0).
#
# Every model below is trained with the package's **default training settings**: what a
# user gets from `model.train(max_epochs=...)`. For the sparse models those include a
# dense warm-up (shifts without masks) followed by an *alignment step* that rotates the
# latent space to make the learned shifts sparsest and initialises the masks from them:
# chapter 1's argument, turned into an algorithm (see `help(sl.SVAEPlus.train)`).

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
# Parameters (papermill: -p NAME VALUE). The simulation and the training are the book's own
# (H.simulation(), H.training(): chapters 2, 3, 4 and 6 share them, and the cached models);
# SVAE_LITE_FULL=1 switches both to full scale.
FULL = H.full_scale()
SIM, TRAIN = H.simulation(), H.training()
n_latent = SIM["n_latent"]
n_perturbations = SIM["n_perturbations"]
n_heldout = SIM["n_heldout"]
n_cells_per_perturbation = SIM["n_cells_per_perturbation"]
n_genes = SIM["n_genes"]
sim_seed = SIM["seed"]
models = ["VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus"]
# fresh training seeds: the sparse presets' defaults were chosen on seeds 0-2, the CI
# scale's simulation on seeds 11-12
seeds = [20, 21, 22] if FULL else [20, 21]
max_epochs = TRAIN["max_epochs"]           # None: what model.train() chooses
batch_size = TRAIN.get("batch_size", 256)  # cells per minibatch
# the sweeps over sparsity and number of perturbations (iVAE vs sVAE+, first seed only)
run_sweeps = True
sweep_models = ["iVAE", "SVAEPlus"]
sweep_targets = [[1, 1], [3, 5]] if FULL else [[3, 5]]   # (low, high) targets each
sweep_n_train = [20, 40] if FULL else [10, 30]  # training perturbations kept

# %% tags=["remove-input"]
# Validate the parameters first: a bad value fails here with a message naming it.
globals().update(H.check_parameters(
    n_latent=n_latent, n_perturbations=n_perturbations, n_heldout=n_heldout,
    n_cells_per_perturbation=n_cells_per_perturbation, n_genes=n_genes, sim_seed=sim_seed,
    models=models, seeds=seeds, max_epochs=max_epochs, batch_size=batch_size,
    run_sweeps=run_sweeps,
    sweep_models=sweep_models, sweep_n_train=sweep_n_train,
    kinds={"sim_seed": "seed", "run_sweeps": "bool", "sweep_models": "models",
           "sweep_n_train": "ints", "max_epochs": "epochs"}))
if isinstance(sweep_targets, str):  # papermill passes lists as strings
    import json
    sweep_targets = json.loads(sweep_targets)
sweep_targets = [H.check_parameters(n_targets=t)["n_targets"] for t in sweep_targets]
if max(hi for _, hi in sweep_targets) > n_latent:
    raise ValueError(f"Invalid parameter sweep_targets={sweep_targets}: a perturbation cannot "
                     f"target more than n_latent={n_latent} latents.")
if max(sweep_n_train) > n_perturbations - n_heldout:
    raise ValueError(f"Invalid parameter sweep_n_train={sweep_n_train}: there are only "
                     f"{n_perturbations - n_heldout} training perturbations.")

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

import svae_lite as sl
from svae_lite import plotting
from svae_lite.alignment import sparsest_rotation

# %% [markdown]
# Full scale: `SVAE_LITE_FULL=1` (on Colab: `%env SVAE_LITE_FULL=1` before the first cell)
# switches to the simulator's defaults ($d = 15$, 80 training perturbations of 500 cells,
# 100 genes), 3 seeds and the epochs `model.train()` chooses (198 here): about 8 minutes per
# model and seed on one CPU core, so use a GPU. Any single value can be changed, e.g.
#
# ```bash
# jupytext --to ipynb --output - book/03_identifiability.py | \
#     papermill - out.ipynb -p max_epochs 200 -p seeds "[20, 21, 22, 23, 24]"
# ```
#
# At CI scale (this build: $d = 6$, 60 training perturbations of 150 cells, so about 10
# per latent, 30 epochs of 64-cell minibatches, 2 seeds) the screen is small enough to
# train in a CI build's minutes and has enough perturbations per latent for the sparse
# models to identify the latents (with 30 perturbations, 5 per latent, the alignment step
# found the right axes in some seeds only: `benchmarks/README.md`, "The book's CI scale").
# The committed full-scale results are shown beside this build's in the last section.
#
# ## The data
#
# One simulation, as in chapter 2; models see only the training perturbations.

# %%
sim = dict(n_latent=n_latent, n_perturbations=n_perturbations, n_heldout=n_heldout,
           n_cells_per_perturbation=n_cells_per_perturbation, n_genes=n_genes, seed=sim_seed)
adata = sl.simulate(**sim)
train = adata[adata.obs["split"] == "train"].copy()
print(f"training on {train.n_obs} cells x {train.n_vars} genes, "
      f"{train.obs['perturbation'].nunique() - 1} perturbations + control; "
      f"{max_epochs} epochs; seeds {seeds}")

# %% [markdown]
# ## Training five models over several seeds
#
# Each fit is the public API's three lines,
#
# ```python
# sl.SVAEPlus.setup_anndata(train, perturbation_key="perturbation", control="control")
# model = sl.SVAEPlus(train, n_latent=n_latent)
# model.train(max_epochs=max_epochs, batch_size=batch_size, seed=seed)
# ```
#
# run by the book's helper `H.fit`, which also saves the trained model under `_build/cache`
# so that chapters 4 and 6 reuse it instead of training it again.

# %%
rows, fitted = [], {}
for name in models:
    cls = getattr(sl, name)
    for seed in seeds:
        model = H.fit(cls, train, sim, n_latent=n_latent, max_epochs=max_epochs, seed=seed,
                      batch_size=batch_size)
        rec = sl.metrics.target_recovery(train, model)
        sparse = name in ("SVAE", "SVAEPlus")
        rows.append({"model": name, "seed": seed, "mcc": rec["mcc"],
                     "target_f1": rec["f1"] if sparse else np.nan,
                     "target_precision": rec["precision"] if sparse else np.nan,
                     "target_recall": rec["recall"] if sparse else np.nan,
                     "target_auroc": rec["auroc"] if sparse else np.nan,
                     "final_elbo": float(np.asarray(model.history["elbo_train"]).ravel()[-1]),
                     "train_seconds": model.fit_seconds_})
        fitted[name, seed] = (model, rec)
        print(f"{name:9s} seed {seed}: MCC {rec['mcc']:.3f}"
              + (f", target F1 {rec['f1']:.2f}" if sparse else "")
              + f"  ({model.fit_seconds_:.0f} s{', cached' if model.from_cache_ else ''})")
scores = pd.DataFrame(rows)

# %% [markdown]
# ## Latent recovery

# %% mystnb={"figure": {"caption": "Latent and target recovery of the five models on this build's simulation. Left: MCC between true and learned latents after one-to-one matching (pooled over all training cells; 1 = recovered up to permutation, sign and scale; higher is better). Right: F1 of the learned target matrix of the sparse models (entries with probability > 0.5 against the true targets). One dot per training seed; bar: mean.", "name": "fig-ch3-recovery"}, "image": {"alt": "Strip plots of MCC per model and target F1 of sVAE and sVAE+, one dot per seed"}}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [5, 2.2]})
plotting.score_strip(scores, y="mcc", order=models, ax=axes[0])
axes[0].set_ylabel("MCC with the true latents")
sparse_models = [m for m in models if m in ("SVAE", "SVAEPlus")]
if sparse_models:
    plotting.score_strip(scores, y="target_f1", order=sparse_models, ax=axes[1])
    axes[1].set_ylabel("target F1")
else:
    axes[1].axis("off")
fig.tight_layout()

# %%
summary = (scores.groupby("model", sort=False)
           .agg(mcc_mean=("mcc", "mean"), mcc_sd=("mcc", "std"),
                f1_mean=("target_f1", "mean"), auroc_mean=("target_auroc", "mean"),
                seconds=("train_seconds", "mean"))
           .reindex(models))
summary.round(3)

# %% [markdown]
# Choosing a run by its fit to the data, never by the ground truth: among the seeds of each
# model, keep the one with the best final training ELBO (the loss is the negative ELBO, so
# the lowest `elbo_train`). This is what a user without ground truth can do with restarts.

# %%
lowest = scores.groupby("model", sort=False)["final_elbo"].idxmin()
best = scores.loc[lowest].set_index("model").reindex(models)
best[["seed", "mcc", "target_f1", "final_elbo"]].round(3)

# %% [markdown]
# ## Identification at the level of cells
#
# Pooled MCC mixes two things: whether the *perturbation groups* land on the right axes,
# and whether the latents of *individual cells* are right. With shifts of about five
# control standard deviations, most of a latent's variance over all cells is between
# groups, so a representation that gives every cell its group's mean true latent, and
# knows nothing else about the cell, already scores a high pooled MCC: the **group-mean
# oracle** below. Two scores see the cells: the **within-group** MCC (each group's mean
# subtracted from both the true and the learned latents) and the MCC on **control cells**
# alone, where the oracle scores 0. Each is shown with its **count-noise ceiling**: the
# score of the MAP latents under the simulator's *true* model, which no model can beat on
# average (`sl.ceiling.mcc_ceiling`). And one ablation: the iVAE's latents rotated by the
# package's own alignment step (the sparsest rotation of its shifts), to tell what the
# rotation gives from what the sparse phase adds.

# %%
ROTATED = "iVAE + sparsest rotation (no sparse phase)"
labels = train.obs["perturbation"].astype(str).to_numpy()
z_true = train.obsm["z_true"]
ceiling = sl.ceiling.mcc_ceiling(train)
cell_rows = {"count-noise ceiling (MAP, true model)": ceiling,
             "group-mean oracle (labels only)": sl.metrics.cell_level_mcc(
                 z_true, sl.metrics.group_mean_oracle(z_true, labels), labels)}
for name in models:
    z = fitted[name, seeds[0]][0].get_latent_representation()
    cell_rows[name] = sl.metrics.cell_level_mcc(z_true, z, labels)
if "iVAE" in models:
    ivae = fitted["iVAE", seeds[0]][0]
    R, _ = sparsest_rotation(ivae.get_shifts().to_numpy(), seed=seeds[0])
    cell_rows[ROTATED] = sl.metrics.cell_level_mcc(
        z_true, ivae.get_latent_representation() @ R, labels)
cell_level = pd.DataFrame(cell_rows).T[["pooled", "within_groups", "control"]]
for col in ["pooled", "within_groups", "control"]:
    cell_level[f"{col} / ceiling"] = cell_level[col] / ceiling[col]
cell_level.round(2)

# %% mystnb={"figure": {"caption": "Latent recovery at the level of cells (first seed). For each representation, MCC pooled over all cells, within perturbation groups (each group's mean removed) and on control cells only (higher is better). Dotted lines: the count-noise ceiling of each score (MAP latents under the true generative model). The labels-only oracle scores high pooled but zero on control cells and within groups; \\\"iVAE + sparsest rotation\\\" isolates what the alignment rotation gives without the sparse phase.", "name": "fig-ch3-cell-level"}, "image": {"alt": "Horizontal bar chart of pooled, within-group and control-cell MCC for each representation, with dotted ceiling lines"}}
long = (cell_level[["pooled", "within_groups", "control"]].drop(index=cell_level.index[0])
        .rename_axis("representation").reset_index()
        .melt("representation", var_name="score", value_name="MCC"))
fig, ax = plt.subplots(figsize=(9, 3.8))
sns.barplot(long, y="representation", x="MCC", hue="score", ax=ax, orient="h")
for i, col in enumerate(["pooled", "within_groups", "control"]):
    ax.axvline(ceiling[col], color=f"C{i}", ls=":", lw=1.2)
ax.set_xlim(0, 1)
ax.set_xlabel(f"MCC with the true latents (seed {seeds[0]}); dotted: count-noise ceilings")
ax.set_ylabel("")
ax.legend(title="", loc="lower right", fontsize=8)
sns.despine()

# %% [markdown]
# ## Learned vs true targets
#
# For the sparse models, the learned target probabilities next to the truth, after the
# learned latents have been matched to the true ones (columns reordered; the rows are the
# training perturbations). A perfect model reproduces the left panel.

# %% mystnb={"figure": {"caption": "True (left) and learned intervention targets of the training perturbations (rows) on the latents (columns, learned latents matched and reordered to the true ones), first seed. Colour: target probability from 0 (light) to 1 (dark), see the colour bar. A perfect model reproduces the left panel.", "name": "fig-ch3-targets"}, "image": {"alt": "Heatmaps of the true and learned perturbation-by-latent target matrices"}}
pick = [m for m in ("SVAEPlus", "SVAE") if m in models]
if pick:
    true = adata.uns["true_targets"]
    learned = [fitted[m, seeds[0]][1]["learned"] for m in pick]
    common = learned[0].index
    fig = plotting.target_heatmaps(true.loc[common, learned[0].columns], learned,
                                   titles=["true"] + [f"{m} (seed {seeds[0]})" for m in pick],
                                   max_rows=None)

# %% [markdown]
# ## What the matched latents look like
#
# Each true latent against the learned latent matched to it, for the VAE and for sVAE+
# (first seed; cells coloured by the 8 largest perturbations, others grey). A recovered
# latent is a thin monotone curve; a mixed one is a cloud.

# %% mystnb={"figure": {"caption": "Each true latent (x axis, control standard deviations) against the VAE's latent matched to it (y axis), first seed; each dot is a cell, coloured by its perturbation (the 8 largest groups; others grey: the colours only show that groups move along single axes, not which group is which). A recovered latent is a thin monotone curve; a mixed one is a cloud.", "name": "fig-ch3-scatter-vae"}, "image": {"alt": "Grid of scatter plots of true against matched VAE's latents"}}
if "VAE" in models:
    fig = plotting.latent_scatter(train.obsm["z_true"],
                                  fitted["VAE", seeds[0]][0].get_latent_representation(),
                                  max_latents=8, hue=train.obs["perturbation"])
    fig.suptitle(f"VAE: MCC {fitted['VAE', seeds[0]][1]['mcc']:.2f}", y=1.02)

# %% mystnb={"figure": {"caption": "Each true latent (x axis, control standard deviations) against the sVAE+'s latent matched to it (y axis), first seed; each dot is a cell, coloured by its perturbation (the 8 largest groups; others grey: the colours only show that groups move along single axes, not which group is which). A recovered latent is a thin monotone curve; a mixed one is a cloud.", "name": "fig-ch3-scatter-svaeplus"}, "image": {"alt": "Grid of scatter plots of true against matched sVAE+'s latents"}}
if "SVAEPlus" in models:
    fig = plotting.latent_scatter(train.obsm["z_true"],
                                  fitted["SVAEPlus", seeds[0]][0].get_latent_representation(),
                                  max_latents=8, hue=train.obs["perturbation"])
    fig.suptitle(f"SVAEPlus: MCC {fitted['SVAEPlus', seeds[0]][1]['mcc']:.2f}", y=1.02)

# %% [markdown]
# ## When does it work? Sparsity and the number of perturbations
#
# Chapter 1's argument needs sparse shifts and enough perturbations to pin every axis.
# Two sweeps with iVAE and sVAE+ (first seed, same epochs), each changing one thing
# (at full scale, the main run has 80 training perturbations and the sweep keeps 20 or 40
# of them; the last section explains what happens with few perturbations per latent):
#
# - **targets per perturbation**: 1 target each (sparsest), the default 1 to 3, and 3 to 5
#   (dense for $d$ this small);
# - **number of training perturbations**: a random subset of the training perturbations.

# %%
sweep_rows = []
if run_sweeps:
    def score(name, data, key):
        m = H.fit(getattr(sl, name), data, key, n_latent=n_latent, max_epochs=max_epochs,
                  seed=seeds[0], batch_size=batch_size)
        rec = sl.metrics.target_recovery(data, m)
        return rec["mcc"], (rec["f1"] if name in ("SVAE", "SVAEPlus") else np.nan)

    for lo, hi in sweep_targets:
        key = dict(sim, n_targets=[lo, hi])
        a = sl.simulate(**sim, n_targets=(lo, hi))
        tr = a[a.obs["split"] == "train"].copy()
        for name in sweep_models:
            mcc, f1 = score(name, tr, key)
            sweep_rows.append({"sweep": "targets per perturbation", "setting": f"{lo}-{hi}",
                               "model": name, "mcc": mcc, "target_f1": f1})
    rng = np.random.default_rng(sim_seed)
    train_perts = [p for p in train.obs["perturbation"].cat.categories
                   if p != "control" and (train.obs["perturbation"] == p).any()]
    for n_keep in sweep_n_train:
        keep = sorted(rng.choice(train_perts, size=n_keep, replace=False))
        tr = train[train.obs["perturbation"].isin(["control"] + keep).to_numpy()].copy()
        tr.obs["perturbation"] = tr.obs["perturbation"].cat.remove_unused_categories()
        for name in sweep_models:
            mcc, f1 = score(name, tr, dict(sim, keep=keep))
            sweep_rows.append({"sweep": "training perturbations", "setting": str(n_keep),
                               "model": name, "mcc": mcc, "target_f1": f1})
    # the main run is the default point of both sweeps
    n_train = len(train_perts)
    for name in sweep_models:
        if name in models:
            main = scores[(scores.model == name) & (scores.seed == seeds[0])].iloc[0]
            lo, hi = adata.uns["simulation"]["n_targets"]
            sweep_rows.append({"sweep": "targets per perturbation", "setting": f"{lo}-{hi}",
                               "model": name, "mcc": main.mcc, "target_f1": main.target_f1})
            sweep_rows.append({"sweep": "training perturbations", "setting": str(n_train),
                               "model": name, "mcc": main.mcc, "target_f1": main.target_f1})
sweeps = pd.DataFrame(sweep_rows)

# %% mystnb={"figure": {"caption": "The sweeps (first seed): MCC of iVAE and sVAE+ as the true targets per perturbation grow denser (left) and as fewer training perturbations are kept (right); the main run is the default point of both. Higher is better; 1 = latents recovered up to permutation, sign and scale.", "name": "fig-ch3-sweeps"}, "image": {"alt": "Point plots of MCC against targets per perturbation and against the number of training perturbations, for iVAE and sVAE+"}}
if len(sweeps):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, (what, df) in zip(axes, sweeps.groupby("sweep", sort=False)):
        order = sorted(df["setting"].unique(), key=lambda s: [int(v) for v in s.split("-")])
        sns.pointplot(data=df, x="setting", y="mcc", hue="model", order=order, ax=ax,
                      markers=["o", "s", "D", "^", "v"][:df["model"].nunique()], dodge=0.2)
        ax.set_xlabel(what)
        ax.set_ylabel("MCC")
        ax.set_ylim(0, 1)
        sns.despine(ax=ax)
    fig.tight_layout()

# %%
if len(sweeps):
    display(sweeps.pivot_table(index=["sweep", "setting"], columns="model",
                               values=["mcc", "target_f1"]).round(3))

# %% [markdown]
# ## What we saw
#
# The numbers below are printed from the runs above, at this page's parameters (the
# parameters cell), and the answer after them is assembled from those numbers.

# %%
mean = scores.groupby("model")["mcc"].mean()
f1 = scores.groupby("model")["target_f1"].mean()
print(f"{len(seeds)} seeds, {max_epochs} epochs, d={n_latent}, "
      f"{n_perturbations - n_heldout} training perturbations")
for name in models:
    print(f"  {name:9s} MCC {mean[name]:.3f} +- {scores[scores.model == name]['mcc'].std():.3f}"
          + (f"   target F1 {f1[name]:.2f}" if name in ("SVAE", "SVAEPlus") else ""))
if {"SVAEPlus", "VAE"} <= set(models):
    print(f"sVAE+ minus VAE, mean MCC: {mean['SVAEPlus'] - mean['VAE']:+.3f}")
if {"SVAEPlus", "iVAE"} <= set(models):
    print(f"sVAE+ minus iVAE, mean MCC: {mean['SVAEPlus'] - mean['iVAE']:+.3f}")
if len(sweeps):
    by_point = sweeps.set_index(["sweep", "setting", "model"]).sort_index()
    for (what, setting, name), r in by_point.iterrows():
        print(f"  sweep {what} = {setting}: {name} MCC {r.mcc:.3f}")
oracle = cell_level.loc["group-mean oracle (labels only)"]
print(f"cell level (seed {seeds[0]}): the labels-only oracle scores pooled {oracle.pooled:.2f} but "
      f"within groups {oracle.within_groups:.2f} and on control cells {oracle.control:.2f};")
for name in [m for m in cell_level.index[2:]]:
    r = cell_level.loc[name]
    print(f"  {name:44s} control-cell MCC {r.control:.2f} ({r['control / ceiling']:.0%} of the "
          f"ceiling {ceiling['control']:.2f}), within groups {r.within_groups:.2f} "
          f"({r['within_groups / ceiling']:.0%} of {ceiling['within_groups']:.2f})")
H.save_results("03_identifiability", {
    "max_epochs": max_epochs, "n_latent": n_latent, "seeds": seeds,
    "n_train_perturbations": n_perturbations - n_heldout,
    "mcc_mean": mean.to_dict(), "target_f1_mean": f1.dropna().to_dict(),
    "scores": scores.to_dict(orient="records"),
    "sweeps": sweeps.to_dict(orient="records"),
    "cell_level": cell_level.to_dict(orient="index"),
})
print(f"chapter ran in {H.elapsed()}")

# %% tags=["remove-input"]
from IPython.display import Markdown


def answer():
    """The chapter's question answered from the numbers above (text follows the numbers)."""
    out = []
    sp, sp_f1 = mean.get("SVAEPlus"), f1.get("SVAEPlus")
    if sp is not None:
        rivals = [m for m in ("VAE", "BetaVAE", "iVAE") if m in mean]
        beaten = [m for m in rivals if sp - mean[m] > 0.05]
        out.append(f"**Latents.** sVAE+ reaches a mean MCC of {sp:.2f} over {len(seeds)} seeds"
                   + (f", ahead of {', '.join(f'{m} ({mean[m]:.2f})' for m in beaten)}"
                      if beaten else "")
                   + (f"; it is NOT clearly ahead of "
                      f"{', '.join(f'{m} ({mean[m]:.2f})' for m in rivals if m not in beaten)}"
                      if len(beaten) < len(rivals) else "") + ".")
    if sp_f1 is not None and np.isfinite(sp_f1):
        out.append(f"**Targets.** sVAE+ target F1 {sp_f1:.2f}: "
                   + ("it finds which latents each perturbation moves." if sp_f1 >= 0.8 else
                      "it does NOT reliably find which latents each perturbation moves here."))
    if "SVAEPlus" in cell_level.index:
        r = cell_level.loc["SVAEPlus"]
        rot = cell_level.loc[ROTATED] if ROTATED in cell_level.index else r
        out.append(
            f"**Cells, not only groups.** On control cells, where the labels say nothing, sVAE+ "
            f"scores {r.control:.2f}, {r['control / ceiling']:.0%} of the count-noise ceiling "
            f"({ceiling['control']:.2f}); the labels-only oracle scores {oracle.control:.2f} "
            f"there although its pooled MCC is {oracle.pooled:.2f}. iVAE given the alignment "
            f"rotation alone scores {rot.control:.2f}: the sparse phase adds "
            f"{r.control - rot.control:+.2f}"
            + (" (one seed: a difference this small is not distinguishable from seed noise)."
               if abs(r.control - rot.control) < 0.05 else " (one seed)."))
    return "\n\n".join(out)


Markdown(answer())

# %% [markdown]
# How to read these numbers:
#
# - **VAE and $\beta$-VAE** have no way to prefer one rotation of the latent space over
#   another (chapter 1), so their MCC reflects whatever rotation training happened to
#   reach. A larger $\beta$ does not fix that: it trades reconstruction for a simpler
#   posterior, not for the right axes.
# - **iVAE** knows which cells share a perturbation and can place each group's mean
#   freely. With many perturbations and a Gaussian prior whose variance also changes per
#   group, that is identifying in theory {cite:p}`khemakhem2020ivae`, but with mean shifts
#   only and a few dozen groups its latents can still be any rotation that fits the
#   group means.
# - **sVAE and sVAE+** add the sparsity preference. Whether they beat iVAE and the VAEs
#   depends on training length, on how sparse the true targets are, and on how many
#   perturbations constrain each axis: the sweeps vary the last two. Few perturbations
#   leave axes that no perturbation pins down; dense targets make the sparsest rotation
#   less distinct from the others.
# - Target recovery is harder than latent recovery: a mask entry is only right if the
#   latent it refers to is matched to the right true latent first.
#
# ## The full-scale result, and where it breaks
#
# The committed full-scale results (`benchmarks/results/identifiability_defaults*.csv`,
# written by `python benchmarks/identifiability.py --setting defaults`: the book's
# full-scale simulation, every model with its default training), beside this build's:

# %% tags=["hide-input"]
def full_scale_table():
    """The committed full-scale runs, one row per model and source: seeds, pooled MCC and
    F1, and where recorded the control-cell MCC as a fraction of its seed's count-noise
    ceiling (and the iVAE's after the sparsest rotation); mean +- sd over seeds."""
    runs = H.full_scale_runs()
    if runs.empty:
        return None
    runs = runs[runs["model"].isin(models)].copy()
    fmt = lambda x: (("-" if x.isna().all() else f"{x.mean():.3f} ± {x.std():.3f}")
                     if len(x) > 1 else "-" if x.isna().all() else f"{x.mean():.3f}")
    cols = {"MCC": ("mcc", fmt), "F1": ("target_f1", fmt)}
    if "ceiling_control" in runs:  # the ceiling is in the sVAE+ row of the same simulation
        ceiling = runs.groupby(["source", "seed"])["ceiling_control"].transform("max")
        runs["control / ceiling"] = runs["mcc_control"] / ceiling
        cols["control-cell MCC / ceiling"] = ("control / ceiling", fmt)
        if "rotated_mcc_control" in runs:
            runs["rotated / ceiling"] = runs["rotated_mcc_control"] / ceiling
            cols["after sparsest rotation"] = ("rotated / ceiling", fmt)
    return runs.groupby(["model", "source"], sort=False).agg(
        seeds=("seed", lambda x: ", ".join(map(str, sorted(x)))), **cols)


full_table = full_scale_table()
build = scores.groupby("model", sort=False).agg(
    MCC=("mcc", lambda x: f"{x.mean():.3f}"),
    F1=("target_f1", lambda x: f"{x.mean():.3f}" if x.notna().any() else "-"))
display(build.style.set_caption(
    f"this build ({'full' if FULL else 'CI'} scale: d={n_latent}, "
    f"{n_perturbations - n_heldout} training perturbations, seeds {seeds})"))
if full_table is None:
    print("no committed full-scale results in this checkout")
else:
    display(full_table.style.set_caption(
        "committed full-scale results (d=15, 80 training perturbations x 500 cells)"))

# %%
gain = H.full_scale_paired(("SVAEPlus", "mcc_control"), ("iVAE", "rotated_mcc_control"))
if gain is not None:
    print(f"full scale, control-cell MCC, sVAE+ minus iVAE + sparsest rotation,\n"
          f"paired over {gain['n']} fresh seeds: {gain['mean']:+.3f} [{gain['low']:+.3f}, "
          f"{gain['high']:+.3f}] (95% interval; {gain['verdict']})")

# %% [markdown]
# `python benchmarks/identifiability.py` reruns the full-scale comparison from scratch
# (default training settings, 400 epochs, 3 seeds, one CPU core per run, about 3 minutes
# each). With $d = 8$ and **64 training perturbations** (each latent is targeted by about
# 16 of them):
#
# | model | MCC | target F1 | target AUROC |
# |---|---|---|---|
# | VAE | 0.627 ± 0.018 | - | - |
# | $\beta$-VAE ($\beta = 4$) | 0.510 ± 0.044 | - | - |
# | iVAE | 0.600 ± 0.015 | - | - |
# | sVAE (L0) | 0.927 ± 0.018 | 0.978 ± 0.035 | 0.996 |
# | sVAE+ (Beta-Bernoulli) | 0.925 ± 0.020 | 0.956 ± 0.069 | 0.997 |
#
# The paper's claim holds here: the sparse models recover the latents and the targets,
# the others do not. Halve the number of perturbations (`--setting calibration`: 32
# training perturbations of 250 cells, the same number of cells, about 8 perturbations per
# latent) and it holds only partly: sVAE+ reaches MCC 0.83 ± 0.03 and target F1
# 0.86 ± 0.04 (VAE 0.57, iVAE 0.59), with one seed of three at 0.86 and two at 0.81. Why is
# instructive, because the benchmark records what happens at each step of training (with
# diagnostics that use the truth, so they explain a run but could never be part of it):
#
# 1. At the end of the dense warm-up, the iVAE-like latents are close to a rotation of the
#    truth in *both* settings: rotated optimally onto the true latents they reach an MCC of
#    0.90 with 32 perturbations and 0.92 with 64.
# 2. The alignment step has to find that rotation without the truth, as the one that makes
#    the learned shifts sparsest. With 64 perturbations it does (MCC 0.91 right after
#    it). With 32 it often picks a different rotation (MCC 0.80 ± 0.02): the learned shifts
#    are not exactly sparse even in the right coordinates. A perturbation that moves two
#    latents by 5 standard deviations shows up in the learned space as shifts of about 2.5
#    on its targets *and* 0.5 to 1.5 on other latents, because the latent space is still
#    slightly nonlinear in the truth. With few rows, some wrong rotation of that matrix is
#    sparser than the right one; with many rows the right rotation wins.
# 3. Given the best rotation instead (the benchmark's `SVAEPlus/oracle-alignment`
#    variant, measured with the earlier network settings: encoder dropout 0.1 and no free
#    bits), the *same* sparse phase reaches MCC 0.92 and target F1 0.96 with 32
#    perturbations: the sparse phase straightens the latent space once its axes are right.
#    It cannot rotate them: started from a wrong rotation, it locks in masks that fit it.
# 4. The ELBO barely notices. The oracle-aligned models fit only 0.03 to 0.14 nats per
#    cell better than the self-aligned ones (and with a stronger mask prior, either one
#    could come out ahead). At this size the data barely prefer the true latents; the
#    training path decides.
#
# In short: sparse mechanism shift modelling identifies the latents when every latent is
# moved by enough perturbations (here about 16), the targets are sparse, and the networks
# can fit the truth. With fewer perturbations per latent, or with dense targets (the sweep
# above), the sparse models still beat the VAEs but stop short of recovering the truth. At
# the simulator's own defaults, the sizes of the paper's simulation ($d = 15$, 80 training
# perturbations of 500 cells, about 11 per latent; default training of 198 epochs),
# sVAE+ recovers the latents and the targets: on seeds 0-2, which chose the defaults
# (trained with constant learning rates), MCC 0.86 ± 0.02 and target F1 0.99 ± 0.004
# (sVAE: 0.86 and 0.98), against 0.47 for the VAE and the iVAE and 0.37 for the
# $\beta$-VAE; the fresh seeds in the table above, trained with the default annealed
# learning rates, agree.
#
# Getting there took one more lesson, about the networks rather than the masks. With
# scVI's usual encoder dropout (0.1) and the plain ELBO, sVAE+ stalled at MCC 0.78 here, and
# the same networks given the *true* masks reached only 0.81. One of the 15 true latents,
# targeted by a single training perturbation, was matched at a correlation of 0.18: its
# learned latent had collapsed onto the prior (*posterior collapse*: the encoder stops using
# it, so it costs no KL and carries nothing). The sparse models therefore train without
# encoder dropout and with *free bits* (`kl_free_bits=0.25`): while training, each latent's
# KL, averaged over the minibatch, counts as at least 0.25 nats per cell, so a latent that
# carries little information costs nothing extra and is not switched off. No latent
# collapsed in any seed since. For scale: the MAP
# latents under the *true* generative model reach MCC 0.93, so count noise, not the method,
# sets the ceiling a little above the models' 0.86.
#
# The mask prior's weight matters too. sVAE+ pays `penalty_weight` (default 0.3) times
# the Beta-Bernoulli code length of each active mask entry, per cell. At full weight
# (1.0) it switched off true targets whose learned shift is small: at $d = 15$ (seed 0)
# target recall fell from 0.99 to 0.68 and MCC from 0.80 to 0.76.
#
# ## Exercises
#
# Difficulty: ★ easy, ★★ medium, ★★★ project. Run times are estimates for 2 CPU cores; the
# chapter prints how long each of its own fits took, the yardstick for the exercises.
#
# 1. **★** Rerun with `-p max_epochs 120` (four times this build's 30 at CI scale; a GPU or
#    patience helps). Which models improve with longer training, and does the ordering
#    change?
#
#    *Run time:* about 4 times the chapter's training, roughly 20 minutes on a CPU
#    (`-p run_sweeps False` skips the sweep fits).
#
#    :::{dropdown} Hint
#    Compare the `summary` tables of the two runs, and look at `model.history["elbo_train"]`:
#    is the loss still falling at the last epoch? The sparse models spend the first part of training
#    in the dense warm-up (`help(sl.SVAEPlus.train)`).
#    :::
# 2. **★★** `sl.SVAEPlus(train, n_latent=n_latent, sparsity=..., penalty_weight=...)` set the
#    Beta-Bernoulli prior on the masks: `sparsity` its shape, `penalty_weight` (default
#    0.3) how much each cell pays for it. Sweep each (e.g. `sparsity` 1, 10, 100;
#    `penalty_weight` 0.1, 0.3, 1): what happens to target precision and recall, and to
#    MCC? Why does `sparsity` matter little once there are many more perturbations than
#    its value?
#
#    *Run time:* 6 sVAE+ fits, each as long as the chapter's sVAE+ fit.
#
#    :::{dropdown} Hint
#    Precision reacts to the price of an active mask entry, recall to true targets with small
#    shifts being switched off (the end of the full-scale section). For `sparsity`, read the
#    {term}`Beta-Bernoulli code length`: which term grows with the number of perturbations?
#    :::
# 3. **★★** Train sVAE+ with `model.train(..., dense_fraction=0.0)` (no dense warm-up and no
#    alignment step). Compare MCC and target F1 with the default schedule.
#
#    *Run time:* one sVAE+ fit per seed.
#
#    :::{dropdown} Hint
#    Without the warm-up the masks are learned before the latent space has any meaningful
#    axes; compare at the same seeds and epochs, and look at how many mask entries are on.
#    :::
# 4. **★** Score the latents with `sl.metrics.mcc(..., method="spearman")`. Which models gain,
#    and what does that say about the shape of their errors?
#
#    *Run time:* seconds (the trained models are reused).
#
#    :::{dropdown} Hint
#    A rank correlation ignores any monotone distortion of a coordinate: a gain means the
#    latent is right up to a monotone nonlinear map.
#    :::
# 5. **★★** The ELBO-selected run is not always the best-MCC run. Over more seeds, how often do
#    they agree? Is the ELBO a usable model-selection criterion here?
#
#    *Run time:* 5 fits per added seed (e.g. `-p seeds "[0, 1, 2, 3, 4, 5]"` is 3 times the
#    chapter's main training).
#
#    :::{dropdown} Hint
#    Per model, rank the seeds by `final_elbo` and by `mcc` in `scores` and compare the
#    rankings; point 4 of the full-scale section says how much the ELBO separates good runs
#    from bad ones.
#    :::
# 6. **★★★** Simulate with `n_latent=15` and train sVAE+ with `dropout_rate=0.1, kl_free_bits=0`
#    (the settings before free bits) and with the defaults. Count collapsed latents
#    (`(z.std(0) < 0.1).sum()` on `model.get_latent_representation()`) and find out which true
#    latents they should have matched: how many training perturbations target those?
#
#    *Run time:* two fits at the simulator's default size (about 40,000 training cells),
#    roughly 5 to 10 minutes each on a CPU core, scaled from the timing in the text.
#
#    :::{dropdown} Hint
#    The matching of `sl.metrics.target_recovery` tells which true latent each learned one
#    was paired with; count the ones in that column of `uns["true_targets"]` over the
#    training perturbations.
#    :::
