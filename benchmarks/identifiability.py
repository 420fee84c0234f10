"""Identifiability table: MCC and target recovery of the five models on simulated screens.

Regenerates, from scratch, the comparison reported in the README: every model is trained
with its DEFAULT training settings (what ``model.train()`` does, epochs included, unless
``--max-epochs`` is given) on the same simulations, over several seeds, and scored against
the simulator's ground truth.

    python benchmarks/identifiability.py                          # --setting many (the headline)
    python benchmarks/identifiability.py --setting calibration    # few perturbations per latent
    python benchmarks/identifiability.py --setting defaults       # the simulator's defaults (slow)
    python benchmarks/identifiability.py --variants               # adds sVAE+ ablations

Settings (any value can be overridden with its flag):

- ``calibration``: d=8, 32 training perturbations x 250 cells, 80 genes (``../shared/DESIGN.md``'s
  calibration; about 8 training perturbations target each latent);
- ``many``: d=8, 64 training perturbations x 125 cells, 80 genes (about 16 per latent, the
  same number of cells);
- ``defaults``: ``svae_lite.simulate``'s defaults, d=15, 80 training perturbations x 500 cells,
  100 genes (about 11 per latent).

Diagnostics (they explain a run but are never used by it): ``collapsed_latents`` counts
learned latents whose posterior mean is constant across cells (sd < 0.1: the latent
collapsed onto the prior and carries nothing), ``min_matched_corr`` is the worst true
latent's matched correlation. For the sparse models (these use the ground truth),
``dense_procrustes_mcc`` is the MCC of the latents at the end of the dense
warm-up after the best orthogonal rotation onto the truth (the ceiling of the alignment
step), ``aligned_mcc`` the MCC right after the alignment step. The variant
``SVAEPlus/oracle-alignment`` replaces the alignment rotation by that best rotation: an
upper bound that shows how much of the gap the alignment step causes.
``SVAEPlus/oracle-masks`` trains the same networks with the TRUE masks, fixed from the
start (no warm-up, no alignment): what the networks can reach when the masks are known.
``SVAEPlus/penalty-weight-1`` is sVAE+ with the mask prior at full tempered weight
(``penalty_weight=1``; the default is 0.3), ``SVAEPlus/penalty-weight-0.1`` at a third of
it, and ``SVAEPlus/log-cells-1`` / ``-3`` pay the prior log(n) instead of n times per
perturbation of n cells (``penalty_scale="log_cells"``, weight 1 or 3): does a price that
lets evidence accumulate over cells keep spurious entries off? ``--shift-mean`` makes the
true shifts weaker (the simulator's default is 5 control SDs). ``*/dropout-no-free-bits``
are the sparse models with encoder dropout 0.1 and the plain ELBO instead of their defaults (dropout 0,
``kl_free_bits=0.25``), ``SVAEPlus/dropout`` and ``SVAEPlus/no-free-bits`` change one of
the two, and ``VAE/no-dropout-free-bits`` and ``iVAE/no-dropout-free-bits`` give the dense
models the sparse models' network settings.

Each run is a separate process with one torch thread (``--jobs`` in parallel). Prints a table
of mean +- sd over seeds and writes every run to ``benchmarks/results/identifiability_<setting>.csv``
(rewritten as each run finishes; the runs go seed by seed) and a ``.meta.json`` beside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MODELS = ["VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus"]
SETTINGS = {
    "calibration": dict(n_latent=8, n_perturbations=40, n_heldout=8, n_cells=250, n_genes=80),
    "many": dict(n_latent=8, n_perturbations=72, n_heldout=8, n_cells=125, n_genes=80),
    "defaults": dict(n_latent=15, n_perturbations=100, n_heldout=20, n_cells=500, n_genes=100),
}
# Ablations of sVAE+: (label, model class, model kwargs, train kwargs)
VARIANTS = {
    "SVAEPlus/no-warmup": ("SVAEPlus", {}, {"dense_fraction": 0.0}),
    "SVAEPlus/exact": ("SVAEPlus", {"estimator": "exact"}, {}),
    "SVAEPlus/oracle-alignment": ("SVAEPlus", {}, {}),
    "SVAEPlus/penalty-weight-1": ("SVAEPlus", {"penalty_weight": 1.0}, {}),
    "SVAEPlus/penalty-weight-0.1": ("SVAEPlus", {"penalty_weight": 0.1}, {}),
    # the mask prior paid log(n) times per perturbation of n cells instead of n times
    "SVAEPlus/log-cells-1": ("SVAEPlus", {"penalty_scale": "log_cells", "penalty_weight": 1.0}, {}),
    "SVAEPlus/log-cells-3": ("SVAEPlus", {"penalty_scale": "log_cells", "penalty_weight": 3.0}, {}),
    # every mask entry paid per cell (the default, "lead_log_cells", pays the lead entry log n times)
    "SVAEPlus/cells-penalty": ("SVAEPlus", {"penalty_scale": "cells"}, {}),
    "SVAEPlus/oracle-masks": ("SVAEPlus", {}, {"dense_fraction": 0.0}),
    # the sparse models with encoder dropout and without free bits (their defaults: 0 and 0.25)
    "SVAEPlus/dropout-no-free-bits": ("SVAEPlus", {"dropout_rate": 0.1, "kl_free_bits": 0.0}, {}),
    "SVAEPlus/dropout": ("SVAEPlus", {"dropout_rate": 0.1}, {}),
    "SVAEPlus/no-free-bits": ("SVAEPlus", {"kl_free_bits": 0.0}, {}),
    "SVAE/dropout-no-free-bits": ("SVAE", {"dropout_rate": 0.1, "kl_free_bits": 0.0}, {}),
    # the dense models with the sparse models' network settings
    "VAE/no-dropout-free-bits": ("VAE", {"dropout_rate": 0.0, "kl_free_bits": 0.25}, {}),
    "iVAE/no-dropout-free-bits": ("iVAE", {"dropout_rate": 0.0, "kl_free_bits": 0.25}, {}),
    # constant learning rates (train(lr_anneal=0); the default anneals the last quarter)
    "SVAEPlus/constant-lr": ("SVAEPlus", {}, {"lr_anneal": 0.0}),
    "iVAE/constant-lr": ("iVAE", {}, {"lr_anneal": 0.0}),
}


def cell_level(train, model, z_fit, ceiling: bool) -> dict:
    """MCC within perturbation groups and on control cells (``sl.metrics.cell_level_mcc``);
    for a dense-shift model also after the sparsest rotation of its shifts (the alignment
    step alone); with ``ceiling``, the count-noise ceiling of the three scores."""
    import numpy as np

    import svae_lite as sl
    from svae_lite.alignment import sparsest_rotation

    z_true, labels = train.obsm["z_true"], train.obs["perturbation"].astype(str).to_numpy()
    out = {f"mcc_{k}": v for k, v in sl.metrics.cell_level_mcc(z_true, z_fit, labels).items()
           if k in ("within_groups", "control")}
    if model.module.prior.has_shifts and not model.module.prior.learns_targets:
        R, _ = sparsest_rotation(model.get_shifts().to_numpy(), seed=0)
        rot = sl.metrics.cell_level_mcc(z_true, z_fit @ R, labels)
        out.update({f"rotated_mcc_{k}": v for k, v in rot.items()})
    if ceiling:
        out.update({f"ceiling_{k}": v for k, v in sl.ceiling.mcc_ceiling(train).items()
                    if k in ("pooled", "within_groups", "control")})
    return {k: float(np.asarray(v)) for k, v in out.items()}


def run_one(args, label, model, model_kw, train_kw, seed) -> dict:
    """One fit (a worker's task): simulate, train ``model`` as ``label``, score against the truth."""
    import numpy as np
    import torch
    from scipy.linalg import orthogonal_procrustes

    import svae_lite as sl

    adata = sl.simulate(n_latent=args.n_latent, n_perturbations=args.n_perturbations,
                        n_cells_per_perturbation=args.n_cells, n_genes=args.n_genes,
                        n_heldout=args.n_heldout, shift_mean=args.shift_mean, seed=seed)
    train = adata[adata.obs["split"] == "train"].copy()
    z_true = train.obsm["z_true"]
    cls = getattr(sl, model)
    cls.setup_anndata(train)
    m = cls(train, n_latent=args.n_latent, seed=seed, **model_kw)
    sparse = model in ("SVAE", "SVAEPlus")
    diag = {}
    if label.endswith("oracle-masks"):  # diagnostic only: the true masks, fixed, from the start
        prior = m.module.prior
        truth = train.uns["true_targets"]
        with torch.no_grad():
            for i, name in enumerate(m.perturbations_):
                if name in truth.index:
                    prior.mask_logit[i] = torch.as_tensor(np.where(truth.loc[name].to_numpy(), 20.0, -20.0))
        prior.mask_logit.requires_grad_(False)
    elif sparse:
        oracle = label.endswith("oracle-alignment")  # diagnostic only: uses the truth

        def at_alignment(fit):
            """Called before the alignment step rotates the latents: records them and the
            best (Procrustes) rotation onto the truth; the oracle variant applies the latter."""
            z = fit.get_latent_representation()
            R_best, _ = orthogonal_procrustes(z - z.mean(0), z_true - z_true.mean(0))
            diag["z_dense"] = z
            diag["dense_procrustes_mcc"] = sl.metrics.mcc(z_true, z @ R_best)
            return R_best if oracle else None

        train_kw = dict(train_kw, alignment_rotation=at_alignment)
    t0 = time.time()
    if args.batch_size:
        train_kw = dict(train_kw, batch_size=args.batch_size)
    m.train(max_epochs=args.max_epochs, seed=seed, enable_progress_bar=False, **train_kw)
    seconds = time.time() - t0
    if "z_dense" in diag:  # latents after the step = latents before it @ the rotation applied
        diag["aligned_mcc"] = sl.metrics.mcc(z_true, diag.pop("z_dense") @ m.alignment_["rotation"])
    rec = sl.metrics.target_recovery(train, m)
    elbo = float(np.asarray(m.history["elbo_train"]).ravel()[-1])
    z_fit = m.get_latent_representation()
    rows, cols, corr = sl.metrics.match_latents(z_true, z_fit)
    nan = float("nan")
    cells = cell_level(train, m, z_fit, label == "SVAEPlus" and args.ceiling)
    return {"model": label, "seed": seed, "mcc": rec["mcc"], **cells,
            "mcc_spearman": sl.metrics.mcc(z_true, z_fit, "spearman"),
            "target_f1": rec["f1"] if sparse else nan,
            "target_precision": rec["precision"] if sparse else nan,
            "target_recall": rec["recall"] if sparse else nan,
            "target_auroc": rec["auroc"] if sparse else nan,
            "dense_procrustes_mcc": diag.get("dense_procrustes_mcc", nan),
            "aligned_mcc": diag.get("aligned_mcc", nan),
            "collapsed_latents": int((z_fit.std(0) < 0.1).sum()),
            "min_matched_corr": float(corr[rows, cols].min()),
            "neg_elbo_train": elbo, "seconds": seconds,
            "epochs": int(m.history["elbo_train"].shape[0])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="many")
    for key in ("n_latent", "n_perturbations", "n_heldout", "n_cells", "n_genes"):
        ap.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="default: each model's own default (what model.train() does)")
    ap.add_argument("--shift-mean", type=float, default=5.0,
                    help="mean size of a target's shift, control SDs (sl.simulate's shift_mean)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: model.train()'s")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--variants", nargs="*", default=None, metavar="NAME",
                    help=f"also run sVAE+ ablations (all, or the names given: {', '.join(VARIANTS)})")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--ceiling", action="store_true",
                    help="also the count-noise ceiling (MAP under the true model) in each "
                         "SVAEPlus row: minutes more per seed at the defaults' size")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for key, value in SETTINGS[args.setting].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = os.path.join(os.path.dirname(__file__), "results", f"identifiability_{args.setting}.csv")

    if args.worker:  # one run in this process
        return C.serve(lambda spec: run_one(args, **spec), args.worker)

    # seed by seed, so that an interrupted invocation has paired runs (the CSV is rewritten
    # as each run finishes)
    runs = [dict(label=m, model=m, model_kw={}, train_kw={}, seed=s, threads=1)
            for s in args.seeds for m in args.models]
    if args.variants is not None:
        unknown = sorted(set(args.variants) - set(VARIANTS))
        if unknown:
            ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        chosen = args.variants or list(VARIANTS)
        runs += [dict(label=k, model=VARIANTS[k][0], model_kw=VARIANTS[k][1], train_kw=VARIANTS[k][2], seed=s,
                      threads=1) for s in args.seeds for k in chosen]
        runs.sort(key=lambda r: r["seed"])
    # workers get the same settings (the run itself travels in --worker)
    settings = ["--setting", args.setting] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}" for k in SETTINGS[args.setting]]
    settings.append(f"--shift-mean={args.shift_mean}")
    if args.max_epochs is not None:
        settings.append(f"--max-epochs={args.max_epochs}")
    if args.batch_size is not None:
        settings.append(f"--batch-size={args.batch_size}")
    if args.ceiling:
        settings.append("--ceiling")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    finished, lock = [], threading.Lock()

    def report(res):
        with lock:  # an interrupted invocation keeps its finished runs
            finished.append(res)
            pd.DataFrame(finished).to_csv(args.out, index=False)
            C.write_meta(args.out, argv)
        print(f"  {res['model']:26s} seed {res['seed']}: MCC {res['mcc']:.3f}  F1 {res['target_f1']:.3f}  "
              f"dense->procrustes {res['dense_procrustes_mcc']:.3f}  aligned {res['aligned_mcc']:.3f}  "
              f"collapsed {res['collapsed_latents']}  "
              f"({res['epochs']} epochs, {res['seconds']:.0f} s)", flush=True)

    n_train = args.n_perturbations - args.n_heldout
    print(f"setting {args.setting}: d={args.n_latent}, {n_train} training perturbations x "
          f"{args.n_cells} cells (+ control), {args.n_genes} genes, "
          f"{args.max_epochs or 'default'} epochs, seeds {args.seeds}", flush=True)
    t0 = time.time()
    results = C.run_workers(__file__, runs, args.jobs, settings, report)
    df = pd.DataFrame(results)
    df.to_csv(args.out, index=False)
    C.write_meta(args.out, argv)
    cols = ["mcc", "target_f1", "target_precision", "target_recall", "target_auroc",
            "dense_procrustes_mcc", "aligned_mcc", "mcc_spearman", "collapsed_latents", "seconds"]
    table = df.groupby("model", sort=False)[cols].agg(["mean", "std"])
    fmt = pd.DataFrame({c: [f"{m:.3f} +- {s:.3f}" if c != "seconds" else f"{m:.0f}"
                            for m, s in zip(table[(c, "mean")], table[(c, "std")].fillna(0))]
                        for c in cols}, index=table.index)
    print()
    print(fmt.replace("nan +- 0.000", "-").replace("nan +- nan", "-").to_string())
    print(f"\nseconds: training time of one run on one torch thread; wall time {time.time() - t0:.0f} s "
          f"with {args.jobs} jobs; runs written to {args.out}")


if __name__ == "__main__":
    main()
