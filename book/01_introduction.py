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
# # 1. Why perturbations make latents identifiable
#
# **The question of this chapter:** a single-cell RNA-seq experiment measures thousands of
# genes per cell, but a cell's state is thought to be driven by far fewer biological
# factors (pathway activities, cell-cycle phase, stress responses). Can a model *recover*
# those factors from the counts, so that each learned coordinate means one biological
# thing? And what do perturbation screens add that observational data cannot?
#
# :::{admonition} In this chapter
# :class: tip
#
# **Learning objectives.**
# - explain why i.i.d. (control) data cannot tell the true latent axes from rotated ones;
# - compute the {term}`MCC` of rotated against true latents and a shift-density score;
# - interpret the sparsest rotation as the {term}`identifiability <Identifiability>` argument
#   behind sVAE and sVAE+.
#
# **Prerequisites.** None from the book: Gaussian distributions and rotation matrices, Python
# with NumPy and pandas (no PyTorch). The {doc}`method <method>` states the model in full, the
# {doc}`glossary <notation>` its terms, e.g. {term}`mechanism shift <Mechanism shift>`.
#
# **Run time.** About 15 s at any scale (measured in the book's CI build of 2026-12-07, one
# CPU thread on a 2-core machine); no model is trained, only NumPy on a toy example.
# :::
#
# The book follows {cite:t}`lopez2023sparse`, who answered: not from i.i.d. data, but yes
# when perturbations act *sparsely* on the factors, and they built the models sVAE and
# sVAE+ on that idea. Every chapter runs the models of the `svae_lite` package, which
# reimplements them on scvi-tools {cite:p}`gayoso2022scvitools`.
#
# ## The generative model
#
# Cell $i$ received perturbation $a_i \in \{0, 1, \dots, K\}$ ($0$ = control, e.g. a
# non-targeting guide). It has a latent state $z_i \in \mathbb{R}^d$ and gene counts
# $x_i \in \mathbb{N}^G$ with library size $\ell_i$:
#
# $$
# \begin{aligned}
# z_{ij} \mid a_i = 0 &\sim \mathcal{N}(0, 1), \\
# z_{ij} \mid a_i = k &\sim \mathcal{N}\!\left(m_{kj}\,\delta_{kj},\; \sigma_{kj}^{2\,m_{kj}}\right),
#   \qquad m_{kj} \in \{0, 1\}, \\
# \rho_i &= \operatorname{softmax}\!\big(f(z_i)\big) \in \Delta^{G-1}, \\
# x_{ig} \mid z_i, \ell_i &\sim \operatorname{NegBinom}\!\left(\ell_i \rho_{ig},\; \theta_g\right).
# \end{aligned}
# $$
#
# The mask $m_k \in \{0,1\}^d$ says which latent *mechanisms* perturbation $k$ changes: a
# targeted coordinate ($m_{kj}=1$) moves by $\delta_{kj}$ (and may change its spread
# $\sigma_{kj}$), every other coordinate keeps the control mechanism $\mathcal{N}(0,1)$.
# The decoder $f$ is an unknown nonlinear map (a neural network), as in scVI
# {cite:p}`lopez2018scvi`. The **sparse mechanism shift** hypothesis
# {cite:p}`scholkopf2021causal` is that most $m_k$ have few ones: a knockout changes a few
# biological programs, not all of them.
#
# The five models in `svae_lite` are the same network with different priors $p(z \mid a)$:
#
# | model | prior over $z$ given the perturbation | source |
# |---|---|---|
# | `sl.VAE` | $\mathcal N(0, I)$ for every cell: ignores $a$ | {cite:t}`lopez2018scvi` |
# | `sl.BetaVAE` | the same, KL term weighted by $\beta = 4$ | {cite:t}`higgins2017beta` |
# | `sl.iVAE` | $\mathcal N(\delta_k, \operatorname{diag}\sigma_k^2)$: a *dense* shift per perturbation | {cite:t}`khemakhem2020ivae` |
# | `sl.SVAE` | shift gated by a learned mask $m_k$, expected-$L_0$ penalty on the mask | {cite:t}`lopez2023sparse`, {cite:t}`louizos2018l0` |
# | `sl.SVAEPlus` | mask with a Beta-Bernoulli prior, relaxed (Gumbel-sigmoid) samples | {cite:t}`lopez2023sparse`, {cite:t}`jang2017gumbel` |
#
# ## Why i.i.d. data cannot identify the latents
#
# Suppose only control cells were observed, so $z \sim \mathcal N(0, I)$. For any rotation
# $R$ (an orthogonal matrix), $Rz \sim \mathcal N(0, I)$ too, and the decoder $f \circ R^{-1}$
# maps $Rz$ to exactly the same counts. The two models give the data the same likelihood,
# so no amount of control data can tell the true axes from rotated ones
# {cite:p}`hyvarinen1999nonlinear,locatello2019challenging`. A learned coordinate then
# mixes several true factors.
#
# Perturbations break the tie. A perturbation that shifts only $z_1$ has the shift
# $\delta = (\delta_1, 0)$ in the true coordinates, but $R\delta$, generally with *two*
# nonzero entries, in rotated ones. Among all rotations, the true axes (up to permutation
# and sign) make the shifts sparsest, which is the identifiability argument of
# {cite:t}`lopez2023sparse` in one picture. The cells below show it on a toy example with
# $d = 2$, using nothing but NumPy and the matching metric of `svae_lite`.

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
# Parameters (papermill: -p NAME VALUE). This chapter is cheap at any scale.
FULL = H.full_scale()
n_cells = 20000 if FULL else 4000  # cells per group in the toy example
n_angles = 181 if FULL else 91     # rotations tried between 0 and 90 degrees
seed = 0

