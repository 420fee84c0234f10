"""Training throughput of svae_lite's sVAE+ against scvi-tools' SCVI on the same data.

Both models get the same data, minibatch size, encoder/decoder sizes (``n_layers`` x
``n_hidden``, dropout 0.1, batch norm), latent size, negative binomial likelihood and number
of epochs. sVAE+ is timed in its sparse phase (``dense_fraction=0``: a mask is sampled at
every step, the costlier phase). Each (model, data set) run is its own process.

    python benchmarks/throughput.py                   # CPU: Papalexi + simulated 20,000 x 1,000
    python benchmarks/throughput.py --gpu             # GPU: Papalexi + simulated 100,000 x 1,000
    python benchmarks/throughput.py --profile         # + where a step's time goes (per phase, per op)
    python benchmarks/throughput.py --datasets papalexi --epochs 5 --repeats 3

Prints, per data set and model: seconds per epoch (median over epochs after the first),
epochs per second, CPU seconds per epoch, ms per step, peak memory (process RSS sampled
during training; on a GPU also torch.cuda.max_memory_allocated), then the sVAE+/SCVI
throughput ratio (target >= 0.8). Models: see ``--help``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

COLUMNS = [("dataset", "data", "s"), ("shape", "cells x genes", "s"), ("model", "model", "s"),
           ("n_params", "params", "d"),
           ("s_per_epoch", "s/epoch", ".2f"), ("epochs_per_s", "epochs/s", ".3f"),
           ("cpu_s_per_epoch", "CPU s/epoch", ".2f"), ("ms_per_step", "ms/step", ".1f"),
           ("first_epoch_s", "1st epoch s", ".2f"), ("rss_peak_mb", "peak RSS MB", ".0f"),
           ("rss_increase_mb", "+RSS MB", ".0f"), ("gpu_peak_allocated_mb", "GPU peak MB", ".0f")]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=C.MODEL_HELP)
    p.add_argument("--gpu", action="store_true",
                   help="GPU mode: accelerator gpu, simulated set 100,000 x 1,000, 10 epochs")
    p.add_argument("--datasets", default="papalexi,simulated", help="comma list of papalexi, simulated")
    p.add_argument("--models", default=None, help=f"comma list of {', '.join(C.MODELS)} "
                   "(default: all on CPU; SVAEPlus,SCVI with --gpu)")
    p.add_argument("--n-cells", type=int, default=None, help="simulated cells (20,000; 100,000 with --gpu)")
    p.add_argument("--n-genes", type=int, default=1000, help="simulated genes")
    p.add_argument("--n-perturbations", type=int, default=199, help="simulated perturbations (+ control)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (4; 10 with --gpu)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-latent", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1, help="runs per (model, data); the median is reported")
    p.add_argument("--accelerator", default=None, help="cpu, gpu or auto (default: cpu; gpu with --gpu)")
    p.add_argument("--profile", action="store_true",
                   help="also report the phases of a step and the top torch ops (one extra short run per model)")
    C.add_run_options(p, threads_help="torch intra-op threads (default: 1 on CPU, which is the fastest for "
                      "these network sizes and stable on a shared machine; torch's default with --gpu)")
    a = p.parse_args(argv)
    a.accelerator = a.accelerator or ("gpu" if a.gpu else "cpu")
    a.n_cells = a.n_cells or (100_000 if a.gpu else 20_000)
    a.epochs = a.epochs or (10 if a.gpu else 4)
    if a.threads is None and a.accelerator == "cpu":
        a.threads = 1
    a.models = (a.models or ("SVAEPlus,SCVI" if a.gpu else ",".join(C.MODELS))).split(",")
    a.datasets = a.datasets.split(",")
    for m in a.models:
        if m not in C.MODELS:
            p.error(f"--models: unknown model {m!r}; choose from {C.MODELS}")
    for d in a.datasets:
        if d not in ("papalexi", "simulated"):
            p.error(f"--datasets: unknown data set {d!r}; choose papalexi or simulated")
    C.check_epochs(p, a.epochs)
    return a


def spec_for(a, dataset: str, model: str) -> dict:
    spec = dict(dataset=dataset, model=model, epochs=a.epochs, batch_size=a.batch_size,
                n_hidden=a.n_hidden, n_layers=a.n_layers, n_latent=a.n_latent,
                accelerator=a.accelerator, threads=a.threads, dense_fraction=0.0)
    if dataset == "simulated":
        spec.update(n_cells=a.n_cells, n_genes=a.n_genes, n_perturbations=a.n_perturbations)
    return spec


def median_result(runs: list[dict]) -> dict:
    """The run with the median seconds per epoch (the faster of two), with the peak memory
    over all runs."""
    runs = sorted(runs, key=lambda r: r["s_per_epoch"])
    r = dict(runs[(len(runs) - 1) // 2])
    r["rss_peak_mb"] = max(x["rss_peak_mb"] for x in runs)
    r["repeats"] = len(runs)
    return r


def profile_ops(spec: dict, n_steps: int = 40) -> dict:
    """Top torch ops (self CPU time, and CUDA time on a GPU) over ``n_steps`` training steps:
    ``{"table": the profiler's table}`` (a worker's task)."""
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.profiler import ProfilerActivity, profile

    adata = C.load_data(spec)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=acts)

    class Window(Callback):  # profile steps 11..10+n_steps (after warm-up steps)
        active = False

        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 10 and not self.active:
                prof.__enter__()
                self.active = True

        def on_train_batch_end(self, trainer, *args):
            if self.active and trainer.global_step >= 10 + n_steps:
                prof.__exit__(None, None, None)
                self.active = False
                trainer.should_stop = True

    window = Window()
    n_batches = max(1, adata.n_obs // spec["batch_size"])
    spec = dict(spec, epochs=2 + (10 + n_steps) // n_batches)
    C.build_and_train(spec, adata, callbacks=[window])
    if window.active:
        prof.__exit__(None, None, None)
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return {"table": prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=45)}


def task(spec: dict) -> dict:
    """A worker's task: the op profile when ``spec['ops']``, else a measurement."""
    return profile_ops(spec) if spec.get("ops") else C.measure(spec)


