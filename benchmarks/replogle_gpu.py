"""Replogle-scale training on a GPU: a simulated screen of 116,641 cells x 1,187 genes with
640 perturbations (the size of the reduced Replogle 2022 K562 set the paper trains on).

Reports seconds per epoch, epochs per second and peak GPU memory of sVAE+ (and of SCVI with
the same sizes, for the ratio), where training ran (the data are preloaded on the GPU), the
one-off alignment step, and the time of get_latent_representation (all cells) and
get_marginal_ll (2,000 cells, 100 importance samples) on the model's device.

    python benchmarks/replogle_gpu.py                 # on a GPU machine (about 3-5 minutes)
    python benchmarks/replogle_gpu.py --quick         # CPU check: 6,000 cells, same genes and K
    python benchmarks/replogle_gpu.py --batch-sizes 256,1024

``accelerator="auto"`` is what users get: the GPU when torch sees one, else the CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

N_CELLS, N_GENES, N_PERTURBATIONS = 116_641, 1_187, 640

COLUMNS = [("model", "model", "s"), ("batch_size", "batch", "d"), ("shape", "cells x genes", "s"),
           ("n_perturbations", "K", "d"), ("device", "device", "s"), ("s_per_epoch", "s/epoch", ".2f"),
           ("epochs_per_s", "epochs/s", ".3f"), ("ms_per_step", "ms/step", ".2f"),
           ("first_epoch_s", "1st epoch s", ".2f"), ("gpu_peak_allocated_mb", "GPU peak MB", ".0f"),
           ("gpu_peak_reserved_mb", "GPU reserved MB", ".0f"), ("rss_peak_mb", "peak RSS MB", ".0f")]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small CPU run: 6,000 cells (genes and K at full scale), 2 epochs, sVAE+ only")
    p.add_argument("--n-cells", type=int, default=None)
    p.add_argument("--n-genes", type=int, default=N_GENES)
    p.add_argument("--n-perturbations", type=int, default=N_PERTURBATIONS)
    p.add_argument("--n-latent", type=int, default=15)
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (3; 2 with --quick); first not timed")
    p.add_argument("--batch-sizes", default="256", help="comma list of minibatch sizes")
    p.add_argument("--models", default=None, help="comma list (SVAEPlus,SCVI; SVAEPlus with --quick)")
    p.add_argument("--accelerator", default="auto", help="auto (default), gpu or cpu")
    C.add_run_options(p, threads_help="torch threads on the CPU")
    a = p.parse_args(argv)
    a.n_cells = a.n_cells or (6_000 if a.quick else N_CELLS)
    a.epochs = a.epochs or (2 if a.quick else 3)
    a.models = (a.models or ("SVAEPlus" if a.quick else "SVAEPlus,SCVI")).split(",")
    a.batch_sizes = [int(b) for b in a.batch_sizes.split(",")]
    if a.threads is None:
        import torch

        if not torch.cuda.is_available():
            a.threads = 1  # the fastest for these network sizes on a CPU
    C.check_epochs(p, a.epochs)
    return a


def main(argv=None):
    a = parse(argv)
    if a.worker:
        return C.serve(C.measure, a.worker)
    import torch

    if not torch.cuda.is_available() and not a.quick:
        print("note: no GPU visible to torch; running on the CPU (use --quick for a short CPU check)",
              file=sys.stderr)
    script = str(Path(__file__).resolve())
    C.header("Replogle-scale", f"simulated {a.n_cells} cells x {a.n_genes} genes, {a.n_perturbations} "
             f"perturbations, d={a.n_latent}; {a.n_layers}x{a.n_hidden} hidden, {a.epochs} epochs (first not "
             f"timed), accelerator={a.accelerator}; sVAE+ in its sparse phase")
    rows = []
    for bs in a.batch_sizes:
        for m in a.models:
            spec = dict(dataset="simulated", model=m, n_cells=a.n_cells, n_genes=a.n_genes,
                        n_perturbations=a.n_perturbations, data_latent=a.n_latent, epochs=a.epochs,
                        batch_size=bs, n_hidden=a.n_hidden, n_layers=a.n_layers, n_latent=a.n_latent,
                        accelerator=a.accelerator, threads=a.threads, dense_fraction=0.0,
                        time_align=m == "SVAEPlus", time_inference=m == "SVAEPlus")
            r = C.run_worker(script, spec)
            r["shape"], r["batch_size"] = f"{r['n_cells']} x {r['n_genes']}", bs
            rows.append(r)
            print(f"  {m} batch {bs}: {r['s_per_epoch']:.2f} s/epoch on {r['device']}", file=sys.stderr, flush=True)
    print()
    print(C.fmt_table(rows, COLUMNS))
    for bs in a.batch_sizes:
        by = {r["model"]: r for r in rows if r["batch_size"] == bs}
        if "SVAEPlus" in by and "SCVI" in by:
            print(f"throughput ratio sVAE+/SCVI, batch {bs}: "
                  f"{by['SVAEPlus']['epochs_per_s'] / by['SCVI']['epochs_per_s']:.2f}")
    for r in rows:
        if "latent_s" in r:
            print(f"sVAE+ (batch {r['batch_size']}): simulation {r['load_s']:.1f} s; alignment step "
                  f"{r['align_s']:.2f} s; get_latent_representation ({r['latent_shape'][0]} cells) "
                  f"{r['latent_s']:.2f} s and get_marginal_ll ({r['marginal_ll_cells']} cells, 100 samples) "
                  f"{r['marginal_ll_s']:.2f} s on {r['inference_device']}; 100 epochs would take "
                  f"{100 * r['s_per_epoch'] / 60:.1f} min")
    C.write_json(a.json, rows)
    return rows


if __name__ == "__main__":
    main()
