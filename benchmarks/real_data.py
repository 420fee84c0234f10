"""Real screens: held-out perturbations, transfer learning, double perturbations, new cell lines.

Trains the five models (VAE, BetaVAE, iVAE, SVAE, SVAEPlus) with their default training
settings on three real screens and prints the comparison tables:

1. **Papalexi 2021** (THP-1 knockouts): a set of perturbations is held out (``--split
   ifng``: the IFN-gamma pathway IFNGR1, IFNGR2, JAK2, STAT1, IRF1; ``random``: a random
   third). Half of each held-out perturbation's cells are for evaluation, the other half a
   pool for transfer. Reported: importance-weighted log-likelihood (IWELBO, nats per cell)
   of the evaluation cells *before* transfer (the untransferred model: the cells evaluated
   under the control prior N(0, I)) and after ``model.transfer`` with 10, 50 or all pool
   cells per new perturbation; the log-likelihood of unseen cells of *seen* perturbations;
   per-perturbation learned targets; the gene program of each latent (which genes move when
   one latent moves, through the decoder).
2. **Norman 2019** (K562 CRISPRa): trained on control + single perturbations only; the
   double perturbations ``A+B`` whose genes were both measured alone are predicted with
   ``model.predict("A+B")`` (composed mechanisms). Effects (a group minus control) are
   compared on one scale, the log of mean expression normalised to 10^4 counts per cell
   (observed: ``svae_lite.metrics.pseudobulk``; predicted: ``log_expression`` of the
   model's expected counts), with ``svae_lite.metrics.effect_scores`` (Pearson and RMSE on
   the 20 genes the double changes most, Pearson and MSE on all genes; the book's chapter 6
   scores the same way), against three baselines: the sum of the observed single effects
   (additive), the observed effect of the single that correlates best with the double
   (best single) and no change (control).
3. **McFaline-Figueroa 2023** (glioblastoma CRISPRi): trained on two cell lines, evaluated
   on the third: under the control prior, under the perturbations' training priors
   (zero-shot: same perturbation, new line) and after transfer of line-specific priors
   (``U87MG:<perturbation>``) with 10, 50 or all pool cells per group.

Each (screen, model, seed) is one process with one torch thread (``--jobs`` in parallel).
The defaults run in about 15-20 minutes on 2 CPU cores; ``--quick`` is a smoke run. With
several ``--seeds`` the tables show mean +- sd over seeds, and the *paired* tables the mean
difference over seeds between two models (SVAEPlus - iVAE, SVAE - iVAE; with
``iVAE/sparse-networks`` in ``--models``, the iVAE's prior with the sparse models' network
settings, also SVAEPlus - iVAE/sparse-networks and iVAE/sparse-networks - iVAE, which split
sVAE+'s difference into its prior's and its networks' parts; on Norman also each model -
the additive baseline) with a 95% t interval and a verdict
(``svae_lite.metrics.paired_difference``). Every model of a seed sees the same data split,
the same cells and the same random stream for the IWELBO: the runs record a fingerprint of
each cell set they used (``cells``) and the paired tables check that they agree.

    python benchmarks/real_data.py                         # everything, default epochs
    python benchmarks/real_data.py --screens papalexi --split random --papalexi-epochs 60
    python benchmarks/real_data.py --quick

Needs the data directory (``SVAE_LITE_DATA``, see data/README.md). Writes every number to
``benchmarks/results/real_data.json`` (``--out``; rewritten as each run finishes, so an
interrupted invocation keeps its finished runs), the paired tables under its key
``paired``, and a ``.meta.json`` beside it (date, machine, command, commit).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MODELS = ["VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus"]
SHIFT_MODELS = {"iVAE", "SVAE", "SVAEPlus"}
SPARSE_MODELS = {"SVAE", "SVAEPlus"}
#: ``--models`` also takes a model with the other presets' network settings, e.g.
#: ``iVAE/sparse-networks`` (``_common.NETWORK_VARIANTS``): the iVAE's prior with the sparse
#: models' encoder dropout 0 and free bits, which tells the prior's effect from the networks'.


def model_class(label: str) -> str:
    """The svae_lite class of a model label (``"iVAE/sparse-networks"`` -> ``"iVAE"``)."""
    return C.network_variant(label)[0]


def check_models(labels) -> list[str]:
    """The ``--models`` labels, each a class of MODELS with an optional network suffix."""
    for label in labels:
        name, _, variant = label.partition("/")
        if name not in MODELS or (variant and variant not in C.NETWORK_VARIANTS):
            raise SystemExit(f"--models: unknown model {label!r}; use {', '.join(MODELS)}, "
                             f"optionally with /{' or /'.join(C.NETWORK_VARIANTS)}")
    return list(labels)
SIZES = [10, 50, None]  # cells per new perturbation for transfer (None: the whole pool)


# ================================================================ helpers (run in the workers)
def split_pool_eval(adata, key: str, seed: int):
    """Half of each group's cells for evaluation, the rest (shuffled) as a transfer pool."""
    rng = np.random.default_rng(seed)
    pool, ev = [], []
    for _, idx in adata.obs.groupby(key, observed=True).indices.items():
        idx = rng.permutation(idx)
        half = len(idx) // 2
        ev.append(idx[:half])
        pool.append(idx[half:])
    return adata[np.concatenate(pool)].copy(), adata[np.sort(np.concatenate(ev))].copy()


