"""``python -m svae_lite``: simulate a screen, fit the five models, print MCC and target F1.

One seed of the identifiability comparison (d=8, 64 training perturbations x 125 cells,
default training: about 3 minutes per model on one CPU core); see
``benchmarks/identifiability.py`` for the table over seeds and settings.
"""
import argparse
import time

import svae_lite as sl


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-latent", type=int, default=8)
    ap.add_argument("--n-perturbations", type=int, default=72)
    ap.add_argument("--n-heldout", type=int, default=8)
    ap.add_argument("--n-cells", type=int, default=125)
    ap.add_argument("--n-genes", type=int, default=80)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    adata = sl.simulate(n_latent=a.n_latent, n_perturbations=a.n_perturbations,
                        n_cells_per_perturbation=a.n_cells, n_genes=a.n_genes,
                        n_heldout=a.n_heldout, seed=a.seed)
    train = adata[adata.obs["split"] == "train"].copy()
    print(f"simulated {adata.n_obs} cells x {adata.n_vars} genes, d={a.n_latent}; "
          f"training on {train.n_obs} cells")
    print(f"{'model':10s} {'MCC':>6s} {'target F1':>10s} {'seconds':>8s}")
    for cls in (sl.VAE, sl.BetaVAE, sl.iVAE, sl.SVAE, sl.SVAEPlus):
        cls.setup_anndata(train)
        model = cls(train, n_latent=a.n_latent, seed=a.seed)
        t0 = time.time()
        model.train(max_epochs=a.max_epochs, seed=a.seed, enable_progress_bar=False)
        rec = sl.metrics.target_recovery(train, model)
        f1 = f"{rec['f1']:.2f}" if cls in (sl.SVAE, sl.SVAEPlus) else "-"
        print(f"{cls.__name__:10s} {rec['mcc']:6.3f} {f1:>10s} {time.time() - t0:8.0f}")


if __name__ == "__main__":
    main()
