"""How sVAE+'s training cost grows: time per epoch vs number of cells and vs number of
perturbations K (the mask, shift and scale tables are K x d).

Simulated screens; every point is its own process; sVAE+ runs in its sparse phase (a K x d
mask sampled at every step). Also timed: the one-off alignment step that ends a default fit's
dense warm-up (a rotation search over the K x d shifts).

    python benchmarks/scaling.py                    # CPU: cells 2.5k-20k; K 10-800 at 10k cells
    python benchmarks/scaling.py --gpu              # GPU: cells 10k-120k; K 50-2400 at 50k cells
    python benchmarks/scaling.py --with-scvi        # SCVI beside it on the cells axis
    python benchmarks/scaling.py --plot             # + benchmarks/results/scaling.png (seaborn)

Prints one table per axis: cells, K, mask parameters, seconds per epoch, ms per step,
microseconds per cell, alignment seconds, peak memory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

COLUMNS = [("axis", "axis", "s"), ("model", "model", "s"), ("n_cells", "cells", "d"),
           ("n_perturbations", "K", "d"), ("n_mask_params", "mask params", "d"),
           ("s_per_epoch", "s/epoch", ".2f"), ("ms_per_step", "ms/step", ".1f"),
           ("us_per_cell", "us/cell", ".0f"), ("align_s", "align s", ".2f"),
           ("rss_peak_mb", "peak RSS MB", ".0f"), ("gpu_peak_allocated_mb", "GPU peak MB", ".0f")]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true", help="GPU sizes and accelerator gpu")
    p.add_argument("--cells", default=None, help="comma list of cell numbers (cells axis)")
    p.add_argument("--perturbations", default=None, help="comma list of K (perturbations axis)")
    p.add_argument("--fixed-cells", type=int, default=None, help="cells on the K axis (10,000; 50,000 with --gpu)")
    p.add_argument("--fixed-perturbations", type=int, default=50, help="K on the cells axis")
    p.add_argument("--n-genes", type=int, default=500)
    p.add_argument("--n-latent", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--with-scvi", action="store_true", help="also time SCVI on the cells axis")
    p.add_argument("--plot", action="store_true", help="save benchmarks/results/scaling.png")
    C.add_run_options(p)
    a = p.parse_args(argv)
    a.accelerator = "gpu" if a.gpu else "cpu"
    if a.threads is None and not a.gpu:
        a.threads = 1
    a.cells = [int(x) for x in (a.cells or ("10000,30000,60000,120000" if a.gpu else "2500,5000,10000,20000")).split(",")]
    a.perturbations = [int(x) for x in (a.perturbations or ("50,300,1200,2400" if a.gpu else "10,50,200,800")).split(",")]
    a.fixed_cells = a.fixed_cells or (50_000 if a.gpu else 10_000)
    C.check_epochs(p, a.epochs)
    return a


def spec(a, model, n_cells, k, align):
    return dict(dataset="simulated", model=model, n_cells=n_cells, n_genes=a.n_genes, n_perturbations=k,
                data_latent=a.n_latent, epochs=a.epochs, batch_size=a.batch_size, n_hidden=a.n_hidden,
                n_layers=a.n_layers, n_latent=a.n_latent, accelerator=a.accelerator, threads=a.threads,
                dense_fraction=0.0, time_align=align)


def plot(rows, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    cells = df[df.axis == "cells"]
    sns.lineplot(data=cells, x="n_cells", y="s_per_epoch", hue="model", marker="o", ax=axes[0])
    axes[0].set(xlabel="cells", ylabel="seconds per epoch", title="vs number of cells")
    pert = df[df.axis == "perturbations"]
    sns.lineplot(data=pert, x="n_perturbations", y="ms_per_step", marker="o", ax=axes[1], label="training step")
    axes[1].set(xscale="log", xlabel="perturbations K", ylabel="ms per step",
                title=f"vs K ({int(pert.n_cells.iloc[0]) if len(pert) else 0} cells)")
    for ax in axes:
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main(argv=None):
    a = parse(argv)
    if a.worker:
        return C.serve(C.measure, a.worker)
    script = str(Path(__file__).resolve())
    C.header("scaling", f"settings: {a.n_genes} genes, d={a.n_latent}, batch {a.batch_size}, "
             f"{a.n_layers}x{a.n_hidden} hidden, {a.epochs} epochs (first not timed), accelerator "
             f"{a.accelerator}, torch threads {a.threads or 'default'}; sVAE+ in its sparse phase")
    rows = []
    models = ["SVAEPlus"] + (["SCVI"] if a.with_scvi else [])
    for n in a.cells:
        for m in models:
            r = C.run_worker(script, spec(a, m, n, a.fixed_perturbations, align=False))
            rows.append(dict(r, axis="cells"))
            print(f"  cells={r['n_cells']} {m}: {r['s_per_epoch']:.2f} s/epoch", file=sys.stderr, flush=True)
    for k in a.perturbations:
        r = C.run_worker(script, spec(a, "SVAEPlus", a.fixed_cells, k, align=True))
        rows.append(dict(r, axis="perturbations"))
        print(f"  K={k}: {r['s_per_epoch']:.2f} s/epoch", file=sys.stderr, flush=True)
    for r in rows:
        r["us_per_cell"] = 1e6 * r["s_per_epoch"] / r["n_cells"]
    print()
    print(C.fmt_table(rows, COLUMNS))
    pert = [r for r in rows if r["axis"] == "perturbations"]
    if len(pert) > 1:
        lo, hi = pert[0], pert[-1]
        print(f"\nK x{hi['n_perturbations'] / lo['n_perturbations']:.0f} ({lo['n_perturbations']} -> "
              f"{hi['n_perturbations']}): time per step x{hi['ms_per_step'] / lo['ms_per_step']:.2f}, "
              f"alignment x{hi['align_s'] / lo['align_s']:.2f}")
    cells = [r for r in rows if r["axis"] == "cells" and r["model"] == "SVAEPlus"]
    if len(cells) > 1:
        lo, hi = cells[0], cells[-1]
        print(f"cells x{hi['n_cells'] / lo['n_cells']:.1f}: time per epoch x{hi['s_per_epoch'] / lo['s_per_epoch']:.2f}")
    if a.plot:
        print(f"plot: {plot(rows, C.ROOT / 'benchmarks' / 'results' / 'scaling.png')}")
    C.write_json(a.json, rows)
    return rows


if __name__ == "__main__":
    main()
