"""Why sVAE+ fits unseen cells of its training perturbations worse than the iVAE: its
sparse prior, or its networks?

On the simulated screens of ``transfer.py`` (same seeds, cells and sVAE+ fit), the
training perturbations are learned *again*, under new names, from their training cells
with everything shared frozen, in two ways:

- ``sparse``: ``sVAE+.transfer()``: sparse masks, as sVAE+ learns any perturbation;
- ``dense``: an iVAE holding sVAE+'s trained encoder, decoder and dispersions, whose
  ``transfer()`` learns a dense shift of every latent.

Each is scored on the unseen cells (``seen_eval`` of ``transfer.py``) under the relearned
priors (IWELBO, nats per cell, 100 importance samples). ``dense - sparse`` is what the
sparsity of the prior costs sVAE+'s networks; the iVAE's own ``seen_iwelbo`` from
``results/transfer_sim_networks.csv`` minus ``dense`` is what sVAE+'s networks cost,
given a dense prior. ``--load`` prints both, paired over seeds.

    python benchmarks/likelihood_gap.py --seeds 100 101 102 103 104 --workers 2 --lr-anneal 0

The committed results (``results/likelihood_gap.csv``) used constant learning rates
(``--lr-anneal 0``), the default before ``train()`` annealed them, and are read against the
constant-rate iVAE of ``results/transfer_sim_networks.csv``.
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
    C.add_per_seed_options(ap, [100, 101, 102, 103, 104], RESULTS / "likelihood_gap.csv")
    C.add_lr_anneal_option(ap, what="every fit (the committed results: 0, constant rates)")
    args = ap.parse_args(argv)
    args.screen = T.default_args(args.lr_anneal)  # transfer.py's screens and training
    return args


def dense_twin(model, adata):
    """An iVAE on ``adata`` (registered like ``model``'s training data) holding ``model``'s
    networks, dispersions and (unmasked) prior parameters; sVAE+'s network settings."""
    import svae_lite as sl

    data = adata.copy()
    sl.iVAE.setup_anndata(data)
    twin = sl.iVAE(data, n_latent=model.module.n_latent, dropout_rate=0.0, kl_free_bits=0.25)
    missing, _ = twin.module.load_state_dict(model.module.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"parameters not copied to the dense twin: {missing}")
    twin.is_trained_ = True  # it holds trained parameters (scvi-tools checks this flag)
    return twin


def run_seed(args, seed: int) -> list[dict]:
    import svae_lite as sl

    _, train, seen_eval = T.screen(args.screen, seed)
    model, mcc, _ = T.fit_model(sl.SVAEPlus, train, args.screen, seed, {})
    known = train[train.obs["perturbation"] != "control"]
    score = T.again(seen_eval)
    is_control = seen_eval.obs["perturbation"].astype(str).to_numpy() == "control"
    score.obs.loc[is_control, "perturbation"] = "control"  # the controls keep their prior
    row = {"seed": seed, "train_mcc": mcc, "trained": T.iwelbo(model, seen_eval, seed)}
    for way, m in (("sparse", model), ("dense", dense_twin(model, train))):
        new = m.transfer(T.again(known), seed=seed, enable_progress_bar=False,
                         **C.lr_anneal_kwargs(args.lr_anneal))
        row[way] = T.iwelbo(new, score, seed)
        print(f"seed {seed} {way:6s} relearned IWELBO {row[way]:.3f} (trained {row['trained']:.3f})", flush=True)
    return [row]


def report(df: pd.DataFrame) -> str:
    import svae_lite as sl

    nets = pd.read_csv(RESULTS / "transfer_sim_networks.csv")
    ivae = nets[nets.model == "iVAE"].groupby("seed")["seen_iwelbo"].first()
    df = df.set_index("seed").join(ivae.rename("iVAE"))
    rows = []
    for what, a, b in [("sVAE+ trained - iVAE (the gap)", "trained", "iVAE"),
                       ("relearned sparse - trained (sanity: about 0)", "sparse", "trained"),
                       ("dense - sparse, sVAE+'s networks (the prior's sparsity)", "dense", "sparse"),
                       ("dense on sVAE+'s networks - iVAE (the networks)", "dense", "iVAE")]:
        r = sl.metrics.paired_difference(df[a], df[b])
        rows.append({"comparison": what, "seeds": r["n"], "mean": r["mean"], "low": r["low"],
                     "high": r["high"], "verdict": r["verdict"]})
    return ("IWELBO on unseen cells of the training perturbations (nats per cell)\n"
            + df.round(3).to_string() + "\n\nPaired over seeds (95% t interval)\n"
            + pd.DataFrame(rows).round(3).to_string(index=False))


def main(argv=None):
    C.per_seed_main(__file__, argv, parse, run_seed, report)


if __name__ == "__main__":
    main()