def main(argv=None):
    a = parse(argv)
    if a.worker:
        return C.serve(task, a.worker)
    C.header("throughput", f"settings: batch {a.batch_size}, {a.n_layers}x{a.n_hidden} hidden, {a.n_latent} "
             f"latents, {a.epochs} epochs (first not timed), accelerator {a.accelerator}, torch threads "
             f"{a.threads or 'default'}, repeats {a.repeats}; sVAE+ in its sparse phase (mask sampled every step)")
    results, script = [], str(Path(__file__).resolve())
    for dataset in a.datasets:
        runs = {m: [] for m in a.models}
        for rep in range(a.repeats):  # alternate the order so that a busy period hits all models
            order = a.models if rep % 2 == 0 else a.models[::-1]
            for m in order:
                r = C.run_worker(script, dict(spec_for(a, dataset, m), profile=a.profile))
                r["shape"] = f"{r['n_cells']} x {r['n_genes']}"
                runs[m].append(r)
                print(f"  ran {m} on {dataset}: {r['s_per_epoch']:.2f} s/epoch", file=sys.stderr, flush=True)
        rows = [median_result(runs[m]) for m in a.models]
        results.extend(rows)
        print()
        print(C.fmt_table(rows, COLUMNS))
        by = {r["model"]: r for r in rows}
        if "SVAEPlus" in by and "SCVI" in by:
            ratio = by["SVAEPlus"]["epochs_per_s"] / by["SCVI"]["epochs_per_s"]
            print(f"throughput ratio sVAE+/SCVI on {dataset}: {ratio:.2f} (target >= 0.8)")
        if "SVAEPlus" in by and "SVAEPlus-baseline" in by:
            gain = by["SVAEPlus"]["epochs_per_s"] / by["SVAEPlus-baseline"]["epochs_per_s"]
            print(f"speed-up of svae_lite's training path over the scvi-tools-style one: {gain:.2f}x")
        if a.profile:
            print("\nms per step by phase (Lightning SimpleProfiler; profiling adds overhead):")
            prow = [dict(model=r["model"], **r["phases_ms_per_step"]) for r in rows]
            print(C.fmt_table(prow, [("model", "model", "s")] + [
                (k, k, ".2f") for k in ("data", "forward", "backward", "optimizer", "other", "step_total")]))
            for m in a.models:
                try:
                    table = C.run_worker(script, dict(spec_for(a, dataset, m), ops=True))["table"]
                except RuntimeError as err:
                    table = str(err)
                print(f"\ntop torch ops, {m} on {dataset} (40 steps):\n{table}")
    C.write_json(a.json, results)
    return results


if __name__ == "__main__":
    main()
