"""The book's helpers (book/_helpers.py): the chapters' parameter checks, the start-up of a
chapter, the cache key of trained models and the cell cap used on the real screens."""
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

import svae_lite as sl

BOOK = Path(__file__).resolve().parent.parent / "book"
if not (BOOK / "_helpers.py").exists():
    pytest.skip("no book in this checkout", allow_module_level=True)
sys.path.insert(0, str(BOOK))
try:
    import _helpers as H
finally:
    sys.path.remove(str(BOOK))

check_parameters = H.check_parameters


# ------------------------------------------------------------------- chapter parameters
def test_model_names_are_the_public_model_classes():
    assert H.MODEL_NAMES == ("VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus")
    for name in H.MODEL_NAMES:
        assert issubclass(getattr(sl, name), sl.ShiftModel)


def test_check_parameters_accepts_and_normalises():
    out = check_parameters(n_epochs=100, seeds=(0, 1, 2), models=["VAE", "SVAEPlus"], lr=1e-3,
                           n_heldout=0, train_size=1, likelihood="nb", n_targets=[1, 3],
                           data_dir="../shared/data", quick=np.bool_(True),
                           dataset="papalexi", kinds={"quick": "bool", "dataset": "choice:papalexi|norman"})
    assert out["seeds"] == [0, 1, 2] and out["train_size"] == 1.0 and out["n_targets"] == (1, 3)
    assert out["quick"] is True and isinstance(out["n_epochs"], int)
    # papermill -p passes lists as strings
    assert check_parameters(seeds="[0, 1]", models='["VAE"]') == {"seeds": [0, 1], "models": ["VAE"]}


def test_integral_floats_are_integers():
    out = check_parameters(n_epochs=3.0, seed=np.float64(0.0), n_heldout=np.int64(2),
                           seeds=[0.0, 1], n_targets=(1.0, 3), transfer_cells="[5.0, 20]",
                           kinds={"transfer_cells": "ints"})
    assert out == {"n_epochs": 3, "seed": 0, "n_heldout": 2, "seeds": [0, 1], "n_targets": (1, 3),
                   "transfer_cells": [5, 20]}
    assert all(type(v) is int for v in (out["n_epochs"], out["seed"], out["n_heldout"], *out["seeds"]))


@pytest.mark.parametrize("value", [5, 5.0, np.int64(5), 5.5, float("inf"), "5", 0])
def test_integers_agree_with_the_package(value):
    """An integer parameter is accepted by the book exactly when svae_lite accepts it."""
    try:
        book = check_parameters(n_genes=value)["n_genes"]
    except ValueError:
        book = None
    try:
        adata = sl.simulate(n_latent=3, n_perturbations=1, n_cells_per_perturbation=5,
                            n_genes=value, n_heldout=0, seed=0)
        package = adata.n_vars
    except (TypeError, ValueError):
        package = None
    assert book == package


@pytest.mark.parametrize("params,msg", [
    (dict(n_epochs=0), "n_epochs=0: it must be an integer >= 1"),
    (dict(n_epochs="200"), "n_epochs='200'"),
    (dict(n_epochs=2.5), "n_epochs=2.5"),
    (dict(n_epochs=float("nan")), "n_epochs=nan"),
    (dict(max_epochs=True), "max_epochs=True"),
    (dict(seed=-1), "seed=-1"),
    (dict(seed=0.5), "seed=0.5"),
    (dict(seeds=[]), "seeds=\\[\\]"),
    (dict(seeds=[0, 0]), "distinct"),
    (dict(seeds=[0, 0.0]), "distinct"),
    (dict(seeds=[0, 1.5]), "seeds=\\[0, 1.5\\]"),
    (dict(models=["VAE", "scVI"]), "models=\\['VAE', 'scVI'\\]"),
    (dict(models="VAE"), "models='VAE'"),
    (dict(seeds="[0, 1"), "seeds='\\[0, 1'"),
    (dict(lr=0.0), "lr=0.0"),
    (dict(prior_lr=float("nan")), "prior_lr=nan"),
    (dict(dense_fraction=1.5), "dense_fraction=1.5"),
    (dict(likelihood="zinb"), "likelihood='zinb'"),
    (dict(n_targets=(3, 1)), "n_targets=\\(3, 1\\)"),
    (dict(n_targets=(1, 2.5)), "n_targets=\\(1, 2.5\\)"),
    (dict(dataset="replogle", kinds={"dataset": "choice:papalexi|norman"}), "choose one of \\['papalexi', 'norman'\\]"),
    (dict(mystery=3), "does not know the kind of parameter 'mystery'"),
])
def test_check_parameters_rejects(params, msg):
    with pytest.raises(ValueError, match=msg):
        check_parameters(**params)


