"""Transfer to held-out perturbations on simulated screens, paired over seeds.

For each seed: simulate a screen (d latents, training and held-out perturbations), fit
iVAE, sVAE and sVAE+ with default training on the training perturbations, then learn the
held-out perturbations with ``model.transfer`` from the first ``n`` cells of each
(n in ``--n-cells``; the same cells for every model) and score on the last
``--n-eval`` cells of each held-out perturbation (the same cells for every n and model):

- held-out IWELBO (nats per cell, 100 importance samples), and ``seen_iwelbo``: the IWELBO
  of the trained model on unseen cells of the training perturbations (the fit before any
  transfer);
- for the sparse models, the held-out perturbations' targets against the truth after the
  learned latents are matched to the true ones on the training cells: precision, recall,
  F1 (probability > 0.5), AUROC, and the density of the learned masks (true density beside).

Variants isolate a claim: ``SVAEPlus/no-dense-transfer`` learns the new masks from the
start (``transfer(dense_fraction=0)``: masks start all on) instead of dense shifts first;
``iVAE/sparse-networks`` and ``SVAEPlus/dense-networks`` swap the network settings of the
two presets (encoder dropout, free bits), to tell the prior's effect from the networks';
``SVAEPlus/no-free-bits`` drops only sVAE+'s free bits (the plain ELBO, still no dropout).
``SVAEPlus/seen-space`` is an oracle: sVAE+ also trained on the held-out perturbations'
first cells (never the scored ones), which are then learned again by transfer under new
labels; it tells what the frozen encoder's unfamiliarity with a perturbation costs its
targets (no IWELBO: its encoder was trained on these cells).

``--lr-anneal`` and ``--transfer-lr-anneal`` pass ``lr_anneal`` to the models' ``train()``
and to ``transfer()`` (unset: their default, 0.25). ``--lr-anneal 0 --transfer-lr-anneal 0``
(constant learning rates) gave ``results/transfer_sim_constant_lr.csv`` and
``results/transfer_sim_networks.csv``; ``--transfer-lr-anneal 0`` alone
``results/transfer_sim_constant_lr_transfer.csv``.

Writes one CSV row per (seed, model, n) and prints paired differences with 95% intervals
over seeds (t distribution). Seeds 100-104 are fresh: the models' defaults were chosen on
seeds 0-2 of benchmarks/identifiability.py.

    python benchmarks/transfer.py --seeds 100 101 102 103 104 --workers 2
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import _common as C

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("iVAE", "SVAE", "SVAEPlus", "SVAEPlus/no-dense-transfer",
          "iVAE/sparse-networks", "SVAEPlus/dense-networks", "SVAEPlus/no-free-bits",
          "SVAEPlus/seen-space")
#: label suffix of the held-out perturbations learned again by ``*/seen-space``
AGAIN = " (again)"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS[:4]), choices=MODELS,
                    help="default: the models and the no-dense-transfer variant of transfer_sim.csv")
    ap.add_argument("--n-latent", type=int, default=8)
    ap.add_argument("--n-train-perturbations", type=int, default=64)
    ap.add_argument("--n-heldout", type=int, default=8)
    ap.add_argument("--n-cells", type=int, nargs="+", default=[5, 25, 100],
                    help="cells per held-out perturbation used to learn it")
    ap.add_argument("--n-eval", type=int, default=100, help="held-out cells per perturbation scored")
    ap.add_argument("--cells-per-perturbation", type=int, default=80, help="training cells per perturbation")
    ap.add_argument("--n-genes", type=int, default=80)
    ap.add_argument("--max-epochs", type=int, default=None, help="default: the models' default")
    C.add_lr_anneal_option(ap)
    C.add_lr_anneal_option(ap, "--transfer-lr-anneal", "transfer()")
    ap.add_argument("--transfer-epochs", type=int, default=None, help="default: transfer()'s default")
    C.add_per_seed_options(ap, [100, 101, 102, 103, 104], ROOT / "benchmarks" / "results" / "transfer_sim.csv")
    return ap.parse_args(argv)


def default_args(lr_anneal: float | None = None):
    """This script's default arguments (its screens, cells and training), for the scripts
    that reuse its fits; ``lr_anneal`` (if given) as ``--lr-anneal``."""
    return parse([] if lr_anneal is None else ["--lr-anneal", str(lr_anneal)])


def split_heldout(adata, n_fit: int, n_eval: int):
    """First ``n_fit`` cells of each held-out perturbation to learn it, last ``n_eval`` to
    score it: the same cells for every model (a paired design)."""
    held = adata[adata.obs["split"] != "train"]
    sizes = held.obs["perturbation"].value_counts()
    small = sizes[(sizes > 0) & (sizes < n_fit + n_eval)]
    if len(small):
        raise ValueError(f"{dict(small)} have fewer cells than n_fit + n_eval = {n_fit + n_eval}.")
    return (C.first_n_per_group(held, "perturbation", n_fit),
            C.first_n_per_group(held, "perturbation", n_eval, last=True))


def heldout_targets(model, new, train, adata):
    """Target scores of the transferred perturbations after matching latents on the
    training cells (the shared encoder maps both models' latents the same way)."""
    import svae_lite as sl

    rows, cols, _ = sl.metrics.match_latents(train.obsm["z_true"], model.get_latent_representation(train))
    truth = adata.uns["true_targets"].astype(bool)
    held = [p for p in new.get_intervention_targets().index if p not in set(model.perturbations_)]
    learned = new.get_intervention_targets().loc[held].to_numpy()[:, cols]
    true = truth.loc[[p.removesuffix(AGAIN) for p in held]].to_numpy()[:, rows]
    out = sl.metrics.target_scores(true, learned)
    out["density"] = float((learned > 0.5).mean())
    out["true_density"] = float(true.mean())
    return out


def again(adata):
    """A copy of held-out cells under new labels (``<perturbation> (again)``), for a model
    that was trained on these perturbations (``*/seen-space``)."""
    out = adata.copy()
    out.obs["perturbation"] = out.obs["perturbation"].astype(str) + AGAIN
    return out


def iwelbo(model, adata, seed: int) -> float:
    """Mean IWELBO of ``adata`` (nats per cell, 100 importance samples), drawn after
    resetting torch's random stream to ``seed``: every model sees the same draws."""
    import torch

    torch.manual_seed(seed)
    return model.get_marginal_ll(adata, n_samples=100, return_mean=True)


def with_heldout(big, train, n: int):
    """The training cells plus the first ``n`` cells of each held-out perturbation (never
    its scored last cells): what the oracle ``*/seen-space`` trains on."""
    import anndata

    held = big[big.obs["split"] != "train"]
    return anndata.concat([train, C.first_n_per_group(held, "perturbation", n)], merge="same", uns_merge="same")


def screen(args, seed: int):
    """The simulated screen of ``seed``: ``(all cells, training cells, seen_eval)``, where
    ``seen_eval`` holds ``args.n_eval`` unseen cells of each training perturbation."""
    import svae_lite as sl

    n_total = max(max(args.n_cells), args.cells_per_perturbation) + args.n_eval
    big = sl.simulate(n_latent=args.n_latent, n_perturbations=args.n_train_perturbations + args.n_heldout,
                      n_heldout=args.n_heldout, n_cells_per_perturbation=n_total,
                      n_genes=args.n_genes, seed=seed)
    seen = big[big.obs["split"] == "train"]
    train = C.first_n_per_group(seen, "perturbation", args.cells_per_perturbation)
    # disjoint from train: n_total is large enough
    seen_eval = C.first_n_per_group(seen, "perturbation", args.n_eval, last=True)
    return big, train, seen_eval


def run_seed(args, seed: int) -> list[dict]:
    """Every model's fit and transfers on the screen simulated with ``seed`` (a worker's task)."""
    import svae_lite as sl

    big, train, seen_eval = screen(args, seed)
    rows = []
    fitted = {}
    for label in args.models:
        name, model_kw = C.network_variant(label)
        oracle = label.endswith("/seen-space")
        key = label if model_kw or oracle else name
        if key not in fitted:  # transfer variants reuse their model's fit
            data = with_heldout(big, train, args.cells_per_perturbation) if oracle else train
            fitted[key] = fit_model(getattr(sl, name), data, args, seed, model_kw)
        model, mcc, fit_s = fitted[key]
        seen_iwelbo = iwelbo(model, seen_eval, seed)
        for n in args.n_cells:
            fit, ev = split_heldout(big, n, args.n_eval)
            if oracle:
                fit, ev = again(fit), again(ev)
            kw = {"dense_fraction": 0.0} if label.endswith("/no-dense-transfer") else {}
            kw.update(C.lr_anneal_kwargs(args.transfer_lr_anneal))
            new = model.transfer(fit, max_epochs=args.transfer_epochs, seed=seed,
                                 enable_progress_bar=False, **kw)
            # the oracle's encoder was trained on these perturbations: its likelihood is not comparable
            ll = float("nan") if oracle else iwelbo(new, ev, seed)
            row = {"seed": seed, "model": label, "n_cells": n, "train_mcc": mcc, "fit_seconds": fit_s,
                   "heldout_iwelbo": ll, "seen_iwelbo": seen_iwelbo}
            if name in ("SVAE", "SVAEPlus"):
                row.update(heldout_targets(model, new, train, big))
            rows.append(row)
            print(f"seed {seed} {label:28s} n={n:4d} IWELBO {row['heldout_iwelbo']:9.3f} "
                  f"F1 {row.get('f1', float('nan')):.3f} density {row.get('density', float('nan')):.2f}",
                  flush=True)
    return rows


def fit_model(cls, train, args, seed, model_kwargs):
    """A model fitted with default training on its own copy of the training cells; returns
    (model, MCC against the true latents, seconds)."""
    import svae_lite as sl

    tr = train.copy()
    cls.setup_anndata(tr)
    model = cls(tr, n_latent=args.n_latent, seed=seed, **model_kwargs)
    t0 = time.time()
    model.train(max_epochs=args.max_epochs, seed=seed, enable_progress_bar=False,
                **C.lr_anneal_kwargs(args.lr_anneal))
    seconds = time.time() - t0
    return model, sl.metrics.mcc(tr.obsm["z_true"], model.get_latent_representation()), seconds


def paired(df: pd.DataFrame, metric: str, a: str, b: str) -> pd.DataFrame:
    """Mean difference a - b of ``metric`` per n over seeds, with a 95% t interval."""
    import svae_lite as sl

    wide = df.pivot_table(index=["n_cells", "seed"], columns="model", values=metric)
    if not {a, b} <= set(wide.columns):  # a model without this metric (rows of an older run)
        return pd.DataFrame()
    out = []
    for n, g in wide.groupby(level=0):
        g = g[[a, b]].dropna()
        r = sl.metrics.paired_difference(g[a], g[b])
        out.append({"n_cells": n, "comparison": f"{a} - {b}", "metric": metric, "seeds": r["n"],
                    "mean_diff": r["mean"], "ci_low": r["low"], "ci_high": r["high"],
                    "verdict": r["verdict"]})
    return pd.DataFrame(out)


def report(df: pd.DataFrame) -> str:
    cols = [c for c in ("heldout_iwelbo", "seen_iwelbo", "f1", "precision", "recall", "auroc", "density", "true_density",
                        "train_mcc") if c in df]
    means = df.groupby(["model", "n_cells"])[cols].agg(["mean", "std"]).round(3)
    parts = ["Means (sd) over seeds " + str(sorted(df.seed.unique())), means.to_string()]
    models = set(df.model)
    comps = [("SVAEPlus", "iVAE", "heldout_iwelbo"), ("SVAEPlus", "SVAE", "heldout_iwelbo"),
             ("SVAE", "iVAE", "heldout_iwelbo"), ("SVAEPlus", "SVAEPlus/no-dense-transfer", "f1"),
             ("SVAEPlus", "SVAEPlus/no-dense-transfer", "heldout_iwelbo"),
             ("SVAEPlus", "iVAE", "seen_iwelbo"),
             ("SVAEPlus", "iVAE/sparse-networks", "heldout_iwelbo"),
             ("SVAEPlus", "iVAE/sparse-networks", "seen_iwelbo"),
             ("SVAEPlus/dense-networks", "iVAE", "heldout_iwelbo"),
             ("SVAEPlus/dense-networks", "iVAE", "seen_iwelbo"),
             ("iVAE/sparse-networks", "iVAE", "heldout_iwelbo"),
             ("iVAE/sparse-networks", "iVAE", "seen_iwelbo"),
             ("SVAEPlus/dense-networks", "SVAEPlus", "f1"),
             ("SVAEPlus/no-free-bits", "iVAE", "heldout_iwelbo"),
             ("SVAEPlus/no-free-bits", "iVAE", "seen_iwelbo"),
             ("SVAEPlus/no-free-bits", "SVAEPlus", "f1"),
             ("SVAEPlus/seen-space", "SVAEPlus", "f1"),
             ("SVAEPlus/seen-space", "SVAEPlus", "precision"),
             ("SVAEPlus/seen-space", "SVAEPlus", "density")]
    tables = [paired(df, m, a, b) for a, b, m in comps if a in models and b in models and m in df]
    if tables:
        parts += ["Paired differences (95% t interval over seeds)",
                  pd.concat(tables).round(3).to_string(index=False)]
    return "\n\n".join(parts)


def main(argv=None):
    C.per_seed_main(__file__, argv, parse, run_seed, report)


if __name__ == "__main__":
    main()
