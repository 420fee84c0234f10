"""How well can the latents be recovered at all? MCC of the MAP latents under the TRUE model.

Simulates a screen with ``svae_lite.simulate`` and, for every training cell, finds the MAP
latents under the simulator's own generative model (``svae_lite.ceiling.map_latents``: the
stored decoder, the simulated likelihood, the true prior of the cell's perturbation). No
learned model can beat these latents by much (its encoder sees the same counts), so their
MCC against the true latents is the ceiling that count noise sets, against which the
benchmark's MCCs are read: pooled over all cells, within perturbation groups and on control
cells (``svae_lite.metrics.cell_level_mcc``). The group-mean oracle (every cell given its
group's mean true latent, ``svae_lite.metrics.group_mean_oracle``) shows how much of each
score the labels alone explain.

    python benchmarks/map_ceiling.py                   # the simulator's defaults, seed 0
    python benchmarks/map_ceiling.py --n-latent 8 --n-perturbations 40 --n-heldout 8 \\
        --n-cells 250 --n-genes 80                     # the calibration setting
"""
from __future__ import annotations

import argparse
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-latent", type=int, default=15)
    ap.add_argument("--n-perturbations", type=int, default=100)
    ap.add_argument("--n-heldout", type=int, default=20)
    ap.add_argument("--n-cells", type=int, default=500)
    ap.add_argument("--n-genes", type=int, default=100)
    ap.add_argument("--likelihood", choices=["poisson", "nb"], default="poisson")
    ap.add_argument("--n-starts", type=int, default=1, help="starting points per cell (map_latents)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    import svae_lite as sl

    torch.set_num_threads(1)
    adata = sl.simulate(
        n_latent=args.n_latent, n_perturbations=args.n_perturbations, n_heldout=args.n_heldout,
        n_cells_per_perturbation=args.n_cells, n_genes=args.n_genes, likelihood=args.likelihood,
        seed=args.seed)
    train = adata[adata.obs["split"] == "train"].copy()
    t0 = time.time()
    z_map = sl.ceiling.map_latents(train, n_starts=args.n_starts, seed=args.seed, progress=True)
    seconds = time.time() - t0
    z_true, labels = train.obsm["z_true"], train.obs["perturbation"].to_numpy()
    oracle = sl.metrics.group_mean_oracle(z_true, labels)
    print(f"d={args.n_latent}, {train.n_obs} training cells, {args.n_genes} genes, "
          f"{args.likelihood} counts, seed {args.seed}; MAP latents in {seconds:.0f} s on one core")
    print(f"{'':28s}{'pooled':>10s}{'within':>10s}{'control':>10s}")
    for name, z, method in [("MAP ceiling (Pearson)", z_map, "pearson"),
                            ("MAP ceiling (Spearman)", z_map, "spearman"),
                            ("group-mean oracle (Pearson)", oracle, "pearson")]:
        s = sl.metrics.cell_level_mcc(z_true, z, labels, method=method)
        print(f"{name:28s}{s['pooled']:10.3f}{s['within_groups']:10.3f}{s['control']:10.3f}")


if __name__ == "__main__":
    main()
