"""Identifiability table: MCC and target recovery of the five models on simulated screens.

Regenerates, from scratch, the comparison reported in the README: every model is trained
with its DEFAULT training settings (what ``model.train(max_epochs=...)`` does) on the same
simulations, over several seeds, and scored against the simulator's ground truth.

    python benchmarks/identifiability.py                       # d=8, 32 training perturbations
    python benchmarks/identifiability.py --n-latent 15 --n-perturbations 100 --n-cells 500 \
        --n-genes 100 --max-epochs 200                         # the simulator's defaults
    python benchmarks/identifiability.py --variants             # adds sVAE+ ablations

Each run is a separate process with one torch thread (``--jobs`` in parallel). Prints a table
of mean +- sd over seeds and writes every run to ``benchmarks/results/identifiability.csv``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

MODELS = ["VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus"]
# Ablations of sVAE+: (label, model kwargs, train kwargs)
VARIANTS = {
    "SVAEPlus/no-warmup": ("SVAEPlus", {}, {"dense_fraction": 0.0}),
    "SVAEPlus/exact": ("SVAEPlus", {"estimator": "exact"}, {}),
}


def run_one(args, label, model, model_kw, train_kw, seed) -> dict:
    import logging
    import warnings

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    import svae_lite as sl

    adata = sl.simulate(n_latent=args.n_latent, n_perturbations=args.n_perturbations,
                        n_cells_per_perturbation=args.n_cells, n_genes=args.n_genes,
                        n_heldout=args.n_heldout, seed=seed)
    train = adata[adata.obs["split"] == "train"].copy()
    cls = getattr(sl, model)
    cls.setup_anndata(train)
    m = cls(train, n_latent=args.n_latent, seed=seed, **model_kw)
    t0 = time.time()
    m.train(max_epochs=args.max_epochs, seed=seed, enable_progress_bar=False, **train_kw)
    seconds = time.time() - t0
    rec = sl.metrics.target_recovery(train, m)
    sparse = model in ("SVAE", "SVAEPlus")
    elbo = float(np.asarray(m.history["elbo_train"]).ravel()[-1])
    return {"model": label, "seed": seed, "mcc": rec["mcc"],
            "mcc_spearman": sl.metrics.mcc(train.obsm["z_true"], m.get_latent_representation(), "spearman"),
            "target_f1": rec["f1"] if sparse else float("nan"),
            "target_precision": rec["precision"] if sparse else float("nan"),
            "target_recall": rec["recall"] if sparse else float("nan"),
            "target_auroc": rec["auroc"] if sparse else float("nan"),
            "elbo_train": elbo, "seconds": seconds, "epochs": args.max_epochs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-latent", type=int, default=8)
    ap.add_argument("--n-perturbations", type=int, default=40)
    ap.add_argument("--n-heldout", type=int, default=8)
    ap.add_argument("--n-cells", type=int, default=250)
    ap.add_argument("--n-genes", type=int, default=80)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--variants", action="store_true", help="also run the sVAE+ ablations")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "identifiability.csv"))
    ap.add_argument("--_one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._one:  # worker mode: one run, JSON on stdout
        spec = json.loads(args._one)
        print("RESULT " + json.dumps(run_one(args, **spec)))
        return

    runs = [dict(label=m, model=m, model_kw={}, train_kw={}, seed=s) for m in args.models for s in args.seeds]
    if args.variants:
        runs += [dict(label=k, model=v[0], model_kw=v[1], train_kw=v[2], seed=s)
                 for k, v in VARIANTS.items() for s in args.seeds]
    base = [sys.executable, __file__] + [a for a in (argv if argv is not None else sys.argv[1:])
                                         if a not in ("--variants",)]

    def launch(spec):
        out = subprocess.run(base + ["--_one", json.dumps(spec)], capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise RuntimeError(f"run {spec} failed:\n{out.stderr[-3000:]}")
        res = json.loads(line[0][7:])
        print(f"  {res['model']:20s} seed {res['seed']}: MCC {res['mcc']:.3f}  F1 {res['target_f1']:.3f}  "
              f"({res['seconds']:.0f} s)", flush=True)
        return res

    print(f"d={args.n_latent}, {args.n_perturbations - args.n_heldout} training perturbations x "
          f"{args.n_cells} cells, {args.n_genes} genes, {args.max_epochs} epochs, seeds {args.seeds}")
    t0 = time.time()
    with ThreadPoolExecutor(args.jobs) as ex:
        results = list(ex.map(launch, runs))
    df = pd.DataFrame(results)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    df.to_csv(args.out, index=False)
    cols = ["mcc", "mcc_spearman", "target_f1", "target_precision", "target_recall", "target_auroc", "seconds"]
    table = df.groupby("model", sort=False)[cols].agg(["mean", "std"])
    fmt = pd.DataFrame({c: [f"{m:.3f} +- {s:.3f}" if c != "seconds" else f"{m:.0f}"
                            for m, s in zip(table[(c, "mean")], table[(c, "std")].fillna(0))]
                        for c in cols}, index=table.index)
    print()
    print(fmt.replace("nan +- 0.000", "-").to_string())
    print(f"\nwall time {time.time() - t0:.0f} s; runs written to {args.out}")


if __name__ == "__main__":
    main()