def cells_id(adata) -> str:
    """Fingerprint of a cell set (its cell names in order): equal across models when they
    saw the same cells."""
    return hashlib.sha1("\n".join(map(str, adata.obs_names)).encode()).hexdigest()[:12]


def relabel(adata, key: str, value=None, prefix=None):
    out = adata.copy()
    lab = out.obs[key].astype(str)
    out.obs[key] = pd.Categorical(np.full(out.n_obs, value) if value is not None else prefix + lab)
    return out


def iwelbo(model, adata, args, seed):
    """Per-cell IWELBO (nats) with common random numbers: every model and every variant of
    the evaluation cells sees the same random stream, so differences are not sampling noise."""
    import torch

    torch.manual_seed(seed)
    return model.get_marginal_ll(adata, n_samples=args.n_samples)


def predict_each(model, names, args, library, seed):
    """model.predict for each name with the same seed (common random numbers): a model whose
    prior ignores the label predicts exactly the control mean."""
    return pd.concat([model.predict([n], n_cells=args.predict_cells, library_size=library, seed=seed)
                      for n in names])


def targets_of(model, threshold: float = 0.5) -> dict:
    """Perturbation -> list of targeted latent indices (probability > threshold)."""
    t = model.get_intervention_targets()
    return {p: [int(c.split("_")[1]) for c in t.columns[t.loc[p].to_numpy() > threshold]] for p in t.index}


def gene_programs(model, n_top: int = 5, delta: float = 2.0) -> dict:
    """For each latent j: genes whose decoded expression changes most when z_j goes from
    -delta to +delta with the other latents at 0 (log2 fold change, median library)."""
    import torch

    module = model.module
    d = module.n_latent
    X = model.adata.X
    lib = float(np.median(np.asarray(X.sum(1)).ravel()))
    z = torch.zeros(2 * d, d)
    for j in range(d):
        z[j, j], z[d + j, j] = delta, -delta
    module.eval()
    with torch.no_grad():
        scale = module.generative(z.to(model.device), torch.full((2 * d, 1), np.log(lib)).to(model.device))["px_scale"].cpu().numpy()
    lfc = np.log2(scale[:d]) - np.log2(scale[d:])
    genes = np.asarray(model.adata.var_names)
    out = {}
    for j in range(d):
        order = np.argsort(lfc[j])
        out[j] = {"up": [[str(genes[g]), round(float(lfc[j, g]), 2)] for g in order[::-1][:n_top]],
                  "down": [[str(genes[g]), round(float(lfc[j, g]), 2)] for g in order[:n_top]],
                  "max_abs_lfc": round(float(np.abs(lfc[j]).max()), 3)}
    return out


