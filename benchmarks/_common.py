"""Shared pieces of the benchmarks.

Every run of every benchmark is its own process: the script calls itself with ``--worker
SPEC`` (:func:`run_worker`, :func:`run_workers`) and the worker prints its result as one
``RESULT {json}`` line (:func:`serve`). A run's peak memory is then that of one model's
training and nothing else, no run inherits another's caches or torch threads, and runs go
in parallel as separate processes. The performance benchmarks (throughput.py, scaling.py,
replogle_gpu.py) also share their measurement (:func:`measure`), command-line options and
output here.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULT_TAG = "RESULT "

# The data folder next to the repository (as in CI) unless SVAE_LITE_DATA names another.
if "SVAE_LITE_DATA" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["SVAE_LITE_DATA"] = str(ROOT.parent / "shared" / "data")


# ---------------------------------------------------------------------------- environment
def machine() -> str:
    """One line: CPU model, cores, memory, load average, GPU, torch and scvi-tools versions."""
    import torch
    import scvi

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average %.1f" % os.getloadavg()[0]
    gpu = "no GPU"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = f"GPU {p.name} ({p.total_memory / 2**30:.0f} GiB)"
    return (f"{cpu}, {os.cpu_count()} cores{mem}{load}; {gpu}; python {platform.python_version()}, "
            f"torch {torch.__version__}, scvi-tools {scvi.__version__}")


# ---------------------------------------------------------------------------- memory
def rss_mb() -> float:
    """Resident set size of this process now, MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the high-water mark is the best we have
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Highest resident set size this process has had, MiB (ru_maxrss)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds in a thread: the peak while the
    ``with`` block ran (ru_maxrss would include everything before it, e.g. data loading)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start = rss_mb()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


# ---------------------------------------------------------------------------- timing
def epoch_timer():
    """A Lightning callback recording wall and process-CPU seconds of every training epoch
    (the CUDA queue is drained at both ends, so GPU epochs are timed completely)."""
    import torch
    from lightning.pytorch.callbacks import Callback

    def sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    class EpochTimer(Callback):
        def __init__(self):
            self.wall, self.cpu, self.steps = [], [], []

        def on_train_epoch_start(self, trainer, pl_module):
            sync()
            self._t = (time.perf_counter(), time.process_time(), trainer.global_step)

        def on_train_epoch_end(self, trainer, pl_module):
            sync()
            self.wall.append(time.perf_counter() - self._t[0])
            self.cpu.append(time.process_time() - self._t[1])
            self.steps.append(trainer.global_step - self._t[2])

    return EpochTimer()


def summarise_epochs(timer, skip: int = 1) -> dict:
    """Median seconds per epoch (wall and CPU) over the epochs after the first ``skip`` ones
    (the first includes one-off set-up such as preloading the data)."""
    import numpy as np

    wall, cpu, steps = (np.asarray(x, dtype=float) for x in (timer.wall, timer.cpu, timer.steps))
    keep = slice(skip, None) if len(wall) > skip else slice(None)
    s = float(np.median(wall[keep]))
    return {"s_per_epoch": s, "epochs_per_s": 1.0 / s, "cpu_s_per_epoch": float(np.median(cpu[keep])),
            "ms_per_step": 1000 * s / max(1.0, float(np.median(steps[keep]))),
            "first_epoch_s": float(wall[0]), "epochs_timed": int(len(wall[keep]))}


# ---------------------------------------------------------------------------- data
def data_dir() -> Path:
    """The data folder, as the loaders resolve it (SVAE_LITE_DATA, set above to
    ../shared/data beside the repository when unset and that folder exists)."""
    from svae_lite.datasets import get_data_dir

    return get_data_dir()