# ------------------------------------------------------------------- set-up and plumbing
def test_setup_quiets_and_starts_the_clock(monkeypatch):
    calls = []
    monkeypatch.setattr(H.sl, "quiet", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(H, "_T0", None)
    with pytest.raises(RuntimeError, match="setup"):
        H.elapsed()
    with matplotlib.rc_context():  # leave the figure style of later tests alone
        assert H.setup() is None  # nothing for the set-up cell to display
    assert calls == [()] and abs(time.time() - H._T0) < 60
    assert H.elapsed().endswith(" s") and H.elapsed(H._T0 - 600) == "10.0 min"


def test_full_scale(monkeypatch):
    monkeypatch.delenv(H.FULL_ENV, raising=False)
    assert H.full_scale() is False
    monkeypatch.setenv(H.FULL_ENV, "1")
    assert H.full_scale() is True
    monkeypatch.setenv(H.FULL_ENV, "yes")
    with pytest.raises(ValueError, match="SVAE_LITE_FULL='yes'"):
        H.full_scale()


def test_source_hash_covers_subpackages(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "datasets").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "datasets" / "loaders.py").write_text("A = 1\n")
    (pkg / "datasets" / "notes.txt").write_text("not code")

    class Fake:
        __file__ = str(pkg / "__init__.py")

    monkeypatch.setattr(H, "sl", Fake)
    h0 = H._source_hash()
    (pkg / "datasets" / "notes.txt").write_text("changed, still not code")
    assert H._source_hash() == h0
    (pkg / "datasets" / "loaders.py").write_text("A = 2\n")
    assert H._source_hash() != h0


# ------------------------------------------------------------------- the book's simulation
def test_one_simulation_and_training_per_scale(monkeypatch):
    monkeypatch.delenv(H.FULL_ENV, raising=False)
    assert H.scale() == "CI" and H.simulation() == H.SIMULATION["CI"]
    monkeypatch.setenv(H.FULL_ENV, "1")
    assert H.scale() == "full" and H.training() == H.TRAINING["full"]
    # full scale is the simulator's defaults (the README's table)
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(sl.simulate).parameters.items()}
    assert all(defaults[k] == v for k, v in H.SIMULATION["full"].items())
    H.simulation()["n_latent"] = -1  # a copy: callers cannot change the book's settings
    assert H.SIMULATION["full"]["n_latent"] == 15


def test_epochs_kind_accepts_none_and_integers_only():
    assert check_parameters(max_epochs=None, kinds={"max_epochs": "epochs"}) == {"max_epochs": None}
    assert check_parameters(max_epochs=3.0, kinds={"max_epochs": "epochs"}) == {"max_epochs": 3}
    with pytest.raises(ValueError, match="max_epochs"):
        check_parameters(max_epochs=0, kinds={"max_epochs": "epochs"})


# ------------------------------------------------------------------- results and reference
def test_chapter_results_fall_back_to_the_reference_and_say_so(tmp_path, monkeypatch):
    import json

    here, ref = tmp_path / "results", tmp_path / "reference"
    here.mkdir()
    ref.mkdir()
    (here / "a.json").write_text(json.dumps({"x": 1}))
    (ref / "a.json").write_text(json.dumps({"x": 0}))
    (ref / "b.json").write_text(json.dumps({"y": 2}))
    (ref / "meta.json").write_text(json.dumps({"date": "2026-01-01", "scale": "CI"}))
    monkeypatch.setattr(H, "RESULTS", here)
    monkeypatch.setattr(H, "REFERENCE_RESULTS", ref)
    results, from_ref, meta = H.chapter_results(["a", "b"])
    assert results == {"a": {"x": 1}, "b": {"y": 2}}  # this runtime's first
    assert from_ref == ["b"] and meta["date"] == "2026-01-01"
    with pytest.raises(RuntimeError, match=r"\['c'\]"):
        H.chapter_results(["a", "c"])


