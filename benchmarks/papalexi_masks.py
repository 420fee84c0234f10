"""Which Papalexi knockouts get targets, and why: a diagnostic of the sparse mask prior.

Fits iVAE and sVAE+ variants (default training) on the Papalexi 2021 THP-1 screen and
reports, for every knockout:

- ``observed_effect``: the norm of its observed log fold change against control (pseudobulk,
  log of mean normalised expression: ``sl.metrics.pseudobulk``), i.e. how much it does;
- ``dense_shift``: its largest learned shift (control SDs) after the dense warm-up, in the
  aligned coordinates (what the masks are initialised from: on where |shift| > 1);
- ``n_targets`` and ``max_shift``: its learned targets (mask probability > 0.5) and the
  largest masked shift at the end of training;
- ``pred_obs_r``: Pearson r of its predicted and observed log fold changes on all genes,
  both on the pseudobulk scale (``sl.metrics.log_expression`` of ``model.predict``).

``--seed`` draws the cells (``sl.datasets.cap_cells``: the same cells as chapter 5 with the
same seed) and seeds the training; results of several seeds are concatenated with their
``seed`` column.

    python benchmarks/papalexi_masks.py --max-cells 150 --max-control 600

The committed results (``results/papalexi_masks.csv``) used constant learning rates
(``--lr-anneal 0``), the default of ``train()`` when they were made.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import _common as C

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "iVAE": ("iVAE", {}),
    "SVAEPlus": ("SVAEPlus", {}),
    "SVAEPlus/penalty-weight-0.1": ("SVAEPlus", {"penalty_weight": 0.1}),
    "SVAEPlus/dataset-penalty": ("SVAEPlus", {"penalty_scale": "dataset"}),
    # the mask prior paid log(n) times per knockout of n cells instead of n times
    "SVAEPlus/log-cells-1": ("SVAEPlus", {"penalty_scale": "log_cells", "penalty_weight": 1.0}),
    "SVAEPlus/log-cells-3": ("SVAEPlus", {"penalty_scale": "log_cells", "penalty_weight": 3.0}),
    # every mask entry paid per cell (the default, "lead_log_cells", pays the lead entry log n times)
    "SVAEPlus/cells-penalty": ("SVAEPlus", {"penalty_scale": "cells"}),
}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--max-cells", type=int, default=150, help="cells per knockout (0: all)")
    ap.add_argument("--max-control", type=int, default=600, help="control cells (0: all)")
    ap.add_argument("--n-latent", type=int, default=10)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    C.add_lr_anneal_option(ap, what="every fit (the committed results: 0, constant rates)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "papalexi_masks.csv")
    return ap.parse_args(argv)


def diagnose(label, data, observed, args) -> pd.DataFrame:
    import svae_lite as sl

    name, kwargs = VARIANTS[label]
    cls = getattr(sl, name)
    cls.setup_anndata(data)
    model = cls(data, n_latent=args.n_latent, seed=args.seed, **kwargs)
    seen = {}
    extra = {}
    if model.module.prior.learns_targets:
        def record(m):
            seen["shifts"] = m.module.prior.perturbation_shifts().cpu().numpy()
        extra["alignment_rotation"] = record
    model.train(max_epochs=args.max_epochs, seed=args.seed, enable_progress_bar=False, **extra,
                **C.lr_anneal_kwargs(args.lr_anneal))
    knockouts = [p for p in model.perturbations_ if p != "control"]
    out = pd.DataFrame(index=knockouts)
    out["observed_effect"] = np.linalg.norm(observed.loc[knockouts].to_numpy(), axis=1)
    if "shifts" in seen:
        aligned = seen["shifts"] @ model.alignment_["rotation"]
        out["dense_shift"] = np.abs(aligned).max(1)
    out["n_targets"] = (model.get_intervention_targets().loc[knockouts] > 0.5).sum(1)
    out["max_shift"] = model.get_shifts().loc[knockouts].abs().max(1)
    pred = sl.metrics.log_expression(model.predict(["control"] + knockouts, n_cells=1000))
    pred_lfc = pred.loc[knockouts] - pred.loc["control"]
    out["pred_obs_r"] = [sl.metrics.effect_scores(pred_lfc.loc[p], observed.loc[p])["pearson_all"]
                         for p in knockouts]
    out["variant"] = label
    out["seed"] = args.seed
    return out.rename_axis("knockout").reset_index()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    import torch

    import svae_lite as sl

    torch.set_num_threads(1)
    sl.quiet(all_warnings=True)
    # the same cells as chapter 5 with the same seed
    data = sl.datasets.cap_cells(sl.datasets.papalexi2021(), args.max_cells, args.max_control, args.seed)
    data.obs["perturbation"] = data.obs["perturbation"].astype(str).astype("category")
    bulk = sl.metrics.pseudobulk(data)
    observed = bulk.drop(index="control") - bulk.loc["control"]
    pathway = set(sl.datasets.PAPALEXI_IFNG_PATHWAY)
    rows = []
    for label in args.variants:
        res = diagnose(label, data, observed, args)
        res["pathway"] = res["knockout"].isin(pathway)
        rows.append(res)
        print(res.sort_values("observed_effect", ascending=False).round(3).to_string(index=False), flush=True)
    df = pd.concat(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    C.write_meta(args.out, argv)
    summary = df.groupby(["variant", "pathway"]).agg(
        knockouts=("knockout", "size"), with_targets=("n_targets", lambda s: int((s > 0).sum())),
        mean_targets=("n_targets", "mean"), median_pred_obs_r=("pred_obs_r", "median"))
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
