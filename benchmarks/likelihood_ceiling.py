"""The ceiling of the held-out likelihoods of ``transfer.py``: the TRUE model's.

On the simulated screens of ``transfer.py`` (same seeds and cells), the log-likelihood of
every scored cell under the simulator's own decoder, prior and count noise
(:func:`svae_lite.ceiling.true_log_likelihood`, 1000 importance samples; written as the
models write theirs, with the cell's total counts as its library) is averaged over

- ``seen``: the unseen cells of the training perturbations (``seen_iwelbo`` of
  ``transfer.py``);
- ``heldout``: the scored cells of the held-out perturbations (``heldout_iwelbo``).

No model should beat it on average (see its docstring); ``--load`` prints each model's
distance below it, paired over seeds: default training from ``results/transfer_sim.csv``,
constant learning rates from ``results/transfer_sim_constant_lr.csv`` and
``results/transfer_sim_networks.csv``.

    python benchmarks/likelihood_ceiling.py --seeds 100 101 102 103 104 --workers 2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import _common as C
import transfer as T

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-samples", type=int, default=1000, help="importance samples per cell")
    C.add_per_seed_options(ap, [100, 101, 102, 103, 104], RESULTS / "likelihood_ceiling.csv")
    args = ap.parse_args(argv)
    args.screen = T.default_args()  # transfer.py's screens and cells
    return args


def run_seed(args, seed: int) -> list[dict]:
    import svae_lite as sl

    big, _, seen_eval = T.screen(args.screen, seed)
    _, heldout_eval = T.split_heldout(big, max(args.screen.n_cells), args.screen.n_eval)
    row = {"seed": seed}
    for where, cells in (("seen", seen_eval), ("heldout", heldout_eval)):
        ll = sl.ceiling.true_log_likelihood(cells, n_samples=args.n_samples, seed=seed)
        row[f"{where}_ceiling"] = float(ll.mean())
        print(f"seed {seed} {where:8s} true log-likelihood {row[f'{where}_ceiling']:.3f} "
              f"({cells.n_obs} cells)", flush=True)
    return [row]


def constant_rate_runs() -> pd.DataFrame:
    """``transfer.py``'s fits with constant learning rates (``--lr-anneal 0``), each model
    named "<model> (constant rates)": the networks file first, as its iVAE rows also have
    the seen IWELBO (the same fits otherwise)."""
    runs = pd.concat([pd.read_csv(RESULTS / "transfer_sim_networks.csv"),
                      pd.read_csv(RESULTS / "transfer_sim_constant_lr.csv")])
    runs = runs.drop_duplicates(["seed", "model", "n_cells"])
    return runs.assign(model=runs.model + " (constant rates)")


def below_ceiling(ceiling: pd.DataFrame) -> pd.DataFrame:
    """Each model's IWELBO minus the ceiling (nats per cell), paired over seeds, for the
    seen perturbations and the held-out ones at every n of ``transfer.py``'s results:
    default training (``results/transfer_sim.csv``) and constant learning rates."""
    import svae_lite as sl

    runs = pd.concat([pd.read_csv(RESULTS / "transfer_sim.csv"), constant_rate_runs()])
    runs = runs.merge(ceiling, on="seed")
    rows = []
    for (model, n), g in runs.groupby(["model", "n_cells"]):
        for what, col, top in (("seen", "seen_iwelbo", "seen_ceiling"),
                               (f"held out, {n} cells", "heldout_iwelbo", "heldout_ceiling")):
            if what == "seen" and n != runs.n_cells.min():
                continue  # the seen IWELBO does not depend on n
            g2 = g[[col, top]].dropna()
            if len(g2) < 2:
                continue
            r = sl.metrics.paired_difference(g2[col], g2[top])
            rows.append({"model": model, "cells": what, "seeds": r["n"], "below ceiling": r["mean"],
                         "low": r["low"], "high": r["high"]})
    return pd.DataFrame(rows)


def report(df: pd.DataFrame) -> str:
    return ("True model's log-likelihood (nats per cell)\n" + df.round(3).to_string(index=False)
            + "\n\nIWELBO - ceiling, paired over seeds (95% t interval)\n"
            + below_ceiling(df).round(3).to_string(index=False))


def main(argv=None):
    C.per_seed_main(__file__, argv, parse, run_seed, report)


if __name__ == "__main__":
    main()
