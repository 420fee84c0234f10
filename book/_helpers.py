"""Book plumbing shared by the chapters (not part of the ``svae_lite`` package).

- :func:`setup`: quiet training logs, one figure style, the chapter's start time.
- :func:`check_parameters`: validate a chapter's (papermill) parameters right after its
  ``parameters`` cell.
- :func:`fit`: train a model with the public API, cached under ``_build/cache`` so that a
  model trained in one chapter is reused (not retrained) by the next ones.
- :func:`save_results` / :func:`load_results`: the numbers each chapter measured, as JSON
  under ``_build/results``, read by the closing chapter.

Everything scientific in the chapters goes through ``import svae_lite as sl``; this module
only saves time and keeps the chapters short.

The first code cell of every chapter (the same in all, hidden in the book) is what cannot
live here: on Colab it clones the repository and installs it (this file is not part of the
installed package), then it puts ``book/`` on the import path (chapters run from ``book/``
or from the repository root), imports this module as ``H`` and calls :func:`setup`.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import time
import warnings
from pathlib import Path

import numpy as np

# Importing scvi-tools imports tqdm.auto, which warns "IProgress not found" in Jupyter
# without ipywidgets: once, at import, before setup() can call sl.quiet().
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import svae_lite as sl

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
CACHE = BUILD / "cache"
FULL_ENV = "SVAE_LITE_FULL"
NO_CACHE_ENV = "SVAE_LITE_NO_CACHE"
RESULTS_ENV = "SVAE_LITE_RESULTS"
#: where chapters write their numbers (``SVAE_LITE_RESULTS`` moves it, e.g. to run the closing
#: chapter without any, as on Colab)
RESULTS = Path(os.environ.get(RESULTS_ENV) or BUILD / "results")
#: the results of the book's last CI-scale build, committed with the repository: what the
#: closing chapter reads when a chapter's own results are not in this runtime
REFERENCE_RESULTS = ROOT / "book" / "reference_results"

_T0: float | None = None  # set by setup(): when the chapter started


def full_scale() -> bool:
    """True when the environment variable ``SVAE_LITE_FULL=1`` asks for full-scale values."""
    value = os.environ.get(FULL_ENV, "0").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{FULL_ENV}={value!r}: set it to 1 (full scale) or 0 / unset (CI scale).")
    return value == "1"


def setup() -> None:
    """Start a chapter: quiet the trainer's logs (:func:`svae_lite.quiet`), set the figure
    style, and record the start time that :func:`elapsed` measures from."""
    global _T0
    import matplotlib as mpl
    import seaborn as sns

    sl.quiet()
    try:  # figures inline even when MPLBACKEND=Agg is set (as in CI)
        from IPython import get_ipython

        if get_ipython() is not None:
            get_ipython().run_line_magic("matplotlib", "inline")
    except ImportError:  # pragma: no cover
        pass
    sns.set_theme(context="notebook", style="ticks", font_scale=1.0)  # readable on a slide
    mpl.rcParams.update({"figure.dpi": 150, "savefig.dpi": 150, "figure.figsize": (5.5, 3.8)})
    _T0 = time.time()


# ------------------------------------------------------------------- the book's simulation
#: The book's one simulated screen at each scale, as ``sl.simulate`` arguments. Chapters 2,
#: 3, 4 and 6 all use it, so a model trained in one chapter is found in the cache by the
#: others, and chapter 7 judges results from one simulation. Full scale is the simulator's
#: defaults (the README's table). The CI scale (d = 6, 60 training perturbations of 150
#: cells, about 10 per latent) is small enough for a CI build's minutes; on it sVAE+ reaches
#: pooled MCC 0.91-0.93 and target F1 0.96-0.98, control-cell MCC at 85-93% of the
#: count-noise ceiling (seeds 11-13, which chose it; benchmarks/README.md, "The book's CI
#: scale").
SIMULATION = {
    "CI": dict(n_latent=6, n_perturbations=66, n_heldout=6, n_cells_per_perturbation=150,
               n_genes=80, seed=0),
    "full": dict(n_latent=15, n_perturbations=100, n_heldout=20,
                 n_cells_per_perturbation=500, n_genes=100, seed=0),
}
#: How the book trains every model on that screen (``model.train`` arguments). Full scale:
#: the package's defaults (``max_epochs=None``: the epochs ``train()`` chooses). CI scale:
#: 30 epochs of minibatches of 64 cells (about 4,300 steps, as many as 120 epochs of the
#: default 256-cell minibatches).
TRAINING = {"CI": dict(max_epochs=30, batch_size=64), "full": dict(max_epochs=None)}


def scale() -> str:
    """``"full"`` when ``SVAE_LITE_FULL=1``, else ``"CI"``: the key of :data:`SIMULATION`."""
    return "full" if full_scale() else "CI"


def simulation() -> dict:
    """The book's simulation at this scale (a copy of :data:`SIMULATION`'s entry)."""
    return dict(SIMULATION[scale()])


def training() -> dict:
    """The book's training arguments at this scale (a copy of :data:`TRAINING`'s entry)."""
    return dict(TRAINING[scale()])


# ------------------------------------------------------------------- chapter parameters
#: svae_lite's model classes by name, as exported by the package (``sl.VAE``, ...).
MODEL_NAMES = tuple(
    name for name in sl.__all__
    if isinstance(getattr(sl, name), type) and issubclass(getattr(sl, name), sl.ShiftModel)
    and getattr(sl, name) is not sl.ShiftModel
)

#: Kind of every parameter name :func:`check_parameters` knows without being told.
PARAMETER_KINDS = {
    "seed": "seed", "seeds": "seeds",
    "model": "model", "models": "models", "model_names": "models",
    "n_heldout": "int0", "n_layers": "int0", "n_epochs_kl_warmup": "int0",
    "n_targets": "int_range",
    "lr": "positive", "prior_lr": "positive", "sparsity": "positive", "beta": "positive",
    "target_scale": "positive", "library_size": "positive", "nb_dispersion": "positive",
    "penalty_weight": "positive",
    "shift_mean": "nonnegative", "shift_sd": "nonnegative", "library_sd": "nonnegative",
    "kl_free_bits": "nonnegative",
    "train_size": "fraction", "dense_fraction": "fraction", "dropout_rate": "fraction",
    "likelihood": "likelihood", "early_stopping": "bool",
    "max_epochs": "int", "batch_size": "int",
}

_KIND_HELP = {
    "int": "an integer >= 1", "int0": "an integer >= 0", "positive": "a finite number > 0",
    "nonnegative": "a finite number >= 0", "fraction": "a number in [0, 1]",
    "bool": "True or False", "str": "a string", "seed": "an integer >= 0",
    "seeds": "a non-empty list of distinct integers >= 0",
    "ints": "a non-empty list of integers >= 1",
    "model": f"one of {list(MODEL_NAMES)}",
    "models": f"a non-empty list of names from {list(MODEL_NAMES)}",
    "likelihood": "'nb' or 'poisson'",
    "int_range": "a pair (low, high) of integers with 1 <= low <= high",
    "epochs": "an integer >= 1, or None (the epochs model.train() chooses)",
    "path": "a path (string)",
}


def _kind_of(name: str, kinds: dict) -> str | None:
    if name in kinds:
        return kinds[name]
    if name in PARAMETER_KINDS:
        return PARAMETER_KINDS[name]
    if name.startswith("n_") or name.endswith("_epochs"):
        return "int"
    if name.endswith("_lr"):
        return "positive"
    if name.endswith("_fraction"):
        return "fraction"
    if name.endswith(("_dir", "_path")):
        return "path"
    return None


def _as_int(v) -> int | None:
    """``v`` as a Python int when it is an integer or an integral float (``3.0``), else None.

    The same rule as the package's own checks (``max_epochs=3.0`` trains 3 epochs); bools,
    strings and non-integral or non-finite floats are not integers.
    """
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    return int(v) if float(v).is_integer() else None


def _check_one(name: str, value, kind: str):
    bad = ValueError(
        f"Invalid parameter {name}={value!r}: it must be {_KIND_HELP.get(kind, kind)}. "
        f"Set it in the chapter's parameters cell or with `papermill ... -p {name} VALUE`."
    )
    if kind in ("seeds", "ints", "models", "int_range") and isinstance(value, str):
        try:  # `papermill -p seeds "[0, 1]"` passes the list as a string
            value = json.loads(value)
        except json.JSONDecodeError:
            raise bad from None
        if isinstance(value, str):
            raise bad
    if kind == "epochs":
        return None if value is None else _check_one(name, value, "int")
    if kind in ("int", "int0", "seed"):
        v = _as_int(value)
        if v is None or v < (1 if kind == "int" else 0):
            raise bad
        return v
    if kind in ("positive", "nonnegative", "fraction"):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise bad
        v = float(value)
        if (not np.isfinite(v) or v < 0 or (kind == "positive" and v == 0)
                or (kind == "fraction" and v > 1)):
            raise bad
        return v
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise bad
        return bool(value)
    if kind in ("str", "path"):
        if not isinstance(value, (str, os.PathLike)) or (kind == "str" and not isinstance(value, str)):
            raise bad
        return value
    if kind in ("seeds", "ints"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise bad
        vals = [_as_int(v) for v in value]
        low = 0 if kind == "seeds" else 1
        if not vals or not all(v is not None and v >= low for v in vals):
            raise bad
        if kind == "seeds" and len(set(vals)) != len(vals):
            raise bad
        return vals
    if kind == "model":
        if value not in MODEL_NAMES:
            raise bad
        return value
    if kind == "models":
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise bad
        vals = list(value)
        if not vals or not all(v in MODEL_NAMES for v in vals):
            raise bad
        return vals
    if kind == "likelihood":
        if value not in ("nb", "poisson"):
            raise bad
        return value
    if kind == "int_range":
        try:
            lo, hi = value
        except (TypeError, ValueError):
            raise bad from None
        lo, hi = _as_int(lo), _as_int(hi)
        if lo is None or hi is None or not 1 <= lo <= hi:
            raise bad
        return (lo, hi)
    if kind.startswith("choice:"):
        choices = kind[len("choice:"):].split("|")
        if value not in choices:
            raise ValueError(
                f"Invalid parameter {name}={value!r}: choose one of {choices}. Set it in the "
                f"chapter's parameters cell or with `papermill ... -p {name} VALUE`."
            )
        return value
    raise ValueError(
        f"Unknown parameter kind {kind!r} for {name!r}; kinds: {sorted(_KIND_HELP)} or 'choice:a|b'."
    )


def check_parameters(kinds: dict | None = None, **params) -> dict:
    """Validate a chapter's (papermill) parameters; call it first thing after the
    ``parameters`` cell so that a bad value fails at once with a message naming it.

    Example (the first code cells of a chapter)::

        # %% tags=["parameters"]
        n_epochs = 100
        seeds = [0, 1, 2]
        models = ["VAE", "SVAEPlus"]
        quick = True

        # %% tags=["remove-input"]
        globals().update(H.check_parameters(n_epochs=n_epochs, seeds=seeds, models=models,
                                            quick=quick, kinds={"quick": "bool"}))

    The kind of each parameter follows from its name: ``seed`` (integer >= 0), ``seeds``
    (list of distinct integers >= 0), ``model``/``models`` (names of svae_lite's model
    classes, :data:`MODEL_NAMES`), ``n_*`` and ``*_epochs`` (integers >= 1; ``n_heldout``,
    ``n_layers``, ``n_epochs_kl_warmup`` may be 0), ``lr``/``*_lr``, ``sparsity``, ``beta``
    (numbers > 0), ``*_fraction``, ``train_size``, ``dropout_rate`` (in [0, 1]),
    ``likelihood``, ``n_targets`` ((low, high)), ``*_dir``/``*_path`` (paths); see
    :data:`PARAMETER_KINDS`. Other names need ``kinds={name: kind}`` with kind one of
    ``int``, ``int0``, ``positive``, ``nonnegative``, ``fraction``, ``bool``, ``str``,
    ``path``, ``seed``, ``seeds``, ``ints``, ``model``, ``models``, ``likelihood``,
    ``int_range`` or ``"choice:a|b|c"``.

    Integers follow the package's own rule (``svae_lite`` accepts ``max_epochs=3.0``): every
    integer kind (``int``, ``int0``, ``seed``, and the items of ``seeds``, ``ints`` and
    ``int_range``) accepts an integral float and returns it as an int (``3.0`` -> ``3``),
    and rejects a non-integral one (``3.5``), a bool or a string.

    Returns
    -------
    dict of the values normalised (Python ints/floats, lists). Raises ``ValueError`` naming
    the first invalid parameter, or a parameter with no known kind.
    """
    kinds = dict(kinds or {})
    out = {}
    for name, value in params.items():
        kind = _kind_of(name, kinds)
        if kind is None:
            raise ValueError(
                f"check_parameters does not know the kind of parameter {name!r}; pass "
                f"kinds={{{name!r}: KIND}} with KIND one of {sorted(_KIND_HELP)} or 'choice:a|b'."
            )
        out[name] = _check_one(name, value, kind)
    return out


# ------------------------------------------------------------------- cached fits
def _source_hash() -> str:
    """Hash of the installed svae_lite sources (every ``.py`` file of the package and its
    subpackages): a changed package invalidates cached fits."""
    pkg = Path(sl.__file__).parent
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(p.relative_to(pkg).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _key(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fit(cls, adata, data_key: dict, n_latent: int, max_epochs: int, seed: int = 0,
        model_kwargs: dict | None = None, **train_kwargs):
    """Train ``cls`` on ``adata`` with the public API, or load the same fit from the cache.

    Does exactly::

        cls.setup_anndata(adata, perturbation_key="perturbation", control="control")
        model = cls(adata, n_latent=n_latent, **model_kwargs)
        model.train(max_epochs=max_epochs, seed=seed, enable_progress_bar=False, **train_kwargs)

    and saves the model under ``_build/cache/<key>``, where the key hashes ``data_key``
    (whatever identifies the data, e.g. the simulation's parameters), the model class, every
    argument, and the svae_lite sources. A later call with the same key loads it instead
    (``cls.load(path, adata=adata)``). ``SVAE_LITE_NO_CACHE=1`` disables the cache. A file
    lock per key makes a second process that asks for the same fit at the same time (chapters
    executed in parallel by ``book/_execute.py``) wait and load it instead of training it too.

    Returns
    -------
    The trained model; ``model.fit_seconds_`` holds the training time of the original fit
    (seconds) and ``model.from_cache_`` whether it was loaded.
    """
    model_kwargs = dict(model_kwargs or {})
    key = _key({"cls": cls.__name__, "data": data_key, "n_latent": n_latent,
                "max_epochs": max_epochs, "seed": seed, "model": model_kwargs,
                "train": train_kwargs, "n_obs": adata.n_obs, "n_vars": adata.n_vars,
                "src": _source_hash()})
    path = CACHE / f"{cls.__name__}-{key}"
    use_cache = os.environ.get(NO_CACHE_ENV, "0") != "1"
    cls.setup_anndata(adata, perturbation_key="perturbation", control="control")
    if not use_cache:
        return _train(cls, adata, n_latent, max_epochs, seed, model_kwargs, train_kwargs)
    from filelock import FileLock

    CACHE.mkdir(parents=True, exist_ok=True)
    # one training per key: a chapter running at the same time waits for it, then loads it
    with FileLock(str(path) + ".lock"):
        if (path / "model.pt").exists():
            model = cls.load(str(path), adata=adata)
            model.fit_seconds_ = json.loads((path / "fit.json").read_text())["seconds"]
            model.from_cache_ = True
            return model
        model = _train(cls, adata, n_latent, max_epochs, seed, model_kwargs, train_kwargs)
        model.save(str(path), overwrite=True)
        (path / "fit.json").write_text(json.dumps({"seconds": model.fit_seconds_}))
    return model


def _train(cls, adata, n_latent, max_epochs, seed, model_kwargs, train_kwargs):
    model = cls(adata, n_latent=n_latent, **model_kwargs)
    t0 = time.time()
    model.train(max_epochs=max_epochs, seed=seed, enable_progress_bar=False, **train_kwargs)
    model.fit_seconds_ = time.time() - t0
    model.from_cache_ = False
    return model


def save_results(chapter: str, results: dict) -> Path:
    """Write a chapter's measured numbers to ``_build/results/<chapter>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{chapter}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=float))
    return path


def load_results() -> dict:
    """All chapters' results written so far in this runtime: ``{chapter: dict}``."""
    if not RESULTS.exists():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def chapter_results(needed: list[str]) -> tuple[dict, list[str], dict]:
    """The results of the ``needed`` chapters: this runtime's where a chapter has run here,
    else the book's committed reference results (:data:`REFERENCE_RESULTS`, written by the
    last CI-scale build), so that a chapter that summarises others also runs alone (on
    Colab every notebook has its own runtime).

    Returns
    -------
    ``(results, from_reference, reference_meta)``: ``{chapter: dict}``, the chapters read from
    the reference, and the reference's ``meta.json`` (date, commit, scale). Raises
    ``RuntimeError`` naming the chapters found in neither place.
    """
    results = {k: v for k, v in load_results().items() if k in needed}
    missing = [c for c in needed if c not in results]
    meta_path = REFERENCE_RESULTS / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    for chapter in missing:
        path = REFERENCE_RESULTS / f"{chapter}.json"
        if path.exists():
            results[chapter] = json.loads(path.read_text())
    absent = [c for c in needed if c not in results]
    if absent:
        raise RuntimeError(
            f"No results from chapter(s) {absent} under {RESULTS} nor in {REFERENCE_RESULTS}. "
            "Run those chapters first, in this runtime, then this one.")
    return results, missing, meta


def save_reference_results() -> Path:
    """Copy this build's results into :data:`REFERENCE_RESULTS` (to be committed), with a
    ``meta.json`` saying when, at which commit and at which scale they were made."""
    import platform
    import shutil
    import subprocess

    REFERENCE_RESULTS.mkdir(parents=True, exist_ok=True)
    for old in REFERENCE_RESULTS.glob("*.json"):
        old.unlink()
    for path in sorted(RESULTS.glob("*.json")):
        shutil.copy(path, REFERENCE_RESULTS / path.name)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    meta = {"date": time.strftime("%Y-%m-%d"), "commit": commit or "unknown",
            "scale": "full" if full_scale() else "CI", "svae_lite": sl.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
    (REFERENCE_RESULTS / "meta.json").write_text(json.dumps(meta, indent=2))
    return REFERENCE_RESULTS


def benchmark_results(name: str):
    """A committed full-scale benchmark result, ``benchmarks/results/<name>.csv``, and its
    ``.meta.json`` (date, machine, command, version): ``(DataFrame, dict)``, or
    ``(None, None)`` when the repository has no such file."""
    import pandas as pd

    path = ROOT / "benchmarks" / "results" / f"{name}.csv"
    if not path.exists():
        return None, None
    meta_path = path.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return pd.read_csv(path), meta


def interval(mean: float, low: float, high: float, verdict: str | None = None) -> str:
    """A paired difference as the book writes it, ``"+0.12 [-0.05, +0.29]"`` (mean and 95%
    interval, two decimals), with ``" tie"`` appended when ``verdict`` is "tie"."""
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]" + (" tie" if verdict == "tie" else "")


def benchmark_source(name: str, meta: dict) -> str:
    """Where the committed result ``benchmarks/results/<name>.csv`` came from, for the line
    printed above its table: the file, its date and machine, then its command."""
    return (f"benchmarks/results/{name}.csv, {meta.get('date', '?')}, {meta.get('machine', '?')}\n"
            f"  {meta.get('command', '')}")


#: The committed full-scale identifiability runs: file name and what its seeds were for.
FULL_SCALE_RUNS = {"identifiability_defaults_fresh": "fresh seeds",
                   "identifiability_defaults": "seeds 0-2: chose the defaults, constant learning rates"}


def full_scale_runs():
    """The committed full-scale runs of the models with their current defaults (rows without
    a ``note``), from every file of :data:`FULL_SCALE_RUNS`, fresh seeds first, with a
    ``source`` column ("fresh seeds (date)" or "seeds 0-2: chose the defaults (date)");
    an empty DataFrame when the repository has none."""
    import pandas as pd

    frames = []
    for name, role in FULL_SCALE_RUNS.items():
        df, meta = benchmark_results(name)
        if df is not None:
            df = df[df["note"].isna()] if "note" in df else df
            frames.append(df.assign(source=f"{role} ({meta.get('date', 'date not recorded')})"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def full_scale_paired(a: tuple[str, str], b: tuple[str, str], min_seeds: int = 2):
    """The paired difference a - b over the committed full-scale runs on fresh seeds that
    have both (:func:`full_scale_runs`); ``a`` and ``b`` are (model, column), e.g.
    ``("iVAE", "rotated_mcc_control")``. ``sl.metrics.paired_difference``'s dict, or None
    when fewer than ``min_seeds`` seeds have both."""
    import pandas as pd

    runs = full_scale_runs()
    if runs.empty:
        return None
    fresh = runs[runs["source"].str.startswith(FULL_SCALE_RUNS["identifiability_defaults_fresh"])]

    def by_seed(model, col):
        rows = fresh[fresh["model"] == model]
        return rows.set_index("seed")[col] if col in rows else pd.Series(dtype=float)

    both = pd.concat([by_seed(*a), by_seed(*b)], axis=1, join="inner").dropna()
    if len(both) < max(2, min_seeds):
        return None
    return sl.metrics.paired_difference(both.iloc[:, 0], both.iloc[:, 1])


def benchmark_paired(name: str) -> tuple[list, dict]:
    """The paired comparisons of a committed benchmark JSON, ``benchmarks/results/<name>.json``
    (its ``"paired"`` list: metric, comparison, n seeds, mean, low, high, verdict), and its
    ``.meta.json``; ``([], {})`` when the repository has no such file."""
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    if not path.exists():
        return [], {}
    meta_path = path.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return json.loads(path.read_text()).get("paired", []), meta


def elapsed(t0: float | None = None) -> str:
    """Wall-clock time since ``t0`` (default: since :func:`setup`) as a short string."""
    if t0 is None:
        if _T0 is None:
            raise RuntimeError("elapsed() without t0 needs setup() to have run first.")
        t0 = _T0
    s = time.time() - t0
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