def load_papalexi():
    """Papalexi 2021 THP-1 (20,729 cells x 299 genes): through ``svae_lite.datasets`` when the
    package has it, else the converted file read with anndata."""
    try:
        from svae_lite import datasets

        return datasets.papalexi2021()
    except (ImportError, AttributeError):
        import anndata

        path = data_dir() / "papalexi2021_thp1.h5ad"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: set SVAE_LITE_DATA to the folder holding papalexi2021_thp1.h5ad.")
        return anndata.read_h5ad(path)


#: Network settings swapped between the presets (a model name's suffix, e.g.
#: ``iVAE/sparse-networks``): the sparse presets' (no encoder dropout, free bits of 0.25 nats
#: per latent) and the dense ones' (dropout 0.1, the plain ELBO). Given to another model they
#: isolate what the prior adds from what the networks' settings add; ``no-free-bits`` keeps
#: a preset's dropout and drops only the free bits (the plain ELBO).
NETWORK_VARIANTS = {"sparse-networks": {"dropout_rate": 0.0, "kl_free_bits": 0.25},
                    "dense-networks": {"dropout_rate": 0.1, "kl_free_bits": 0.0},
                    "no-free-bits": {"kl_free_bits": 0.0}}


def network_variant(label: str) -> tuple[str, dict]:
    """``(class name, model kwargs)`` of a model label: ``"iVAE/sparse-networks"`` ->
    ``("iVAE", {...})``; a label without a network suffix keeps its kwargs empty."""
    name, _, variant = label.partition("/")
    return name, dict(NETWORK_VARIANTS.get(variant, {}))


def first_n_per_group(adata, key: str, n: int | None, last: bool = False):
    """A copy of the first ``n`` cells of each group of ``obs[key]`` (the last ``n`` with
    ``last``; all cells when ``n`` is None), in their original order: the same cells for
    every model, a paired design."""
    if n is None:
        return adata.copy()
    keep = adata.obs.groupby(key, observed=True).cumcount(ascending=not last).to_numpy() < n
    return adata[keep].copy()


def simulated(n_cells: int, n_genes: int, n_perturbations: int, n_latent: int = 15, seed: int = 0):
    """A simulated screen of about ``n_cells`` cells (equal groups, control included)."""
    import svae_lite as sl

    per = max(2, int(math.ceil(n_cells / (n_perturbations + 1))))
    return sl.simulate(n_latent=n_latent, n_perturbations=n_perturbations, n_cells_per_perturbation=per,
                       n_genes=n_genes, n_heldout=0, n_targets=(1, min(3, n_latent)), seed=seed)


def load_data(spec: dict):
    if spec["dataset"] == "papalexi":
        return load_papalexi()
    return simulated(spec["n_cells"], spec["n_genes"], spec["n_perturbations"],
                     spec.get("data_latent", 15), spec.get("seed", 0))


# ---------------------------------------------------------------------------- models
MODELS = ("SVAEPlus", "SVAEPlus-baseline", "SCVI")
MODEL_HELP = ("SVAEPlus: svae_lite as shipped (in-memory minibatches, fused Adam, epoch-level "
              "logging). SVAEPlus-baseline: the same module trained the scvi-tools way "
              "(AnnDataLoader, per-step metric logging, torch's default Adam): what svae_lite's own "
              "training path is measured against. SCVI: scvi.model.SCVI with the same sizes, NB likelihood.")


def _baseline_plan():
    import torch
    from scvi.train import TrainingPlan
    from svae_lite._training import ShiftTrainingPlan

    class BaselinePlan(ShiftTrainingPlan):
        """scvi-tools' per-step logging and torch's default Adam: the scvi-tools-style
        training path that svae_lite's own is compared with."""

        def configure_optimizers(self):
            opt = super().configure_optimizers()["optimizer"]
            # torch's default Adam (for-loop on a CPU, foreach on a GPU); the groups must lose
            # the fused flag, which a new optimizer would otherwise inherit
            groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in opt.param_groups]
            return {"optimizer": torch.optim.Adam(groups, eps=self.eps)}

        def training_step(self, batch, batch_idx):
            return TrainingPlan.training_step(self, batch, batch_idx)

        def on_train_epoch_end(self):
            pass

    return BaselinePlan