def _fit(label, train, args, epochs, seed):
    import svae_lite as sl

    name, model_kw = C.network_variant(label)
    cls = getattr(sl, name)
    cls.setup_anndata(train, perturbation_key="perturbation", control="control")
    m = cls(train, n_latent=args.n_latent, **model_kw)
    t0 = time.time()
    m.train(max_epochs=epochs, seed=seed, enable_progress_bar=False, **C.lr_anneal_kwargs(args.lr_anneal))
    return m, time.time() - t0


def _transfer_curve(m, model, pool, ev, args, seed, key="perturbation"):
    """IWELBO (mean nats per evaluation cell) after transfer with each pool size, plus the
    per-group gains of the largest transfer and the transferred targets."""
    res = {"ll": {}, "seconds": {}, "cells": {}}
    if model_class(model) not in SHIFT_MODELS:
        return res
    for n in SIZES:
        sub = C.first_n_per_group(pool, key, n)
        res["cells"][f"pool {n or 'all'}"] = cells_id(sub)
        t0 = time.time()
        t = m.transfer(sub, max_epochs=args.transfer_epochs, seed=seed, enable_progress_bar=False)
        res["seconds"][str(n)] = time.time() - t0
        ll = iwelbo(t, ev, args, seed)
        res["ll"][str(n)] = float(ll.mean())
        if n is None:
            lab = ev.obs[key].astype(str).to_numpy()
            res["ll_per_group"] = {g: float(ll[lab == g].mean()) for g in pd.unique(lab)}
            if model_class(model) in SPARSE_MODELS:
                tg = targets_of(t)
                res["targets"] = {g: tg[g] for g in pd.unique(lab)}
    return res


