"""The paired tables of benchmarks/real_data.py on small fake results (no data, no training)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import svae_lite.metrics  # noqa: F401  (paired_rows uses it; imported once for the whole suite)

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "real_data.py"


@pytest.fixture(scope="module")
def rd():
    spec = importlib.util.spec_from_file_location("real_data_under_test", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _papalexi(model, seed, shift, cells="a"):
    ll = {str(n): -300.0 + seed + shift for n in (10, 50, None)}
    return {"screen": "papalexi/ifng", "model": model, "seed": seed, "ll_seen": -200.0 + seed,
            "ll_untransferred": -310.0 + seed + shift, "cells": {"train": "t", "eval": cells},
            "transfer": {"ll": ll, "cells": {"pool 10": "p"}}}


def _norman(model, seed, pearson):
    doubles = {d: {"model": {"pearson_top": p, "mse_all": 0.1 + seed / 100},
                   "additive": {"pearson_top": 0.9, "mse_all": 0.05}}
               for d, p in (("A+B", pearson), ("A+C", np.nan))}  # NaN: a constant prediction, counts as 0
    return {"screen": "norman", "model": model, "seed": seed, "doubles": doubles}


def test_paired_rows_differences_verdicts_and_seeds(rd):
    shifts = {0: 1.0, 1: 1.2, 2: 0.9}
    runs = [_papalexi("iVAE", s, 0.0) for s in shifts] + [_papalexi("SVAEPlus", s, d) for s, d in shifts.items()]
    runs.append(_papalexi("SVAEPlus", 3, 5.0))  # no iVAE run for seed 3: not paired
    rows = {(r["metric"], r["comparison"]): r for r in rd.paired_rows(runs)}
    t10 = rows[("held-out, transfer 10", "SVAEPlus - iVAE")]
    assert t10["n"] == 3 and t10["seeds"] == [0, 1, 2]
    assert t10["mean"] == pytest.approx(np.mean(list(shifts.values())))
    assert t10["low"] > 0 and t10["verdict"] == "a > b" and t10["better"] == "higher"
    seen = rows[("seen perturbations", "SVAEPlus - iVAE")]
    assert seen["mean"] == pytest.approx(0.0) and seen["verdict"] == "tie"
    assert not any("SVAE - iVAE" == c for _, c in rows)  # SVAE did not run
    assert rd.pairing_problems(runs) == []


def test_norman_model_minus_additive_counts_constant_predictions_as_zero(rd):
    runs = [_norman(m, s, p) for s in (0, 1) for m, p in (("iVAE", 0.5), ("SVAEPlus", 0.7))]
    rows = {(r["metric"], r["comparison"]): r for r in rd.paired_rows(runs)}
    # mean over doubles: (0.5 + 0) / 2 against the additive (0.9 + 0.9) / 2
    assert rows[("pearson_top", "iVAE - additive")]["mean"] == pytest.approx(0.25 - 0.9)
    assert rows[("pearson_top", "SVAEPlus - iVAE")]["mean"] == pytest.approx(0.1)
    mse = rows[("mse_all", "SVAEPlus - additive")]
    assert mse["better"] == "lower" and mse["n"] == 2
    assert "difference [95%]" in rd.paired_table(list(rows.values()))


def test_pairing_problems_name_the_cell_set_that_differs(rd):
    runs = [_papalexi("iVAE", 0, 0.0), _papalexi("SVAEPlus", 0, 1.0, cells="b")]
    (problem,) = rd.pairing_problems(runs)
    assert "seed 0 eval" in problem and "SVAEPlus" in problem


def test_network_variant_is_paired_against_both_priors(rd):
    shifts = {0: 0.5, 1: 0.6, 2: 0.4}
    runs = [_papalexi("iVAE", s, 0.0) for s in shifts]
    runs += [_papalexi("iVAE/sparse-networks", s, d) for s, d in shifts.items()]
    runs += [_papalexi("SVAEPlus", s, 2 * d) for s, d in shifts.items()]
    rows = {(r["metric"], r["comparison"]): r for r in rd.paired_rows(runs)}
    nets = rows[("held-out, transfer 10", "iVAE/sparse-networks - iVAE")]
    prior = rows[("held-out, transfer 10", "SVAEPlus - iVAE/sparse-networks")]
    assert nets["mean"] == pytest.approx(0.5) and prior["mean"] == pytest.approx(0.5)
    assert rd.model_class("iVAE/sparse-networks") == "iVAE" and rd.model_class("SVAE") == "SVAE"
    assert rd.check_models(["iVAE/sparse-networks", "SVAEPlus"]) == ["iVAE/sparse-networks", "SVAEPlus"]
    with pytest.raises(SystemExit, match="unknown model 'iVAE/sparse'"):
        rd.check_models(["iVAE/sparse"])