def build_and_train(spec: dict, adata, callbacks: list | None = None) -> dict:
    """Train ``spec['model']`` on ``adata`` for ``spec['epochs']`` epochs; returns timings and
    memory. ``spec``: model, epochs, batch_size, n_hidden, n_layers, n_latent, accelerator,
    dense_fraction (sVAE+), profile (bool)."""
    import torch

    name = spec["model"]
    common = dict(n_hidden=spec["n_hidden"], n_layers=spec["n_layers"], n_latent=spec["n_latent"],
                  dropout_rate=0.1)
    train_kw = dict(max_epochs=spec["epochs"], batch_size=spec["batch_size"],
                    accelerator=spec["accelerator"], devices=1, enable_progress_bar=False,
                    train_size=1.0, plan_kwargs={"n_epochs_kl_warmup": 1})
    if name.startswith("SVAEPlus"):
        import svae_lite as sl

        key = "perturbation"
        sl.SVAEPlus.setup_anndata(adata, perturbation_key=key, control="control")
        model = sl.SVAEPlus(adata, **common)
        train_kw["dense_fraction"] = spec.get("dense_fraction", 0.0)
        if name == "SVAEPlus-baseline":
            model._training_plan_cls = _baseline_plan()
            train_kw["datasplitter_kwargs"] = {"in_memory": False}
    elif name == "SCVI":
        import scvi

        scvi.model.SCVI.setup_anndata(adata)
        model = scvi.model.SCVI(adata, gene_likelihood="nb", **common)
    else:
        raise ValueError(f"model {name!r}: choose one of {MODELS}.")
    n_params = sum(p.numel() for p in model.module.parameters())
    timer = epoch_timer()
    train_kw["callbacks"] = [timer] + list(callbacks or [])
    profiler = None
    if spec.get("profile"):
        from lightning.pytorch.profilers import SimpleProfiler

        profiler = SimpleProfiler()
        train_kw["profiler"] = profiler
    cuda = torch.cuda.is_available() and spec["accelerator"] in ("gpu", "cuda", "auto")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with RssSampler() as rss:
        model.train(**train_kw)
    total = time.perf_counter() - t0
    out = {"model": name, "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "n_params": int(n_params),
           "train_s": total, "rss_before_mb": rss.start, "rss_peak_mb": rss.peak,
           "rss_increase_mb": rss.peak - rss.start, "device": str(model.device)}
    out.update(summarise_epochs(timer))
    if cuda:
        out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    if profiler is not None:
        out["phases_ms_per_step"] = phase_breakdown(profiler)
    if spec.get("time_inference"):
        out.update(time_inference(model, adata, cuda))
    if spec.get("time_align") and name.startswith("SVAEPlus"):
        t0 = time.perf_counter()
        model.module.align_(seed=0)  # the one-off alignment step of a default (dense-first) fit
        out["align_s"] = time.perf_counter() - t0
    prior = getattr(model.module, "prior", None)
    if prior is not None and hasattr(prior, "mask_logit"):
        out["n_mask_params"] = int(prior.mask_logit.numel())
    return out


def time_inference(model, adata, cuda: bool, n_ll_cells: int = 2000, n_samples: int = 100) -> dict:
    """Seconds for get_latent_representation on all cells and get_marginal_ll (``n_samples``
    importance samples) on ``n_ll_cells`` cells, and the device they ran on."""
    import torch

    def sync():
        if cuda:
            torch.cuda.synchronize()

    out = {"inference_device": str(model.device)}
    sync()
    t0 = time.perf_counter()
    z = model.get_latent_representation()
    sync()
    out["latent_s"] = time.perf_counter() - t0
    out["latent_shape"] = list(z.shape)
    if type(model).__module__.startswith("svae_lite"):
        sub = adata[:n_ll_cells].copy()
        t0 = time.perf_counter()
        ll = model.get_marginal_ll(sub, n_samples=n_samples)
        sync()
        out["marginal_ll_s"] = time.perf_counter() - t0
        out["marginal_ll_cells"] = int(sub.n_obs)
        out["marginal_ll_mean"] = float(ll.mean())
    return out