# ---------------------------------------------------------------- Papalexi
def papalexi_split(adata, split: str, seed: int) -> list[str]:
    import svae_lite as sl

    perts = sorted(set(adata.obs["perturbation"].astype(str)) - {"control"})
    if split == "ifng":
        return list(sl.datasets.PAPALEXI_IFNG_PATHWAY)
    if split == "random":
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(perts, size=len(perts) // 3, replace=False).tolist())
    raise ValueError(f"--split {split!r}: use 'ifng' or 'random'.")


def papalexi_cells(split: str, seed: int):
    """The cells of one Papalexi run: ``(held, train, seen, pool, ev)``: the held-out
    knockouts, the training cells, unseen cells of seen knockouts (10%), and each held-out
    knockout's transfer pool and evaluation halves."""
    import svae_lite as sl

    adata = sl.datasets.papalexi2021()
    held = papalexi_split(adata, split, seed)
    lab = adata.obs["perturbation"].astype(str)
    rest = adata[~lab.isin(held).to_numpy()].copy()
    new = adata[lab.isin(held).to_numpy()].copy()
    new.obs["perturbation"] = new.obs["perturbation"].astype(str)
    rng = np.random.default_rng(seed)
    test_seen = rng.random(rest.n_obs) < 0.1
    train, seen = rest[~test_seen].copy(), rest[test_seen].copy()
    pool, ev = split_pool_eval(new, "perturbation", seed)
    return held, train, seen, pool, ev


def run_papalexi(model, args, seed, split):
    held, train, seen, pool, ev = papalexi_cells(split, seed)
    m, secs = _fit(model, train, args, args.papalexi_epochs, seed)
    out = {"screen": f"papalexi/{split}", "model": model, "seed": seed, "held_out": held,
           "train_seconds": secs, "n_train_cells": int(train.n_obs), "n_eval_cells": int(ev.n_obs),
           "cells": {"train": cells_id(train), "seen": cells_id(seen), "eval": cells_id(ev)}}
    out["ll_seen"] = float(iwelbo(m, seen, args, seed).mean())
    ll0 = iwelbo(m, relabel(ev, "perturbation", value="control"), args, seed)
    out["ll_untransferred"] = float(ll0.mean())
    lab_ev = ev.obs["perturbation"].astype(str).to_numpy()
    out["ll_untransferred_per_group"] = {g: float(ll0[lab_ev == g].mean()) for g in held}
    out["transfer"] = _transfer_curve(m, model, pool, ev, args, seed)
    if model_class(model) in SPARSE_MODELS:
        out["targets"] = targets_of(m)
    out["gene_programs"] = gene_programs(m)
    return out


# ---------------------------------------------------------------- Norman
def norman_groups(adata):
    labels = set(adata.obs["perturbation"].astype(str))
    singles = sorted(p for p in labels if "+" not in p and p != "control")
    doubles = sorted(p for p in labels if "+" in p and set(p.split("+")) <= set(singles))
    return singles, doubles


def run_norman(model, args, seed):
    import svae_lite as sl

    adata = sl.datasets.norman2019()
    singles, doubles = norman_groups(adata)
    lab = adata.obs["perturbation"].astype(str)
    train = adata[lab.isin(singles + ["control"]).to_numpy()].copy()
    m, secs = _fit(model, train, args, args.norman_epochs, seed)
    library = float(np.median(np.asarray(train.X.sum(1)).ravel()))
    groups = ["control"] + singles + doubles
    obs = sl.metrics.pseudobulk(adata, groups=groups)
    pred = sl.metrics.log_expression(predict_each(m, groups, args, library, seed))
    obs_effect, pred_effect = obs - obs.loc["control"], pred - pred.loc["control"]
    score = sl.metrics.effect_scores
    res = {}
    for d in doubles:
        a, b = d.split("+")
        o = obs_effect.loc[d]
        res[d] = {
            "model": score(pred_effect.loc[d], o),
            "additive": score(obs_effect.loc[a] + obs_effect.loc[b], o),
            "best_single": max((score(obs_effect.loc[g], o) for g in (a, b)),
                               key=lambda r: np.nan_to_num(r["pearson_top"], nan=-np.inf)),
            "control": score(0.0 * o, o),
        }
    fit_singles = {s: score(pred_effect.loc[s], obs_effect.loc[s]) for s in singles}
    out = {"screen": "norman", "model": model, "seed": seed, "train_seconds": secs,
           "doubles": res, "singles_fit": fit_singles, "cells": {"train": cells_id(train)}}
    if model_class(model) in SPARSE_MODELS:
        tg = targets_of(m)
        out["targets"] = tg
        out["double_targets"] = {d: sorted(set(tg[d.split("+")[0]]) | set(tg[d.split("+")[1]])) for d in doubles}
    return out


# ---------------------------------------------------------------- McFaline
def run_mcfaline(model, args, seed, target_line="U87MG"):
    import svae_lite as sl

    adata = sl.datasets.mcfaline2023()
    line = adata.obs["cell_type"].astype(str).to_numpy()
    train = adata[line != target_line].copy()
    new = adata[line == target_line].copy()
    new.obs["perturbation"] = new.obs["perturbation"].astype(str)
    pool, ev = split_pool_eval(new, "perturbation", seed)
    m, secs = _fit(model, train, args, args.mcfaline_epochs, seed)
    out = {"screen": "mcfaline", "model": model, "seed": seed, "train_lines": sorted(set(line) - {target_line}),
           "target_line": target_line, "train_seconds": secs, "n_eval_cells": int(ev.n_obs),
           "cells": {"train": cells_id(train), "eval": cells_id(ev)}}
    out["ll_control_prior"] = float(iwelbo(m, relabel(ev, "perturbation", value="control"), args, seed).mean())
    out["ll_zero_shot"] = float(iwelbo(m, ev, args, seed).mean())
    prefix = f"{target_line}:"
    out["transfer"] = _transfer_curve(m, model, relabel(pool, "perturbation", prefix=prefix),
                                      relabel(ev, "perturbation", prefix=prefix), args, seed)
    return out


def run_one(args, screen, model, seed):
    """One (screen, model, seed) (a worker's task)."""
    t0 = time.time()
    if screen.startswith("papalexi"):
        out = run_papalexi(model, args, seed, screen.split("/")[1])
    elif screen == "norman":
        out = run_norman(model, args, seed)
    elif screen == "mcfaline":
        out = run_mcfaline(model, args, seed)
    else:
        raise ValueError(screen)
    out["seconds"] = time.time() - t0
    return out


# ================================================================ tables (main process)
def _fmt_targets(lst):
    return ",".join(str(i) for i in lst) if lst else "-"


def group_gains(run) -> dict:
    """Gain of the full transfer over the untransferred model per held-out perturbation of
    a Papalexi run (nats per evaluation cell)."""
    return {g: run["transfer"]["ll_per_group"][g] - run["ll_untransferred_per_group"][g]
            for g in run["held_out"]}


def papalexi_tables(runs):
    rows, gains, tg, prog = [], {}, {}, None
    for r in runs:
        tr = r["transfer"]["ll"]
        base = r["ll_untransferred"]
        row = {"model": r["model"], "seen perts (unseen cells)": r["ll_seen"], "held-out: untransferred": base}
        for n in SIZES:
            row[f"transfer {n or 'all'}"] = tr.get(str(n), base)
        row["gain (all)"] = row["transfer all"] - base
        row["train s"] = r["train_seconds"]
        rows.append(row)
        if "ll_per_group" in r["transfer"]:
            gains[r["model"]] = group_gains(r)
        if "targets" in r:
            tg[r["model"]] = {p: _fmt_targets(v) for p, v in r["targets"].items()}
            tg[r["model"]].update({f"{p} (transferred)": _fmt_targets(v) for p, v in r["transfer"].get("targets", {}).items()})
        if r["model"] == "SVAEPlus":
            prog = r
    return pd.DataFrame(rows).set_index("model"), pd.DataFrame(gains), pd.DataFrame(tg), prog


def program_table(run):
    targeted = {}
    for p, lst in run.get("targets", {}).items():
        for j in lst:
            targeted.setdefault(j, []).append(p)
    rows = []
    for j, g in run["gene_programs"].items():
        j = int(j)
        rows.append({"latent": j, "targeted by": ",".join(targeted.get(j, [])) or "-",
                     "max |log2FC|": g["max_abs_lfc"],
                     "up": " ".join(f"{n}({v:+.1f})" for n, v in g["up"][:4]),
                     "down": " ".join(f"{n}({v:+.1f})" for n, v in g["down"][:4])})
    return pd.DataFrame(rows).set_index("latent")


def _mean(values, nan_as=None):
    v = np.asarray(values, dtype=float)
    if nan_as is not None:
        v = np.where(np.isnan(v), nan_as, v)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def norman_tables(runs):
    """Summary over the predictable doubles. A constant predicted shift (no target of either
    single: the model predicts the control mean) has no Pearson correlation; it counts as 0
    in ``pearson_top`` / ``pearson_all`` and ``doubles shifted`` says how many were not."""
    rows, per_double = [], {}
    base = runs[0]["doubles"]

    def summary(scores, name):
        return {"pearson_top": _mean([scores[d]["pearson_top"] for d in scores], nan_as=0.0),
                "rmse_top": _mean([scores[d]["rmse_top"] for d in scores]),
                "pearson_all": _mean([scores[d]["pearson_all"] for d in scores], nan_as=0.0),
                "mse_all": _mean([scores[d].get("mse_all", np.nan) for d in scores]),
                "doubles shifted": f"{sum(np.isfinite(scores[d]['pearson_top']) for d in scores)}/{len(scores)}"}

    # results written before best_single and mse_all were scored lack them
    for name in [n for n in ("additive", "best_single", "control") if n in next(iter(base.values()), {})]:
        rows.append({"predictor": f"baseline: {name}", **summary({d: base[d][name] for d in base}, name),
                     "singles fit (pearson_top)": np.nan})
        per_double[f"baseline: {name}"] = {d: base[d][name]["pearson_top"] for d in base}
    for r in runs:
        dd = r["doubles"]
        rows.append({"predictor": r["model"], **summary({d: dd[d]["model"] for d in dd}, r["model"]),
                     "singles fit (pearson_top)": _mean([v["pearson_top"] for v in r["singles_fit"].values()], nan_as=0.0)})
        per_double[r["model"]] = {d: dd[d]["model"]["pearson_top"] for d in dd}
    return pd.DataFrame(rows).set_index("predictor"), pd.DataFrame(per_double)


def over_seeds(tables: list[pd.DataFrame], digits: int = 2) -> pd.DataFrame:
    """Mean of per-seed tables (same index and columns); with several seeds, numeric cells
    read 'mean +- sd'."""
    if len(tables) == 1:
        return tables[0].round(digits)
    num = [t.select_dtypes("number") for t in tables]
    stack = pd.concat(num, keys=range(len(num)))
    mean, sd = stack.groupby(level=1, sort=False).mean(), stack.groupby(level=1, sort=False).std()
    out = tables[0].copy().astype(object)
    for c in mean.columns:
        out[c] = [f"{m:.{digits}f} +- {v:.{digits}f}" if np.isfinite(m) else "nan"
                  for m, v in zip(mean.loc[out.index, c], sd.loc[out.index, c])]
    return out


def mcfaline_table(runs):
    rows = []
    for r in runs:
        row = {"model": r["model"], "control prior": r["ll_control_prior"], "zero-shot (train priors)": r["ll_zero_shot"]}
        for n in SIZES:
            row[f"transfer {n or 'all'}"] = r["transfer"]["ll"].get(str(n), np.nan)
        row["train s"] = r["train_seconds"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


# ---------------------------------------------------------------- paired over seeds
COMPARISONS = ([("SVAEPlus", "iVAE"), ("SVAE", "iVAE"),
                # the prior with the networks held equal, and the networks with the prior held equal
                ("SVAEPlus", "iVAE/sparse-networks"), ("iVAE/sparse-networks", "iVAE")]
               + [(m, "additive") for m in MODELS])
LOWER_IS_BETTER = {"mse_all"}


def run_scores(r) -> dict:
    """{predictor: {metric: value}} of one run: what the paired tables compare. Papalexi and
    McFaline: IWELBO (nats per cell) and the gain of each transfer over the model before
    transfer (the evaluation cells under the control prior); Norman: mean over the doubles
    of pearson_top (a constant prediction counts as 0, as in the summary) and mse_all, for
    the model and for the additive baseline of the same seed."""
    ll = {f"transfer {n or 'all'}": r.get("transfer", {}).get("ll", {}).get(str(n), np.nan) for n in SIZES}
    if r["screen"].startswith("papalexi"):
        base = r["ll_untransferred"]
        return {r["model"]: {**{f"held-out, {k}": v for k, v in ll.items()},
                             "held-out, untransferred": base, "seen perturbations": r["ll_seen"],
                             **{f"gain over untransferred, {k}": v - base for k, v in ll.items()}}}
    if r["screen"] == "mcfaline":
        base = r["ll_control_prior"]
        return {r["model"]: {**{f"new line, {k}": v for k, v in ll.items()},
                             **{f"gain over control prior, {k}": v - base for k, v in ll.items()}}}
    dd = r["doubles"]

    def summary(who):
        return {"pearson_top": _mean([dd[d][who]["pearson_top"] for d in dd], nan_as=0.0),
                "mse_all": _mean([dd[d][who].get("mse_all", np.nan) for d in dd])}

    return {r["model"]: summary("model"), "additive": summary("additive")}


def score_frame(runs) -> pd.DataFrame:
    """Long table (screen, seed, predictor, metric, value); a baseline scored by several runs
    of one seed appears once."""
    rows = [{"screen": r["screen"], "seed": r["seed"], "predictor": p, "metric": k, "value": v}
            for r in runs for p, sc in run_scores(r).items() for k, v in sc.items()]
    return pd.DataFrame(rows).drop_duplicates(["screen", "seed", "predictor", "metric"])


def paired_rows(runs) -> list[dict]:
    """For each screen, metric and comparison a - b (both present): the mean paired
    difference over the seeds both ran, its 95% t interval and verdict."""
    from svae_lite.metrics import paired_difference

    out = []
    for (screen, metric), g in score_frame(runs).groupby(["screen", "metric"], sort=False):
        wide = g.pivot(index="seed", columns="predictor", values="value")
        for a, b in [(a, b) for a, b in COMPARISONS if a in wide and b in wide]:
            pair = wide[[a, b]].dropna()
            if len(pair):
                d = paired_difference(pair[a], pair[b])
                out.append({"screen": screen, "metric": metric, "comparison": f"{a} - {b}",
                            "better": "lower" if metric in LOWER_IS_BETTER else "higher",
                            **d, "seeds": [int(x) for x in pair.index]})
    return out


def pairing_problems(runs) -> list[str]:
    """Cell sets that differ between the models of one (screen, seed): empty when every
    model saw the same training, evaluation and pool cells (runs without fingerprints,
    written before they were recorded, are not checked)."""
    seen, problems = {}, []
    for r in runs:
        cells = {**r.get("cells", {}), **r.get("transfer", {}).get("cells", {})}
        for k, v in cells.items():
            first = seen.setdefault((r["screen"], r["seed"], k), (r["model"], v))
            if first[1] != v:
                problems.append(f"{r['screen']} seed {r['seed']} {k}: {r['model']} {v} != {first[0]} {first[1]}")
    return problems


def paired_table(rows: list[dict]) -> pd.DataFrame:
    """The paired rows as printed: difference [95% low, high], verdict, number of seeds."""
    def ci(r):
        return f"{r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"

    return pd.DataFrame([{"screen": r["screen"], "metric": r["metric"], "a - b": r["comparison"], "better": r["better"],
                          "difference [95%]": ci(r), "verdict": r["verdict"], "n": r["n"]} for r in rows])


def save(path, args, results) -> None:
    """The results file: options, runs, paired rows and the pairing check."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("worker", "load")}, "runs": results,
                   "paired": paired_rows(results), "pairing_problems": pairing_problems(results)}, fh, indent=1)


def print_paired(results) -> None:
    problems = pairing_problems(results)
    checked = sum(1 for r in results if "cells" in r)
    state = ("; ".join(problems) if problems else f"same cells for every model of a seed ({checked} runs checked)"
             if checked else "not checked (runs without cell fingerprints)")
    print(f"\n{'=' * 100}\nPaired over seeds (a - b, mean over seeds with a 95% t interval; verdict 'tie' when "
          f"the interval contains 0)\npairing: {state}")
    rows = paired_rows(results)
    if rows:
        print(paired_table(rows).to_string(index=False))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--screens", nargs="+", default=["papalexi", "norman", "mcfaline"],
                    choices=["papalexi", "norman", "mcfaline"])
    ap.add_argument("--split", nargs="+", default=["ifng"], choices=["ifng", "random"],
                    help="Papalexi held-out perturbations (one or both)")
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--n-latent", type=int, default=10)
    ap.add_argument("--papalexi-epochs", type=int, default=40)
    ap.add_argument("--norman-epochs", type=int, default=150)
    ap.add_argument("--mcfaline-epochs", type=int, default=150)
    ap.add_argument("--transfer-epochs", type=int, default=None,
                    help="default: transfer()'s own (at least 200 epochs and 1,000 optimisation steps)")
    C.add_lr_anneal_option(ap)
    ap.add_argument("--n-samples", type=int, default=100, help="importance samples of the IWELBO")
    ap.add_argument("--predict-cells", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="seeds of the data splits and training; tables show mean +- sd")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run: few epochs and samples")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "real_data.json"))
    ap.add_argument("--load", nargs="+", metavar="JSON",
                    help="print the tables of earlier runs (result files of this script) instead of running")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.models = check_models(args.models)
    if args.quick:
        args.papalexi_epochs, args.norman_epochs, args.mcfaline_epochs = 2, 5, 5
        args.transfer_epochs, args.n_samples, args.predict_cells = 5, 10, 200

    if args.worker:  # one (screen, model, seed) in this process
        return C.serve(lambda spec: run_one(args, **spec), args.worker)

    t0 = time.time()
    if args.load:
        results = []
        for path in args.load:
            with open(path) as fh:
                results += json.load(fh)["runs"]
        screens = list(dict.fromkeys(r["screen"] for r in results))
    else:
        screens = []
        for sc in args.screens:
            screens += [f"papalexi/{sp}" for sp in args.split] if sc == "papalexi" else [sc]
        runs = [dict(screen=sc, model=m, seed=seed, threads=1)
                for seed in args.seeds for sc in screens for m in args.models]

        done, lock = [], threading.Lock()

        def report(res):
            print(f"  {res['screen']:16s} {res['model']:9s} seed {res['seed']} done in {res['seconds']:.0f} s", flush=True)
            with lock:  # keep the finished runs should the invocation be stopped
                done.append(res)
                save(args.out, args, done)

        print(f"{len(runs)} runs, {args.jobs} in parallel; epochs papalexi {args.papalexi_epochs}, norman "
              f"{args.norman_epochs}, mcfaline {args.mcfaline_epochs}, transfer {args.transfer_epochs or 'default'}; "
              f"n_latent {args.n_latent}; IWELBO with {args.n_samples} samples; seeds {args.seeds}", flush=True)
        # workers get the same options (the run itself travels in --worker)
        options = list(argv if argv is not None else sys.argv[1:])
        results = C.run_workers(os.path.abspath(__file__), runs, args.jobs, options, report)
        save(args.out, args, results)
        C.write_meta(args.out, options)
    seeds = sorted({r["seed"] for r in results})
    print(f"seeds: {seeds} (tables: mean +- sd over seeds; targets, programs and per-group tables: seed {seeds[0]})")

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.max_colwidth", 60)
    for s in screens:
        by_seed = [[r for r in results if r["screen"] == s and r["seed"] == sd] for sd in seeds]
        by_seed = [b for b in by_seed if b]
        rs = by_seed[0]
        print(f"\n{'=' * 100}")
        if s.startswith("papalexi"):
            main_t = over_seeds([papalexi_tables(b)[0] for b in by_seed])
            _, gains, tg, prog = papalexi_tables(rs)
            print(f"Papalexi 2021, held out ({s.split('/')[1]}): {', '.join(rs[0]['held_out'])}; "
                  f"{rs[0]['n_train_cells']} training cells, {rs[0]['n_eval_cells']} evaluation cells")
            print("\nIWELBO, nats per cell (higher is better); transfer N = N pool cells per new perturbation")
            print(main_t.to_string())
            if not gains.empty:
                print("\nGain of the full transfer over the untransferred model, per held-out perturbation (nats per cell)")
                print(gains.round(2).to_string())
            if not tg.empty:
                print("\nLearned targets (latent indices with mask probability > 0.5)")
                print(tg.to_string())
            if prog is not None:
                print("\nSVAEPlus gene programs: log2 fold change of decoded expression, z_j from -2 to +2")
                print(program_table(prog).to_string())
        elif s == "norman":
            summary = over_seeds([norman_tables(b)[0] for b in by_seed], digits=3)
            per_double = norman_tables(rs)[1]
            print("Norman 2019: trained on control + 18 singles; predicted vs observed effect (log of mean "
                  "expression normalised to 1e4 counts, minus control) for the doubles whose genes were measured alone")
            print("(pearson_top / rmse_top: on the 20 genes the double changes most; pearson_all / mse_all: all "
                  "genes; mean over doubles; a constant prediction, i.e. no change, counts as Pearson 0; "
                  "'doubles shifted': how many were not)")
            print(summary.to_string())
            print("\nPearson (top 20 genes) per double")
            print(per_double.round(3).to_string())
            sp = [r for r in rs if "double_targets" in r]
            for r in sp:
                print(f"\n{r['model']} targets of singles: " + "; ".join(f"{k}:{_fmt_targets(v)}" for k, v in r["targets"].items()))
        else:
            print(f"McFaline-Figueroa 2023: trained on {', '.join(rs[0]['train_lines'])}; evaluated on "
                  f"{rs[0]['n_eval_cells']} {rs[0]['target_line']} cells (IWELBO, nats per cell)")
            print(over_seeds([mcfaline_table(b) for b in by_seed]).to_string())
    print_paired(results)
    print(f"\nwall time {time.time() - t0:.0f} s" + ("" if args.load else f"; results in {args.out}"))


if __name__ == "__main__":
    main()