# %% tags=["remove-input"]
# Validate the parameters first: a bad value fails here with a message naming it.
globals().update(H.check_parameters(n_cells=n_cells, n_angles=n_angles, seed=seed))

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

import svae_lite as sl

# %% [markdown]
# ## A toy screen with two latents
#
# Control cells draw $z \sim \mathcal N(0, I_2)$; perturbation "A" shifts $z_1$ by $+4$,
# perturbation "B" shifts $z_2$ by $-4$. We look at the same cells in coordinates rotated by
# 30 degrees.

# %% mystnb={"figure": {"caption": "The toy latents of the same 3,000 random cells in the true coordinates (left) and in coordinates rotated by 30 degrees (right); both axes in units of the control standard deviation. Grey: control cells, N(0, I); blue: perturbation A (coordinate 1 shifted by +4); red: perturbation B (coordinate 2 shifted by -4).", "name": "fig-ch1-rotation"}, "image": {"alt": "Two scatter plots of a grey control cloud and two coloured perturbed clouds, in true and in rotated coordinates"}}
rng = np.random.default_rng(seed)
shifts = {"control": np.array([0.0, 0.0]), "A": np.array([4.0, 0.0]),
          "B": np.array([0.0, -4.0])}
labels = np.repeat(list(shifts), n_cells)
z = rng.standard_normal((labels.size, 2)) + np.stack([shifts[l] for l in labels])


