"""Sparse-mechanism-shift simulator.

Each perturbation is a *stochastic intervention* on a small set of latent coordinates:
control cells draw ``z ~ N(0, I_d)``; a cell of perturbation ``k`` draws its targeted
coordinates ``j in T_k`` from ``N(delta_kj, target_scale**2)`` and every other coordinate
from the control mechanism ``N(0, 1)``.  A fixed random nonlinear decoder maps ``z`` to
per-cell gene proportions (a softmax over genes) that, times a per-cell library size, give
the Poisson (or negative binomial) rate of the counts.

Everything the simulation knows travels in the returned AnnData, so that any model fit to it
can be scored against the ground truth (:mod:`svae_lite.metrics`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import anndata as ad

from ._validation import check_positive_int, check_positive_float

CONTROL = "control"

__all__ = ["simulate", "decoder_proportions", "stored_decoder", "true_prior", "CONTROL"]

#: Slope of the decoder's LeakyReLU for negative inputs.
NEGATIVE_SLOPE = 0.2


def _orthogonal(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    """A (n_out, n_in) matrix with orthonormal rows or columns (like torch's orthogonal_)."""
    a = rng.standard_normal((max(n_out, n_in), min(n_out, n_in)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q if n_out >= n_in else q.T


def _leaky_relu(x: np.ndarray, slope: float = NEGATIVE_SLOPE) -> np.ndarray:
    return np.where(x > 0, x, slope * x)


def _decode(z: np.ndarray, weights: list, biases: list, slope: float) -> np.ndarray:
    """Gene proportions (softmax over genes) of latents ``z`` under an MLP decoder whose
    layer ``i`` computes ``h @ weights[i].T + biases[i]``, LeakyReLU between layers."""
    h = z
    for i, (W, b) in enumerate(zip(weights, biases)):
        h = h @ W.T + b
        if i < len(weights) - 1:
            h = _leaky_relu(h, slope)
    h = h - h.max(axis=1, keepdims=True)
    rho = np.exp(h)
    rho /= rho.sum(axis=1, keepdims=True)
    return rho


def stored_decoder(adata_or_uns) -> tuple[list, list, float]:
    """The TRUE decoder of a simulation as read from ``uns['simulation']['decoder']``.

    Parameters
    ----------
    adata_or_uns
        The AnnData returned by :func:`simulate`, its ``uns``, or ``uns['simulation']``
        (also after a round trip through ``.h5ad``).

    Returns
    -------
    ``(weights, biases, negative_slope)``: lists of float64 arrays in layer order (layer ``i``
    computes ``h @ weights[i].T + biases[i]``, a LeakyReLU with ``negative_slope`` between
    layers, a softmax over genes after the last).
    """
    uns = getattr(adata_or_uns, "uns", adata_or_uns)
    sim = uns.get("simulation", uns) if hasattr(uns, "get") else None
    if sim is None or "decoder" not in sim:
        raise KeyError("No simulated decoder found: pass the AnnData returned by svae_lite.simulate, "
                       "its .uns or its .uns['simulation'] (simulations made before svae_lite "
                       "stored the decoder must be simulated again).")
    dec = sim["decoder"]
    order = sorted(dec["weights"], key=int)  # keys "0", "1", ...; h5ad may reorder them
    weights = [np.asarray(dec["weights"][k], dtype=np.float64) for k in order]
    biases = [np.asarray(dec["biases"][k], dtype=np.float64) for k in order]
    return weights, biases, float(dec["negative_slope"])


def decoder_proportions(adata_or_uns, z) -> np.ndarray:
    """Gene proportions of latents ``z`` under the TRUE decoder of a simulation.

    Recomputes, for any latents (the true ones, a model's, a MAP estimate), the softmax gene
    proportions the simulator used: the expected counts of a cell are these times its
    library size (``obs['library_size']``). Applied to ``obsm['z_true']`` it reproduces the
    simulation's proportions up to float32 rounding of the stored latents.

    Parameters
    ----------
    adata_or_uns
        The AnnData returned by :func:`simulate`, its ``uns``, or ``uns['simulation']``
        (also after a round trip through ``.h5ad``).
    z
        (cells, n_latent) latents.

    Returns
    -------
    (cells, genes) float64 array; every row sums to 1.
    """
    weights, biases, slope = stored_decoder(adata_or_uns)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != weights[0].shape[1]:
        raise ValueError(f"z must have shape (cells, {weights[0].shape[1]}) (the simulation's "
                         f"n_latent); got {z.shape}.")
    return _decode(z, weights, biases, slope)


def true_prior(adata, key: str = "perturbation") -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every cell's TRUE latent distribution in a simulation.

    A control cell's latents were drawn from ``N(0, 1)`` each; a cell of perturbation ``k``
    drew its targeted latents ``j`` from ``N(delta_kj, target_scale**2)`` and the others from
    ``N(0, 1)``. The targets and shifts are read from ``uns['true_targets']`` and
    ``uns['true_shifts']``, ``target_scale`` from ``uns['simulation']``.

    Parameters
    ----------
    adata
        The AnnData returned by :func:`simulate`, or a subset of its cells.
    key
        Column of ``adata.obs`` with the perturbation labels (``control`` for control cells).

    Returns
    -------
    ``(mean, sd)``: two (cells, n_latent) float64 arrays, in units of the control standard
    deviation.
    """
    missing = [k for k in ("true_targets", "true_shifts", "simulation") if k not in adata.uns]
    if missing:
        raise KeyError(f"adata.uns lacks {missing}: pass an AnnData returned by svae_lite.simulate.")
    if key not in adata.obs:
        raise KeyError(f"adata.obs has no column {key!r} (columns: {list(adata.obs.columns)}).")
    shifts = pd.DataFrame(adata.uns["true_shifts"])
    targets = pd.DataFrame(adata.uns["true_targets"]).astype(bool)
    labels = adata.obs[key].astype(str).to_numpy()
    perturbed = labels != CONTROL
    unknown = sorted(set(labels[perturbed]) - set(shifts.index))
    if unknown:
        raise KeyError(f"labels {unknown[:5]} of obs[{key!r}] are neither {CONTROL!r} nor a row of "
                       "uns['true_shifts']: the true prior is known only for simulated perturbations.")
    mean = np.zeros((labels.size, shifts.shape[1]))
    sd = np.ones_like(mean)
    mean[perturbed] = shifts.loc[labels[perturbed]].to_numpy(dtype=np.float64)
    scale = float(adata.uns["simulation"]["target_scale"])
    sd[perturbed] = np.where(targets.loc[labels[perturbed]].to_numpy(), scale, 1.0)
    return mean, sd


def simulate(
    n_latent: int = 15,
    n_perturbations: int = 100,
    n_cells_per_perturbation: int = 500,
    n_genes: int = 100,
    n_heldout: int = 20,
    n_targets: tuple[int, int] = (1, 3),
    shift_mean: float = 5.0,
    shift_sd: float = 0.5,
    target_scale: float = 1.0,
    n_control_cells: int | None = None,
    n_hidden: int = 40,
    n_layers: int = 3,
    library_size: float = 2000.0,
    library_sd: float = 0.2,
    likelihood: str = "poisson",
    nb_dispersion: float = 10.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate a perturbation screen in which every perturbation shifts a few latents.

    Parameters
    ----------
    n_latent
        Latent dimension ``d``.
    n_perturbations
        Number of perturbations ``K`` (not counting the ``control`` group).
    n_cells_per_perturbation
        Cells drawn for every perturbation (and for control unless ``n_control_cells``).
    n_genes
        Number of genes ``G``.
    n_heldout
        The last ``n_heldout`` perturbations get ``obs['split'] == 'heldout'``: models are
        trained on the ``train`` cells and the held-out ones test out-of-distribution fit.
    n_targets
        Inclusive range ``(low, high)`` of the number of latents each perturbation targets;
        targets are drawn uniformly *without replacement* among the ``d`` latents.
    shift_mean, shift_sd
        A target's mean shift is ``sign * N(shift_mean, shift_sd**2)`` with a random sign,
        in units of the control standard deviation.
    target_scale
        Standard deviation of a targeted latent under the intervention (1 = mean shift only;
        other values make the intervention change the latent's variance too).
    n_control_cells
        Number of control cells (default ``n_cells_per_perturbation``).
    n_hidden, n_layers
        Width and depth of the random decoder MLP (orthogonal weights, LeakyReLU 0.2).
    library_size, library_sd
        Per-cell library size ``exp(N(log(library_size), library_sd**2))`` (UMIs per cell).
    likelihood
        ``"poisson"`` or ``"nb"`` (negative binomial with inverse dispersion ``nb_dispersion``).
    seed
        Seed of a :class:`numpy.random.Generator`; the same seed gives the same data bit for bit.

    Returns
    -------
    AnnData with ``X`` the counts (float32, integer-valued), cells x genes, and

    - ``obs['perturbation']``: categorical, ``control`` first, then ``P000`` ...;
    - ``obs['split']``: ``train`` or ``heldout``;
    - ``obsm['z_true']``: (cells, d) true latents;
    - ``uns['true_targets']``: DataFrame (perturbations x latents, bool);
    - ``uns['true_shifts']``: DataFrame (perturbations x latents, float; 0 off target);
    - ``uns['simulation']``: every parameter and the seed, and under ``'decoder'`` the
      generative model: ``'weights'`` and ``'biases'`` (dicts ``"0"``, ``"1"``, ... of
      float64 arrays; layer ``i`` computes ``h @ W.T + b``), ``'negative_slope'`` of the
      LeakyReLU between layers. With the library-size parameters and the likelihood stored
      beside it, :func:`decoder_proportions` recomputes the gene proportions of any latents.
    """
    args = _checked_arguments(locals())
    rng = np.random.default_rng(seed)
    targets, shifts = _draw_targets(rng, args)
    labels, z = _draw_latents(rng, args, targets, shifts)
    weights = [_orthogonal(rng, args["dims"][i + 1], args["dims"][i]) for i in range(len(args["dims"]) - 1)]
    # The biases are zero; they are stored with the weights so that the stored decoder is a
    # complete description of the generative model.
    biases = [np.zeros(n_out) for n_out in args["dims"][1:]]
    counts, lib = _draw_counts(rng, args, _decode(z, weights, biases, NEGATIVE_SLOPE))
    adata = _as_anndata(args, labels, counts, lib, z, targets, shifts)
    adata.uns["simulation"]["decoder"] = {  # enough to recompute gene proportions
        "weights": {str(i): W for i, W in enumerate(weights)},  # (out, in)
        "biases": {str(i): b for i, b in enumerate(biases)},
        "negative_slope": NEGATIVE_SLOPE,
    }
    return adata


def _checked_arguments(given: dict) -> dict:
    """``simulate``'s arguments, checked, as the dict stored in ``uns['simulation']`` plus
    the layer sizes of the decoder (``dims``)."""
    n_latent = check_positive_int(given["n_latent"], "n_latent")
    n_perturbations = check_positive_int(given["n_perturbations"], "n_perturbations")
    n_cells = check_positive_int(given["n_cells_per_perturbation"], "n_cells_per_perturbation")
    n_ctrl = given["n_control_cells"]
    n_ctrl = n_cells if n_ctrl is None else check_positive_int(n_ctrl, "n_control_cells")
    n_heldout = given["n_heldout"]
    if not isinstance(n_heldout, (int, np.integer)) or not 0 <= n_heldout < n_perturbations:
        raise ValueError(
            f"n_heldout={n_heldout!r} must be an integer in [0, n_perturbations) "
            f"= [0, {n_perturbations}) so that some perturbations remain for training."
        )
    n_targets = given["n_targets"]
    lo, hi = (int(n_targets[0]), int(n_targets[1])) if np.ndim(n_targets) else (int(n_targets),) * 2
    if not 1 <= lo <= hi <= n_latent:
        raise ValueError(
            f"n_targets={n_targets!r} must satisfy 1 <= low <= high <= n_latent={n_latent}."
        )
    if given["likelihood"] not in ("poisson", "nb"):
        raise ValueError(f"likelihood={given['likelihood']!r}: choose 'poisson' or 'nb'.")
    args = {"n_latent": n_latent, "n_perturbations": n_perturbations, "n_cells_per_perturbation": n_cells,
            "n_control_cells": n_ctrl,
            "n_genes": check_positive_int(given["n_genes"], "n_genes", minimum=2),
            "n_heldout": int(n_heldout), "n_targets": [lo, hi]}
    for name in ("shift_mean", "shift_sd", "target_scale", "library_size", "library_sd"):
        args[name] = check_positive_float(given[name], name,
                                          allow_zero=name in ("shift_mean", "shift_sd", "library_sd"))
    args["n_hidden"] = check_positive_int(given["n_hidden"], "n_hidden")
    args["n_layers"] = check_positive_int(given["n_layers"], "n_layers", minimum=0)
    args["likelihood"] = given["likelihood"]
    args["nb_dispersion"] = check_positive_float(given["nb_dispersion"], "nb_dispersion")
    args["seed"] = int(given["seed"])
    args["dims"] = [n_latent] + [args["n_hidden"]] * args["n_layers"] + [args["n_genes"]]
    return args


def _draw_targets(rng, args) -> tuple[np.ndarray, np.ndarray]:
    """Each perturbation's targets (K, d) bool, between ``n_targets`` low and high latents
    drawn without replacement, and its mean shifts (K, d): +-N(shift_mean, shift_sd^2)."""
    K, d = args["n_perturbations"], args["n_latent"]
    lo, hi = args["n_targets"]
    targets = np.zeros((K, d), dtype=bool)
    shifts = np.zeros((K, d))
    for k in range(K):
        n_t = rng.integers(lo, hi + 1)
        idx = rng.choice(d, size=n_t, replace=False)
        targets[k, idx] = True
        shifts[k, idx] = rng.choice([-1.0, 1.0], size=n_t) * rng.normal(args["shift_mean"], args["shift_sd"], size=n_t)
    return targets, shifts


def _draw_latents(rng, args, targets, shifts) -> tuple[np.ndarray, np.ndarray]:
    """Cells' labels (cells,) and latents (cells, d): the control mechanism N(0, 1)
    everywhere, N(shift, target_scale^2) on each perturbation's targets."""
    K, n_cells = args["n_perturbations"], args["n_cells_per_perturbation"]
    sizes = [args["n_control_cells"]] + [n_cells] * K
    labels = np.repeat([CONTROL] + _names(K), sizes)
    group = np.repeat(np.arange(-1, K), sizes)
    z = rng.standard_normal((labels.size, args["n_latent"]))
    pert = group >= 0
    g = group[pert]
    z_p = z[pert]
    z_p[targets[g]] = shifts[g][targets[g]] + args["target_scale"] * z_p[targets[g]]
    z[pert] = z_p
    return labels, z


def _draw_counts(rng, args, rho) -> tuple[np.ndarray, np.ndarray]:
    """Counts (cells, genes) from gene proportions ``rho`` times a log-normal library size
    (cells,): Poisson, or negative binomial as a gamma-Poisson mixture."""
    n = rho.shape[0]
    lib = np.exp(rng.normal(np.log(args["library_size"]), args["library_sd"], size=n))
    mu = rho * lib[:, None]
    if args["likelihood"] == "poisson":
        return rng.poisson(mu), lib
    theta = args["nb_dispersion"]
    return rng.poisson(rng.gamma(theta, mu / theta)), lib


def _names(K: int) -> list[str]:
    return [f"P{k:03d}" for k in range(K)]


def _as_anndata(args, labels, counts, lib, z, targets, shifts) -> ad.AnnData:
    """The simulated screen with its ground truth (obsm['z_true'], uns['true_targets'],
    uns['true_shifts'], uns['simulation'])."""
    names = _names(args["n_perturbations"])
    n_heldout = args["n_heldout"]
    heldout = set(names[len(names) - n_heldout:]) if n_heldout else set()
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical(labels, categories=[CONTROL] + names),
            "split": pd.Categorical(
                np.where(np.isin(labels, list(heldout)), "heldout", "train"),
                categories=["train", "heldout"],
            ),
            "library_size": lib.astype(np.float32),
        },
        index=[f"cell{i}" for i in range(labels.size)],
    )
    adata = ad.AnnData(
        X=counts.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=[f"gene{i}" for i in range(args["n_genes"])]),
    )
    latent_names = [f"z{j}" for j in range(args["n_latent"])]
    adata.obsm["z_true"] = z.astype(np.float32)
    adata.uns["true_targets"] = pd.DataFrame(targets, index=names, columns=latent_names)
    adata.uns["true_shifts"] = pd.DataFrame(shifts, index=names, columns=latent_names)
    adata.uns["simulation"] = {k: v for k, v in args.items() if k != "dims"}
    return adata