def phase_breakdown(profiler) -> dict:
    """Milliseconds per step in each phase of a training step, from Lightning's SimpleProfiler:
    data (next minibatch + transfer), forward (training_step: forward, loss, logging),
    backward, optimizer (Adam's update), other (the rest of the loop: hooks, zero_grad...)."""
    import numpy as np

    rec = profiler.recorded_durations

    def total(suffix):
        return sum(float(np.sum(v)) for k, v in rec.items() if k.endswith(suffix))

    n = max(1, sum(len(v) for k, v in rec.items() if k.endswith("run_training_batch")))
    batch = total("run_training_batch")
    opt_all = total(".optimizer_step")
    fwd = sum(float(np.sum(v)) for k, v in rec.items() if k.endswith(".training_step") and "Strategy" in k)
    bwd = sum(float(np.sum(v)) for k, v in rec.items() if k.endswith(".backward") and "Strategy" in k)
    data = total("train_dataloader_next") + sum(float(np.sum(v)) for k, v in rec.items()
                                                  if "batch_to_device" in k or "transfer_batch_to_device" in k)
    adam = max(0.0, opt_all - fwd - bwd)
    return {"data": 1000 * data / n, "forward": 1000 * fwd / n, "backward": 1000 * bwd / n,
            "optimizer": 1000 * adam / n, "other": 1000 * max(0.0, batch - opt_all) / n,
            "step_total": 1000 * (batch + total("train_dataloader_next")) / n}


def measure(spec: dict) -> dict:
    """One measurement of the performance benchmarks (a worker's task): load or simulate
    the data of ``spec`` and train on it (:func:`build_and_train`)."""
    import torch

    t0 = time.perf_counter()
    adata = load_data(spec)
    load_s = time.perf_counter() - t0
    out = build_and_train(spec, adata)
    out.update(dataset=spec["dataset"], load_s=load_s, threads=torch.get_num_threads())
    if "n_perturbations" in spec:
        out["n_perturbations"] = spec["n_perturbations"]
    return out