def rotation(theta):
    """2 x 2 rotation matrix by ``theta`` radians."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


R30 = rotation(np.deg2rad(30))
z_rot = z @ R30.T

fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharex=True, sharey=True)
sub = rng.permutation(labels.size)[:3000]  # the same cells in both panels
for ax, zz, title in zip(axes, (z, z_rot), ("true coordinates", "rotated by 30 degrees")):
    sns.scatterplot(x=zz[sub, 0], y=zz[sub, 1], hue=labels[sub], s=6, linewidth=0, ax=ax,
                    palette={"control": "0.6", "A": "C0", "B": "C3"}, legend=ax is axes[0])
    ax.set_title(title)
    ax.set_xlabel("coordinate 1 (control s.d.)")
    ax.set_ylabel("coordinate 2 (control s.d.)")
    ax.set_aspect("equal")
handles, names = axes[0].get_legend_handles_labels()
axes[0].get_legend().remove()
axes[1].legend(handles, names, frameon=False, markerscale=2, loc="upper left",
               bbox_to_anchor=(1.02, 1.0))
fig.tight_layout()

# %% [markdown]
# Restricted to control cells, the two panels are the same distribution: a rotated standard
# normal is a standard normal. The means of the perturbed groups are not: in true
# coordinates each perturbation moves one coordinate, in rotated ones it moves both.

# %%
ctrl = labels == "control"
print("control covariance, true coordinates:\n", np.cov(z[ctrl].T).round(2))
print("control covariance, rotated coordinates:\n", np.cov(z_rot[ctrl].T).round(2))
mean_shift = pd.DataFrame(
    {name: np.r_[zz[labels == p].mean(0) - zz[ctrl].mean(0)]
     for p in ("A", "B") for name, zz in ((f"{p}, true", z), (f"{p}, rotated", z_rot))},
    index=["coordinate 1", "coordinate 2"]).T.round(2)
mean_shift

# %% [markdown]
# ## Sparsity picks out the true axes
#
# Now try every rotation angle $\theta$ between 0 and 90 degrees. For each, we measure
# (i) how well the rotated coordinates match the true ones, with the **mean correlation
# coefficient** (MCC: mean absolute correlation after optimally matching coordinates,
# `sl.metrics.mcc`, used throughout the book), and (ii) how *dense* the perturbation shifts
# look in the rotated coordinates (the $L_1$ norm of the mean shifts divided by their $L_2$
# norm: 1 when each shift moves one coordinate, $\sqrt 2$ when it moves two equally). The
# control cells' likelihood is the same at every angle.

# %% mystnb={"figure": {"caption": "Three scores of the rotated coordinates against the rotation angle (degrees; 0 and 90 are the true axes, up to a permutation). Left: MCC between rotated and true latents (0 to 1; higher = closer to the truth). Middle: density of the perturbation shifts, the L1/L2 norm ratio of the mean shifts averaged over A and B (1 = each shift moves one coordinate, 1.41 = it moves both equally; lower = sparser). Right: mean log-likelihood of the control cells under N(0, I), in nats per cell (higher = better); the axis spans 1 nat, and the line is flat.", "name": "fig-ch1-angle-sweep"}, "image": {"alt": "Three line plots against the rotation angle: MCC and shift density vary with the angle, the control log-likelihood is flat"}}
angles = np.linspace(0, np.pi / 2, n_angles)
rows = []
for theta in angles:
    zr = z @ rotation(theta).T
    delta = np.stack([zr[labels == p].mean(0) - zr[ctrl].mean(0) for p in ("A", "B")])
    density = float(np.mean(np.abs(delta).sum(1) / np.linalg.norm(delta, axis=1)))
    rows.append({"angle (degrees)": np.rad2deg(theta),
                 "MCC with true latents": sl.metrics.mcc(z, zr),
                 "shift density (L1/L2)": density,
                 "control log-lik. per cell":
                     float(np.mean(-0.5 * (zr[ctrl] ** 2).sum(1) - np.log(2 * np.pi)))})
sweep = pd.DataFrame(rows)

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharex=True)
ylabels = ["MCC (0 to 1)", "L1 / L2 of the mean shifts", "nats per cell"]
for ax, col, ylabel in zip(axes, sweep.columns[1:], ylabels):
    sns.lineplot(data=sweep, x="angle (degrees)", y=col, ax=ax)
    ax.set_title(col, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.set_xticks([0, 15, 30, 45, 60, 75, 90])
axes[2].set_ylim(sweep.iloc[:, 3].mean() - 0.5, sweep.iloc[:, 3].mean() + 0.5)
sns.despine()
fig.tight_layout()

# %% [markdown]
# ## What we saw
#
# The numbers below are computed by the cells above.

# %%
dens_col, mcc_col = "shift density (L1/L2)", "MCC with true latents"
best = sweep.loc[sweep[dens_col].idxmin()]
worst = sweep.loc[sweep[dens_col].idxmax()]
ll_range = np.ptp(sweep["control log-lik. per cell"])
print(f"sparsest shifts at {best['angle (degrees)']:.0f} degrees: "
      f"density {best[dens_col]:.2f}, MCC {best[mcc_col]:.3f}")
print(f"densest shifts at {worst['angle (degrees)']:.0f} degrees: "
      f"density {worst[dens_col]:.2f}, MCC {worst[mcc_col]:.3f}")
print(f"control-cell log-likelihood varies by {ll_range:.2e} nats per cell "
      "across all angles")
H.save_results("01_introduction", {
    "sparsest_angle_deg": float(best["angle (degrees)"]),
    "mcc_at_sparsest": float(best[mcc_col]),
    "mcc_at_densest": float(worst[mcc_col]),
    "control_ll_range": float(ll_range),
})
print(f"chapter ran in {H.elapsed()}")

# %% tags=["hide-input"]
# The conclusions, written from the numbers above (they change when the numbers do).
from IPython.display import Markdown, display

a_best, a_worst = best["angle (degrees)"], worst["angle (degrees)"]
mcc_best, mcc_worst = best[mcc_col], worst[mcc_col]
step = 90 / max(n_angles - 1, 1)                 # the grid of angles tried
tol = max(2.0, 1.5 * step)                        # degrees: sampling noise in the shifts
at_axes = min(a_best, 90 - a_best) <= tol
flat = ll_range < 1e-6
saw = []
if flat:
    saw.append("The control cells cannot choose an angle: their mean log-likelihood "
               f"changes by {ll_range:.1e} nats per cell across the {n_angles} angles "
               "tried (zero up to floating-point error), so a model of i.i.d. control data is free to "
               "return any rotation.")
else:
    saw.append(f"The control log-likelihood changes by {ll_range:.2g} nats per cell across "
               "the angles, more than floating-point error: a rotated N(0, I) should score "
               "the same, so check the computation before reading further.")
axes_name = ("the true axes" if a_best <= 45
             else "the true axes with the two coordinates swapped")
if at_axes:
    match = ("match the truth" if mcc_best >= 0.95 else "match the truth only partly")
    saw.append(f"The sparsest description of the perturbations is at {a_best:.0f} degrees, "
               f"i.e. {axes_name} (within {tol:.0f} degrees of an axis), and there the "
               f"rotated coordinates {match}: "
               f"MCC {mcc_best:.3f}.")
else:
    saw.append(f"The sparsest description of the perturbations is at {a_best:.0f} "
               "degrees, NOT at the true axes (0 or 90 degrees): "
               f"MCC {mcc_best:.3f} there.")
mixed = "close to" if abs(mcc_worst - np.cos(np.pi / 4)) < 0.05 else "compare"
saw.append(f"The densest description, at {a_worst:.0f} degrees, mixes the factors: "
           f"MCC {mcc_worst:.3f} ({mixed} cos 45° ≈ 0.71, an even mix of two latents).")
if flat and at_axes and mcc_best >= 0.95:
    saw.append("So in this example the sparsity of the shifts, not the likelihood of the "
               "control cells, picks out the true latent axes.")
else:
    saw.append("So in this run sparsity alone did NOT single out the true axes cleanly; "
               "see the numbers above.")
display(Markdown("\n".join(f"- {x}" for x in saw)))

# %% [markdown]
# Real models must find this rotation *and* the nonlinear decoder $f$ at the same time,
# from noisy counts, which is much harder than this picture. Chapter 3 measures how well
# they manage.
#
# ## Exercises
#
# Difficulty: ★ easy, ★★ medium, ★★★ project. No exercise here trains a model; each runs in
# seconds.
#
# 1. **★** Add a third perturbation that shifts *both* coordinates by $(3, 3)$. Where is the
#    sparsest angle now, and why does one dense perturbation not spoil identifiability when
#    most perturbations are sparse?
#
#    :::{dropdown} Hint
#    Compute the density of each perturbation separately as a function of the angle: which
#    angle does each one prefer, and how does the average over perturbations weigh them?
#    :::
# 2. **★★** Replace the Gaussian control distribution by a uniform distribution on a square. Is
#    the control likelihood still flat in $\theta$? What does this say about the Gaussian
#    assumption in the prior?
#
#    :::{dropdown} Hint
#    Score the rotated control cells under the *unrotated* uniform density: a rotated square
#    is not the same square, so some cells fall outside it.
#    :::
# 3. **★★** Make perturbation B shift the *variance* of $z_2$ (e.g. scale by 3) instead of its mean.
#    Design a "density" measure for variance shifts and check that it also finds the axes.
#
#    :::{dropdown} Hint
#    Replace the mean difference by a per-coordinate difference of (log) variances against
#    the controls, and reuse the $L_1/L_2$ ratio. A rotation mixes variances as it mixes means.
#    :::
# 4. **★** The MCC is invariant to permutations and sign flips of the learned coordinates. Why
#    is that the right notion of "recovering the latents" here, and what other
#    transformations can no model ever undo?
#
#    :::{dropdown} Hint
#    List the maps of $z$ that leave both the control prior $\mathcal N(0, I)$ and the
#    sparsity pattern of every shift unchanged, and that the decoder $f$ can absorb.
#    :::
