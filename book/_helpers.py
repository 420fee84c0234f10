"""Book plumbing shared by the chapters (not part of the ``svae_lite`` package).

- :func:`setup`: quiet training logs, one figure style, and the chapter's scale (CI or full).
- :func:`fit`: train a model with the public API, cached under ``_build/cache`` so that a
  model trained in one chapter is reused (not retrained) by the next ones.
- :func:`save_results` / :func:`load_results`: the numbers each chapter measured, as JSON
  under ``_build/results``, read by the closing chapter.

Everything scientific in the chapters goes through ``import svae_lite as sl``; this module
only saves time and keeps the chapters short.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
CACHE = BUILD / "cache"
RESULTS = BUILD / "results"
FULL_ENV = "SVAE_LITE_FULL"
NO_CACHE_ENV = "SVAE_LITE_NO_CACHE"


def full_scale() -> bool:
    """True when the environment variable ``SVAE_LITE_FULL=1`` asks for full-scale values."""
    value = os.environ.get(FULL_ENV, "0").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{FULL_ENV}={value!r}: set it to 1 (full scale) or 0 / unset (CI scale).")
    return value == "1"


def setup():
    """Quiet the trainer's logs, set the figure style, and return the chapter's start time."""
    import matplotlib as mpl
    import seaborn as sns

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message="IProgress not found")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import scvi

        scvi.settings.verbosity = logging.ERROR
    except ImportError:  # pragma: no cover
        pass
    try:  # figures inline even when MPLBACKEND=Agg is set (as in CI)
        from IPython import get_ipython

        if get_ipython() is not None:
            get_ipython().run_line_magic("matplotlib", "inline")
    except ImportError:  # pragma: no cover
        pass
    sns.set_theme(context="notebook", style="ticks", font_scale=0.9)
    mpl.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "figure.figsize": (5.5, 3.8)})
    return time.time()


def _source_hash() -> str:
    """Hash of the installed svae_lite sources: a changed package invalidates cached fits."""
    import svae_lite

    h = hashlib.sha256()
    for p in sorted(Path(svae_lite.__file__).parent.glob("*.py")):
        h.update(p.name.encode())
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
    (``cls.load(path, adata=adata)``). ``SVAE_LITE_NO_CACHE=1`` disables the cache.

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
    if use_cache and (path / "model.pt").exists():
        model = cls.load(str(path), adata=adata)
        meta = json.loads((path / "fit.json").read_text())
        model.fit_seconds_ = meta["seconds"]
        model.from_cache_ = True
        return model
    model = cls(adata, n_latent=n_latent, **model_kwargs)
    t0 = time.time()
    model.train(max_epochs=max_epochs, seed=seed, enable_progress_bar=False, **train_kwargs)
    model.fit_seconds_ = time.time() - t0
    model.from_cache_ = False
    if use_cache:
        path.mkdir(parents=True, exist_ok=True)
        model.save(str(path), overwrite=True)
        (path / "fit.json").write_text(json.dumps({"seconds": model.fit_seconds_}))
    return model


def save_results(chapter: str, results: dict) -> Path:
    """Write a chapter's measured numbers to ``_build/results/<chapter>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{chapter}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=float))
    return path


def load_results() -> dict:
    """All chapters' results written so far: ``{chapter: dict}``."""
    if not RESULTS.exists():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def elapsed(t0: float) -> str:
    """Wall-clock time since ``t0`` as a short string."""
    s = time.time() - t0
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
