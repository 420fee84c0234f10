"""Execute every chapter on its own, as Colab runs it, and hand the outputs to the book build.

Each chapter (``book/NN_*.py``, and the solutions page) runs in a fresh Python kernel whose
working directory is a fresh, empty temporary folder: nothing a previous chapter left in
memory or on disk (other than the shared cache of trained models, see below) can reach it,
so a chapter that passes here runs alone on Colab. Chapters run in parallel, ``--jobs`` at a
time, each kernel with one torch/BLAS thread (on 2 cores, two one-thread kernels finish
sooner than one kernel with two threads); the longest chapters start first.

What the chapters share, and why that does not weaken the test:

- trained models, through ``_helpers.fit``'s cache under ``_build/cache``: a fit is looked
  up by a hash of its data, model and arguments, and trained when missing, so a chapter
  gets the same model whether it finds it or trains it. A file lock per fit lets two
  chapters that need the same model wait for one training instead of doing it twice.
- results: chapters 1-6 write their numbers to ``_build/results``; the
  closing chapter (``07_claims``) reads them, so it runs last. It is also run once *alone*,
  with an empty results folder (``SVAE_LITE_RESULTS``), where it must fall back to the
  book's committed reference results, as it does on Colab.

Every executed notebook is stored in the jupyter-cache that ``jupyter-book build`` reads
(``execute_notebooks: cache`` in ``_config.yml``), so the build renders these outputs
instead of executing the chapters a second time. The wall-clock time of each chapter is
written to ``_build/results/run_times.json``.

    python book/_execute.py                # every page, 2 at a time
    python book/_execute.py --jobs 1 03_identifiability
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import jupytext
import nbclient
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn

from _sync import pages  # the chapters and the solutions page

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
JUPYTER_CACHE = ROOT / "_build" / ".jupyter_cache"
RESULTS = ROOT / "_build" / "results"
LAST = "07_claims"  # reads every other chapter's results
# the run times measured by the build that wrote the committed reference results: they
# order the queue, longest first (a page not measured there goes last)
MEASURED = BOOK / "reference_results" / "run_times.json"


def expected_seconds() -> dict[str, float]:
    """``{page: seconds}`` of the reference build; empty when it recorded none."""
    return json.loads(MEASURED.read_text()) if MEASURED.exists() else {}


def read(path: Path):
    """The page as the book build reads it (``nb_custom_formats`` in ``_config.yml``), so that
    jupyter-cache's hash of its code cells matches the build's."""
    return jupytext.reads(path.read_text(encoding="utf8"), fmt="py:percent")


def execute(path: Path, timeout: int, results_dir: Path | None = None) -> tuple[object, float, object]:
    """Run one page in a fresh kernel and a fresh temporary working directory.

    Returns the executed notebook, its wall-clock seconds and the page as it was read (before
    execution); raises ``nbclient.exceptions.CellExecutionError`` when a cell fails.
    """
    source = read(path)
    nb = copy.deepcopy(source)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SVAE_LITE_BOOK": str(BOOK)}
    if results_dir is not None:
        env["SVAE_LITE_RESULTS"] = str(results_dir)
    with tempfile.TemporaryDirectory(prefix=f"{path.stem}-") as cwd:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         record_timing=False,
                                         resources={"metadata": {"path": cwd}})
        t0 = time.time()
        client.execute(env={**os.environ, **env})  # the kernel's whole environment
        return nb, time.time() - t0, source


def store(path: Path, source, nb, seconds: float) -> None:
    """Put an executed page into the jupyter-cache the book build reads.

    The cache finds a page by a hash of its code cells *with their metadata*, so the outputs
    are copied into the page as it was read before execution (``source``: nothing the kernel
    added to a cell's metadata may change the hash); a page the build then fails to find
    (e.g. edited while it ran) would be executed a second time, which :func:`check_cached`
    rules out.
    """
    page = copy.deepcopy(source)
    for mine, done in zip(page.cells, nb.cells):
        if mine.cell_type == "code":
            mine.outputs, mine.execution_count = done.outputs, done.execution_count
    page.metadata["language_info"] = nb.metadata.get("language_info", {})
    cache = get_cache(str(JUPYTER_CACHE))
    cache.cache_notebook_bundle(
        CacheBundleIn(page, str(path), data={"execution_seconds": seconds}),
        check_validity=False, overwrite=True)
    check_cached(path)


def check_cached(path: Path) -> None:
    """Raise unless the book build will find ``path``'s outputs in the cache."""
    try:
        get_cache(str(JUPYTER_CACHE)).match_cache_notebook(read(path))
    except KeyError:
        raise RuntimeError(f"{path.name} was executed but the book build would not find its "
                           "outputs in the jupyter-cache (its code cells differ from those "
                           "executed: was it edited while it ran?)") from None


def run(names: list[str], jobs: int, timeout: int) -> dict[str, float]:
    """Execute the named pages (all when empty); return ``{page: seconds}``."""
    todo = [p for p in pages() if not names or p.stem in names]
    unknown = set(names) - {p.stem for p in todo}
    if unknown:
        raise SystemExit(f"no such page(s): {sorted(unknown)}; pages: {[p.stem for p in pages()]}")
    expected = expected_seconds()
    first = sorted((p for p in todo if p.stem != LAST), key=lambda p: -expected.get(p.stem, 0))
    times: dict[str, float] = {}

    def one(path: Path, results_dir: Path | None = None, label: str | None = None):
        label = label or path.stem
        try:
            nb, seconds, source = execute(path, timeout, results_dir)
            if results_dir is None:
                store(path, source, nb, seconds)
        except Exception as err:  # report every failing page, not only the first
            tail = "\n".join(str(err).strip().splitlines()[-12:])  # the traceback's end
            print(f"  {label:34s} FAILED: {type(err).__name__}\n{tail}", flush=True)
            failed.append(label)
            return label, float("nan")
        print(f"  {label:34s} {seconds:7.1f} s", flush=True)
        return label, seconds

    failed: list[str] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, p) for p in first]
        last = [p for p in todo if p.stem == LAST]
        if last:  # alone, as on Colab: no results from the other chapters
            empty = Path(tempfile.mkdtemp(prefix="no-results-"))
            futures.append(pool.submit(one, last[0], empty, f"{LAST} (alone, no results)"))
        for f in as_completed(futures):
            label, seconds = f.result()
            times[label] = seconds
    for p in last:  # with every chapter's results, for the book
        label, seconds = one(p)
        times[label] = seconds
    if failed:
        raise SystemExit(f"{len(failed)} page(s) failed: {', '.join(failed)}")
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pages", nargs="*", help="page names (default: all), e.g. 03_identifiability")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="pages executed at once (default: 2, or 1 on a 1-core machine)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell (-1: none)")
    ap.add_argument("--save-reference", action="store_true",
                    help="then copy the results into book/reference_results (to commit)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    t0 = time.time()
    print(f"executing pages, {args.jobs} at a time, each in a fresh kernel and folder:")
    times = run(args.pages, args.jobs, args.timeout)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "run_times.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **times}, indent=2, sort_keys=True))
    print(f"  {'wall clock, all pages':34s} {time.time() - t0:7.1f} s  -> {path.relative_to(ROOT)}")
    if args.save_reference:
        sys.path.insert(0, str(BOOK))
        import _helpers

        print(f"reference results written to {_helpers.save_reference_results()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
