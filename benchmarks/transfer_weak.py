"""Why weak held-out knockouts get no transferred target: a diagnostic of ``transfer()``.

On the Papalexi random split of ``real_data.py`` (the same cells, the same 40-epoch sVAE+
fit per seed), every held-out knockout is learned by ``transfer()`` from all its pool cells,
twice:

- ``default``: as ``transfer()`` does it: dense shifts first, then each new mask entry
  starts on where its dense shift exceeds 1 control SD (``init_mask_from_shifts``);
- ``lead-on``: the same, except that each new knockout's largest entry starts on whatever
  its size (the other entries as in ``default``): does a started target survive its price,
  and what does it gain?

Per (seed, knockout, variant): the dense shift at the switch to masks (its largest entry,
the second, and its norm over the latents, in control SDs), the learned targets and largest
masked shift after transfer, and the gain in held-out IWELBO (nats per evaluation cell)
over the untransferred model (control prior). ``--load`` prints the table beside the
iVAE's gains from the committed ``real_paired_papalexi_random.json`` (same cells and
seeds).

    python benchmarks/transfer_weak.py --seeds 0 2 3 4 --workers 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pandas as pd

import _common as C
import real_data as R

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: Papalexi knockouts with a clear observed effect outside the IFN-gamma pathway.
WEAK = ("SMAD4", "SPI1", "CUL3", "MYC", "BRD4")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40, help="training epochs (real_data.py's default)")
    ap.add_argument("--n-latent", type=int, default=10)
    C.add_lr_anneal_option(ap, what="the fits")
    C.add_per_seed_options(ap, [0, 2, 3, 4], RESULTS / "transfer_weak.csv",
                           seeds_help="random-split seeds (these hold out SMAD4, SPI1, CUL3, MYC or BRD4)")
    return ap.parse_args(argv)


def lead_on(original):
    """``init_mask_from_shifts`` that also starts each given row's largest entry on."""
    import torch

    @torch.no_grad()
    def init(self, rows=None, **kw):
        original(self, rows, **kw)
        idx = np.arange(self.shift.shape[0]) if rows is None else np.flatnonzero(np.asarray(rows))
        lead = self.shift.abs().argmax(1)
        for i in idx:
            self.mask_logit[i, lead[i]] = 3.0  # probability 0.95, as a 2-SD shift gets
    return init


def transfer_rows(model, pool, ev, ll0, seed, variant) -> list[dict]:
    """Transfer the held-out knockouts from all pool cells; one row per knockout."""
    from svae_lite.priors import SparseShift

    seen = {}

    def record(m):  # called at the switch to masks; None: no rotation (frozen space anyway)
        seen["dense"] = m.module.prior.shift.detach().cpu().numpy().copy()

    patch = (mock.patch.object(SparseShift, "init_mask_from_shifts", lead_on(SparseShift.init_mask_from_shifts))
             if variant == "lead-on" else contextlib.nullcontext())
    with patch:
        t = model.transfer(pool, seed=seed, enable_progress_bar=False, alignment_rotation=record)
    ll = R.iwelbo(t, ev, SimpleNamespace(n_samples=100), seed)
    lab = ev.obs["perturbation"].astype(str).to_numpy()
    shifts = t.get_shifts()
    rows = []
    for g in pd.unique(lab):
        d = np.sort(np.abs(seen["dense"][t.perturbations_.index(g)]))[::-1]
        s = shifts.loc[g].abs()
        rows.append({"seed": seed, "knockout": g, "variant": variant,
                     "n_pool": int((pool.obs["perturbation"] == g).sum()),
                     "dense_max": float(d[0]), "dense_second": float(d[1]), "dense_norm": float(np.linalg.norm(d)),
                     "n_targets": int((s > 0).sum()), "max_shift": float(s.max()),
                     "gain": float(ll[lab == g].mean() - ll0[lab == g].mean())})
    return rows


def run_seed(args, seed: int) -> list[dict]:
    held, train, _, pool, ev = R.papalexi_cells("random", seed)
    model, _ = R._fit("SVAEPlus", train, args, args.epochs, seed)
    ll0 = R.iwelbo(model, R.relabel(ev, "perturbation", value="control"), SimpleNamespace(n_samples=100), seed)
    return [r for v in ("default", "lead-on") for r in transfer_rows(model, pool, ev, ll0, seed, v)]


def ivae_gains(path=RESULTS / "real_paired_papalexi_random.json") -> pd.Series:
    """The iVAE's gain of the full transfer per (seed, knockout), from real_data.py's runs."""
    runs = json.loads(path.read_text())["runs"]
    gains = pd.Series({(r["seed"], g): gain for r in runs if r["model"] == "iVAE"
                       for g, gain in R.group_gains(r).items()}, name="iVAE: gain")
    return gains.rename_axis(["seed", "knockout"])


def report(df: pd.DataFrame) -> str:
    wide = df.pivot_table(index=["seed", "knockout"], columns="variant",
                          values=["n_targets", "max_shift", "gain"])
    wide.columns = [f"{v}: {m}" for m, v in wide.columns]
    dense = df[df.variant == "default"].set_index(["seed", "knockout"])[
        ["n_pool", "dense_max", "dense_second", "dense_norm"]]
    out = dense.join(wide).join(ivae_gains(), how="left")
    out = out.sort_values("dense_norm", ascending=False)
    weak = out[out.index.get_level_values("knockout").isin(WEAK)]
    return ("All held-out knockouts, by the norm of their dense transferred shift\n"
            + out.round(2).to_string() + "\n\nKnockouts with a clear observed effect outside the pathway\n"
            + weak.round(2).to_string())


def main(argv=None):
    C.per_seed_main(__file__, argv, parse, run_seed, report)


if __name__ == "__main__":
    main()
