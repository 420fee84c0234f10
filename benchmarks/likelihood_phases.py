"""When in training does sVAE+ lose likelihood to the iVAE: in its dense warm-up, at the
alignment step, or in the sparse phase?

On the simulated screens of ``transfer.py`` (same seeds, cells and default training),
sVAE+ and the iVAE with sVAE+'s network settings (``iVAE/sparse-networks``: no dropout,
free bits) are trained as there, and the IWELBO of the unseen cells of the training
perturbations (``seen_eval``; nats per cell, 100 importance samples, seeded draws) is
scored at the end of chosen epochs without disturbing training (its random draws come
from a forked stream). For sVAE+ the alignment step runs at the end of epoch 200 of 400,
after the score of that epoch: epoch 200 is the dense warm-up's end, 201 the first
sparse epoch. Both models have had the same training until then (sVAE+'s warm-up is an
iVAE with the same networks), so the two curves part where the sparse prior starts. The
score at the last epoch is the trained model's ``seen_iwelbo`` of ``transfer.py``.

    python benchmarks/likelihood_phases.py --seeds 100 101 102 103 104 --workers 2 --lr-anneal 0

The committed results (``results/likelihood_phases.csv``) used constant learning rates
(``--lr-anneal 0``), the default before ``train()`` annealed them: they show why it now does.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import _common as C
import transfer as T

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MODELS = ("SVAEPlus", "iVAE/sparse-networks")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, nargs="+", default=[50, 100, 200, 201, 210, 250, 300, 400],
                    help="epochs (1-based) at whose end the unseen cells are scored")
    C.add_per_seed_options(ap, [100, 101, 102, 103, 104], RESULTS / "likelihood_phases.csv")
    C.add_lr_anneal_option(ap, what="every fit (the committed results: 0, constant rates)")
    args = ap.parse_args(argv)
    args.screen = T.default_args(args.lr_anneal)  # transfer.py's screens and training
    return args


def scorer(model, cells, epochs, seed: int, rows: list, label: str):
    """A Lightning callback scoring ``cells`` with ``model`` at the end of ``epochs``:
    appends {model, epoch, seen_iwelbo, dense} to ``rows``, then puts the module back
    in training mode. Its draws come from a forked random stream (training unchanged)."""
    from lightning.pytorch.callbacks import Callback

    class Score(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            epoch = trainer.current_epoch + 1
            if epoch not in epochs:
                return
            model.is_trained_ = True  # scvi-tools scores trained models only
            ll = model.get_marginal_ll(cells, n_samples=100, return_mean=True, seed=seed)
            model.is_trained_ = False
            model.module.train(True)
            prior = model.module.prior
            dense = not prior.learns_targets or bool(prior.dense)
            rows.append({"seed": seed, "model": label, "epoch": epoch, "seen_iwelbo": ll, "dense": dense})
            print(f"seed {seed} {label:22s} epoch {epoch:4d} IWELBO {ll:.3f}{' (dense)' if dense else ''}",
                  flush=True)

    return Score()


def run_seed(args, seed: int) -> list[dict]:
    import svae_lite as sl

    _, train, seen_eval = T.screen(args.screen, seed)
    rows: list[dict] = []
    for label in MODELS:
        name, model_kw = C.network_variant(label)
        tr = train.copy()
        cls = getattr(sl, name)
        cls.setup_anndata(tr)
        model = cls(tr, n_latent=args.screen.n_latent, seed=seed, **model_kw)
        model.train(max_epochs=args.screen.max_epochs, seed=seed, enable_progress_bar=False,
                    **C.lr_anneal_kwargs(args.lr_anneal),
                    callbacks=[scorer(model, seen_eval, set(args.epochs), seed, rows, label)])
        mcc = sl.metrics.mcc(tr.obsm["z_true"], model.get_latent_representation())
        final = T.iwelbo(model, seen_eval, seed)
        for r in rows:
            if r["model"] == label:
                r.update(train_mcc=mcc, final_iwelbo=final)
    return rows


def report(df: pd.DataFrame) -> str:
    import svae_lite as sl

    wide = df.pivot_table(index=["seed", "epoch"], columns="model", values="seen_iwelbo")
    means = wide.groupby(level="epoch").mean().round(3)
    rows = []
    for epoch, g in wide.groupby(level="epoch"):
        r = sl.metrics.paired_difference(g["SVAEPlus"], g["iVAE/sparse-networks"])
        rows.append({"epoch": epoch, "sVAE+ - iVAE/sparse-networks": r["mean"], "low": r["low"],
                     "high": r["high"], "verdict": r["verdict"]})
    per_model = []
    for m, g in df.pivot_table(index="seed", columns=["model", "epoch"], values="seen_iwelbo").T.groupby(level=0):
        g = g.droplevel(0).T
        for a, b in [(200, 100), (201, 200), (400, 201), (400, 200)]:
            if a in g and b in g:
                r = sl.metrics.paired_difference(g[a], g[b])
                per_model.append({"model": m, "change": f"epoch {b} -> {a}", "mean": r["mean"],
                                  "low": r["low"], "high": r["high"], "verdict": r["verdict"]})
    return ("IWELBO on unseen cells of the training perturbations (nats per cell), mean over seeds "
            + str(sorted(df.seed.unique())) + "\n" + means.to_string()
            + "\n\nsVAE+ - iVAE with the same networks, paired over seeds (95% t interval)\n"
            + pd.DataFrame(rows).round(3).to_string(index=False)
            + "\n\nChange within each model's training, paired over seeds\n"
            + pd.DataFrame(per_model).round(3).to_string(index=False))


def main(argv=None):
    C.per_seed_main(__file__, argv, parse, run_seed, report)


if __name__ == "__main__":
    main()