# ------------------------------------------------------------------- executing pages alone
def test_executed_page_is_found_by_the_book_build(tmp_path, monkeypatch):
    """book/_execute.py runs a page in a fresh folder and stores it where the build's
    jupyter-cache finds it (a mismatch would make the build execute every page again)."""
    pytest.importorskip("nbclient")
    sys.path.insert(0, str(BOOK))
    try:
        import _execute as E
    finally:
        sys.path.remove(str(BOOK))
    page = tmp_path / "page.py"
    page.write_text('# %% [markdown]\n# A page\n\n# %% tags=["parameters"]\nx = 2\n\n'
                    '# %%\nimport os\nprint(x * 21, os.getcwd())\n')
    monkeypatch.setattr(E, "JUPYTER_CACHE", tmp_path / "cache")
    nb, seconds, source = E.execute(page, timeout=60)
    out = nb.cells[2].outputs[0]["text"]
    assert out.startswith("42 ") and str(tmp_path) not in out  # a fresh working folder
    E.store(page, source, nb, seconds)
    E.check_cached(page)
    page.write_text(page.read_text().replace("x * 21", "x * 20"))
    with pytest.raises(RuntimeError, match="would not find"):
        E.check_cached(page)


def test_html_check_finds_figures_without_caption_or_alt(tmp_path):
    sys.path.insert(0, str(BOOK))
    try:
        import _check_html as C
    finally:
        sys.path.remove(str(BOOK))
    good = ('<div class="cell_output"><figure><img alt="Bars of MCC per model" '
            'src="../_images/ab12.png"><figcaption>MCC per model.</figcaption></figure></div>')
    bad = '<div class="cell_output"><img alt="ab12" src="../_images/ab12.png"></div>'
    (tmp_path / "good.html").write_text(f"<html><body>{good}</body></html>")
    assert C.problems(tmp_path) == []
    (tmp_path / "bad.html").write_text(f"<html><body>{bad}</body></html>")
    assert C.problems(tmp_path) == ["bad.html: ../_images/ab12.png: no caption",
                                    "bad.html: ../_images/ab12.png: no alt text"]


def test_benchmark_paired_reads_the_paired_list_and_meta(tmp_path, monkeypatch):
    import json

    res = tmp_path / "benchmarks" / "results"
    res.mkdir(parents=True)
    paired = [{"metric": "held-out", "comparison": "SVAEPlus - iVAE", "n": 5, "mean": 0.4,
               "low": 0.1, "high": 0.7, "verdict": "a > b"}]
    (res / "x.json").write_text(json.dumps({"runs": [], "paired": paired}))
    (res / "x.meta.json").write_text(json.dumps({"date": "2026-12-02"}))
    monkeypatch.setattr(H, "ROOT", tmp_path)
    assert H.benchmark_paired("x") == (paired, {"date": "2026-12-02"})
    assert H.benchmark_paired("missing") == ([], {})


def test_full_scale_paired_pairs_fresh_seeds_only(tmp_path, monkeypatch):
    import json

    res = tmp_path / "benchmarks" / "results"
    res.mkdir(parents=True)
    fresh = pd.DataFrame({"model": ["SVAEPlus", "iVAE"] * 3, "seed": [20, 20, 21, 21, 22, 22],
                          "mcc_control": [0.66, 0.34, 0.63, 0.38, 0.62, 0.35],
                          "rotated_mcc_control": [np.nan, 0.56, np.nan, 0.59, np.nan, 0.57]})
    fresh.to_csv(res / "identifiability_defaults_fresh.csv", index=False)
    (res / "identifiability_defaults_fresh.meta.json").write_text(json.dumps({"date": "d"}))
    # seeds that chose the defaults never enter the pairs
    pd.DataFrame({"model": ["SVAEPlus", "iVAE"], "seed": [0, 0], "mcc_control": [0.9, 0.1],
                  "rotated_mcc_control": [np.nan, 0.1]}).to_csv(
        res / "identifiability_defaults.csv", index=False)
    monkeypatch.setattr(H, "ROOT", tmp_path)
    p = H.full_scale_paired(("SVAEPlus", "mcc_control"), ("iVAE", "rotated_mcc_control"))
    assert p["n"] == 3
    assert p["mean"] == pytest.approx(np.mean([0.66 - 0.56, 0.63 - 0.59, 0.62 - 0.57]))
    assert H.full_scale_paired(("SVAEPlus", "mcc_control"), ("iVAE", "mcc_control"),
                               min_seeds=5) is None
    assert H.full_scale_paired(("SVAEPlus", "mcc_control"), ("VAE", "mcc_control")) is None