# ---------------------------------------------------------------------------- processes
def serve(task, spec: dict | str) -> None:
    """Body of a worker process (``script --worker SPEC``): silence the training chatter
    and every warning (the output is a table), set torch's threads to ``spec['threads']``
    when given, and print ``task(spec)`` (``spec`` without ``threads``; a JSON-serialisable
    dict) as one ``RESULT {json}`` line."""
    import svae_lite as sl

    sl.quiet(all_warnings=True)
    spec = json.loads(spec) if isinstance(spec, str) else dict(spec)
    threads = spec.pop("threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    print(RESULT_TAG + json.dumps(task(spec)), flush=True)


def run_worker(script: str, spec: dict, args=(), timeout: float | None = None) -> dict:
    """Run ``python script *args --worker SPEC`` in a fresh process and return its result
    (the ``RESULT`` line :func:`serve` printed); raises with the output's tail if it failed."""
    cmd = [sys.executable, str(script), *args, "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
    raise RuntimeError(f"benchmark worker failed ({json.dumps(spec)}):\n{tail}")


def run_workers(script: str, specs: list[dict], jobs: int = 1, args=(), report=None) -> list[dict]:
    """:func:`run_worker` for every spec, ``jobs`` processes at a time; the results in the
    order of ``specs``. ``report(result)`` is called as each run finishes (progress lines)."""

    def one(spec):
        result = run_worker(script, spec, args)
        if report is not None:
            report(result)
        return result

    with ThreadPoolExecutor(max(1, int(jobs))) as pool:
        return list(pool.map(one, specs))


def add_per_seed_options(ap, seeds: list[int], out: Path, seeds_help: str | None = None) -> None:
    """The options :func:`per_seed_main` reads from ``parse(argv)``: ``--seeds`` (default
    ``seeds``), ``--workers``, ``--out`` (default ``out``), ``--load`` and the hidden
    ``--worker``."""
    import argparse

    ap.add_argument("--seeds", type=int, nargs="+", default=list(seeds), help=seeds_help)
    ap.add_argument("--workers", type=int, default=1, help="seeds run in parallel processes")
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--load", action="store_true", help="reprint the tables of --out without running")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def add_lr_anneal_option(ap, flag: str = "--lr-anneal", what: str = "the models' fits") -> None:
    """``flag``: a value of ``lr_anneal`` for ``what``, read back with :func:`lr_anneal_kwargs`
    (unset: the function's own default)."""
    ap.add_argument(flag, type=float, default=None,
                    help=f"lr_anneal of {what} (default: train()'s default)")


def lr_anneal_kwargs(value: float | None) -> dict:
    """Keyword arguments of ``train()``/``transfer()`` for an ``--lr-anneal`` option: none
    when it was not given, so that the function's own default applies."""
    return {} if value is None else {"lr_anneal": value}


def per_seed_main(script: str, argv, parse, run_seed, report) -> None:
    """The command line of a benchmark with one process per seed. ``parse(argv)`` gives
    ``seeds``, ``workers``, ``out`` (a CSV), ``load`` and ``worker``; ``run_seed(args, seed)``
    returns that seed's rows; ``report(DataFrame)`` the text printed at the end. In a worker
    process (``--worker``) only its seed runs; otherwise every seed runs, ``workers``
    processes at a time with one torch thread each (unless ``--load``), the rows go to
    ``out`` with its ``.meta.json``, and the report of ``out`` is printed."""
    import pandas as pd

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        serve(lambda spec: {"rows": run_seed(args, spec["seed"])}, args.worker)
        return
    if not args.load:
        specs = [{"seed": s, "threads": 1} for s in args.seeds]
        results = run_workers(script, specs, args.workers, argv,
                              report=lambda r: print(f"seed {r['rows'][0]['seed']} done", flush=True))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([r for res in results for r in res["rows"]]).to_csv(out, index=False)
        write_meta(out, argv)
    pd.set_option("display.width", 200)
    print(report(pd.read_csv(args.out)))


# ---------------------------------------------------------------------------- command line and output
def add_run_options(p, n_hidden: int = 128, n_layers: int = 2, threads_help: str | None = None):
    """The options every performance benchmark has: network size, torch threads, the JSON
    output and the hidden ``--worker`` of its worker processes."""
    p.add_argument("--n-hidden", type=int, default=n_hidden)
    p.add_argument("--n-layers", type=int, default=n_layers)
    p.add_argument("--threads", type=int, default=None, help=threads_help or "torch threads (default 1 on CPU)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def check_epochs(p, epochs: int) -> None:
    if epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is not timed)")


def header(name: str, settings: str) -> None:
    """The first lines of a performance benchmark's report: what, when, on which machine."""
    print(f"# svae_lite {name} benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print(f"# machine: {machine()}")
    print(f"# {settings}")


def write_meta(results_path, argv=None) -> Path:
    """Write ``<results>.meta.json`` beside a results file: when, on which machine, with
    which command and package version (and git commit) it was produced."""
    import svae_lite

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    results_path = Path(results_path)
    meta = {"date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "machine": machine(),
            "command": "python " + " ".join([sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)),
            "svae_lite": svae_lite.__version__, "commit": commit}
    path = results_path.with_suffix(".meta.json")
    path.write_text(json.dumps(meta, indent=1))
    return path


def write_json(path: str | None, rows) -> None:
    """Write ``rows`` to ``path`` as JSON (nothing when ``path`` is None)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(rows, indent=1))


def fmt_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table: columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i]) for i in range(len(c)))
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
