"""How well can the latents be recovered at all? MCC of the MAP latents under the TRUE model.

Simulates a screen with ``svae_lite.simulate``, reads its true generative model from
``uns['simulation']`` (the decoder's weights, see ``svae_lite.simulate.decoder_proportions``),
and for every training cell finds the MAP latent under it: the simulator's decoder,
multinomial gene proportions (the Poisson counts given the library size), and the true
prior of the cell's perturbation, N(true shift, I) (the simulator's default
``target_scale=1``). No learned model can beat these latents by much (its posterior mean
sees the same counts), so their MCC against the true latents is a ceiling set by count
noise, against which the benchmark's MCCs can be read.

    python benchmarks/map_ceiling.py                   # the simulator's defaults, seed 0
    python benchmarks/map_ceiling.py --n-latent 8 --n-perturbations 40 --n-heldout 8 \\
        --n-cells 250 --n-genes 80                     # the calibration setting

Takes about 5-10 minutes on one core for the 40,500 training cells of the defaults.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def torch_decoder(sim: dict):
    """The simulation's true decoder as a differentiable torch function: latents (float64
    tensor) -> log gene proportions; the same computation as
    ``svae_lite.simulate.decoder_proportions``, which checks it in :func:`main`."""
    dec = sim["decoder"]
    order = sorted(dec["weights"], key=int)
    W = [torch.tensor(np.asarray(dec["weights"][k]), dtype=torch.float64) for k in order]
    b = [torch.tensor(np.asarray(dec["biases"][k]), dtype=torch.float64) for k in order]
    slope = float(dec["negative_slope"])

    def log_proportions(z):
        h = z
        for i in range(len(W)):
            h = h @ W[i].T + b[i]
            if i < len(W) - 1:
                h = torch.where(h > 0, h, slope * h)
        return torch.log_softmax(h, -1)

    return log_proportions


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-latent", type=int, default=15)
    ap.add_argument("--n-perturbations", type=int, default=100)
    ap.add_argument("--n-heldout", type=int, default=20)
    ap.add_argument("--n-cells", type=int, default=500)
    ap.add_argument("--n-genes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import svae_lite as sl
    from svae_lite.simulate import decoder_proportions

    t0 = time.time()
    adata = sl.simulate(
        n_latent=args.n_latent, n_perturbations=args.n_perturbations, n_heldout=args.n_heldout,
        n_cells_per_perturbation=args.n_cells, n_genes=args.n_genes, seed=args.seed)
    sim = adata.uns["simulation"]
    if sim["likelihood"] != "poisson":
        raise SystemExit("map_ceiling.py assumes the simulator's Poisson counts.")
    train = adata[adata.obs["split"] == "train"].copy()
    X = torch.tensor(np.asarray(train.X), dtype=torch.float64)
    z_true = train.obsm["z_true"].astype(np.float64)
    shifts = adata.uns["true_shifts"]
    prior_mean = np.zeros_like(z_true)
    perturbed = (train.obs["perturbation"] != "control").to_numpy()
    prior_mean[perturbed] = shifts.loc[train.obs["perturbation"].astype(str)[perturbed]].to_numpy()
    mu = torch.tensor(prior_mean)
    gene_log_proportions = torch_decoder(sim)
    check = z_true[:1000]
    if not np.allclose(gene_log_proportions(torch.tensor(check)).exp().numpy(),
                       decoder_proportions(sim, check), rtol=1e-6, atol=1e-12):
        raise SystemExit("the torch decoder disagrees with svae_lite.simulate.decoder_proportions.")

    z = mu.clone().requires_grad_(True)  # start at the prior mean
    opt = torch.optim.LBFGS([z], lr=1, max_iter=500, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # -log p(x | z, library) up to a constant + -log N(z; mu, I); sums over cells
        loss = -(X * gene_log_proportions(z)).sum() + 0.5 * ((z - mu) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    z_map = z.detach().numpy()
    print(f"d={args.n_latent}, {train.n_obs} training cells, {args.n_genes} genes, seed {args.seed}: "
          f"MAP latents under the true model reach MCC {sl.metrics.mcc(z_true, z_map):.3f} "
          f"(Spearman {sl.metrics.mcc(z_true, z_map, 'spearman'):.3f}); {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
