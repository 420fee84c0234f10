"""Reliability: every bad input gets a clear error (or warning) before training, nothing the
user passes is modified in place without saying so, runs are reproducible, save/load is exact.

Tiny data (150 training cells x 20 genes), 1-2 epochs, 16 hidden units: the whole file
runs in well under a minute on 2 CPU cores.
"""
import copy
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import svae_lite as sl
from svae_lite import SvaeLiteWarning
from svae_lite import _validation as V

MODELS = [sl.VAE, sl.BetaVAE, sl.iVAE, sl.SVAE, sl.SVAEPlus]
FIT = dict(batch_size=64, enable_progress_bar=False)
SETUP_OBS = {"_svae_perturbation", "_scvi_labels"}
SETUP_UNS = {"_scvi_uuid", "_scvi_manager_uuid"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    """control + P000..P005 (30 cells each, P004/P005 held out), 20 genes, d=3."""
    return sl.simulate(n_latent=3, n_perturbations=6, n_cells_per_perturbation=30, n_genes=20,
                       n_heldout=2, seed=1)


def _train(data):
    return data[data.obs["split"] == "train"].copy()


def _held(data):
    return data[data.obs["split"] == "heldout"].copy()


@pytest.fixture(scope="module")
def trained(data):
    """An sVAE+ trained for 2 epochs (masks from the start: the alignment step is covered
    in test_models); tests must not modify it."""
    tr = _train(data)
    sl.SVAEPlus.setup_anndata(tr)
    m = sl.SVAEPlus(tr, n_latent=3, n_hidden=16)
    m.train(max_epochs=2, dense_fraction=0.0, **FIT)
    return m


@pytest.fixture()
def fresh(data):
    """An untrained sVAE+ on its own copy of the training cells."""
    tr = _train(data)
    sl.SVAEPlus.setup_anndata(tr)
    return sl.SVAEPlus(tr, n_latent=3, n_hidden=16)


def _snapshot(adata):
    X = adata.X.copy()
    return dict(X=X, obs=adata.obs.copy(), var=adata.var.copy(), uns=set(adata.uns),
                obsm={k: v.copy() for k, v in adata.obsm.items()}, layers=set(adata.layers))


def _assert_unchanged(adata, snap, new_obs=(), new_uns=()):
    np.testing.assert_array_equal(adata.X, snap["X"])
    assert set(adata.obs.columns) == set(snap["obs"].columns) | set(new_obs)
    pd.testing.assert_frame_equal(adata.obs[list(snap["obs"].columns)], snap["obs"])
    pd.testing.assert_frame_equal(adata.var, snap["var"])
    assert set(adata.uns) == snap["uns"] | set(new_uns)
    assert set(adata.obsm) == set(snap["obsm"])
    for k, v in snap["obsm"].items():
        np.testing.assert_array_equal(adata.obsm[k], v)
    assert set(adata.layers) == snap["layers"]


# --------------------------------------------------------------------------- counts
def _bad_counts(data, kind, sparse=False):
    a = _train(data)
    X = a.X.copy()
    if kind == "negative":
        X[0, 0] = -3
    elif kind == "nan":
        X[1, 2] = np.nan
    elif kind == "inf":
        X[1, 2] = np.inf
    elif kind == "log1p":
        X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    elif kind == "scaled":
        X = X / X.sum(1, keepdims=True) * 1e4
    a.X = sp.csr_matrix(X) if sparse else X
    return a


COUNT_ERRORS = [
    ("negative", ValueError, "negative values"),
    ("nan", ValueError, "NaN or infinite"),
    ("inf", ValueError, "NaN or infinite"),
    ("log1p", ValueError, "log-normalized"),
    ("scaled", ValueError, "normalized or scaled data"),
]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("kind,exc,msg", COUNT_ERRORS, ids=[c[0] for c in COUNT_ERRORS])
def test_setup_rejects_bad_counts(data, kind, exc, msg, sparse):
    a = _bad_counts(data, kind, sparse)
    cols = set(a.obs.columns)
    with pytest.raises(exc, match=msg):
        sl.SVAEPlus.setup_anndata(a)
    assert set(a.obs.columns) == cols  # nothing registered


@pytest.mark.parametrize("kind,exc,msg", COUNT_ERRORS, ids=[c[0] for c in COUNT_ERRORS])
def test_bad_counts_in_other_anndata(trained, data, kind, exc, msg):
    a = _bad_counts(data, kind)
    with pytest.raises(exc, match=msg):
        trained.get_latent_representation(a)
    with pytest.raises(exc, match=msg):
        trained.get_marginal_ll(a, n_samples=2)
    h = _held(data)
    h.X = _bad_counts(data, kind).X[: h.n_obs]
    with pytest.raises(exc, match=msg):
        trained.transfer(h, max_epochs=1, **FIT)


def test_empty_and_all_zero_sparse(data):
    a = _train(data)
    with pytest.raises(ValueError, match="is empty"):
        sl.VAE.setup_anndata(a[:, []].copy())
    b = _train(data)
    b.X = sp.csr_matrix(b.X.shape, dtype=np.float32)  # no non-zero entry: not "empty"
    with pytest.warns(SvaeLiteWarning, match=f"{b.n_obs} cells have no counts"):
        sl.VAE.setup_anndata(b)


def test_counts_layer_is_checked(data):
    a = _train(data)
    a.layers["counts"] = a.X.copy()
    a.layers["counts"][0, 0] = -1
    with pytest.raises(ValueError, match=r"adata.layers\['counts'\] contains negative"):
        sl.VAE.setup_anndata(a, layer="counts")
    with pytest.raises(KeyError, match="not in adata.layers"):
        sl.VAE.setup_anndata(a, layer="raw")


def test_integer_dtype_counts_accepted(data):
    a = _train(data)
    a.X = a.X.astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SvaeLiteWarning)
        sl.VAE.setup_anndata(a)


def test_all_zero_cells_and_genes_warn(data):
    a = _train(data)
    a.X[:3] = 0
    with pytest.warns(SvaeLiteWarning, match="3 cells have no counts"):
        sl.VAE.setup_anndata(a)
    b = _train(data)
    b.X[:, [0, 5]] = 0
    with pytest.warns(SvaeLiteWarning, match="2 genes have no counts"):
        sl.VAE.setup_anndata(b)


def test_zero_cells_in_other_anndata_warn(trained, data):
    a = _train(data)
    a.X[:2] = 0
    with pytest.warns(SvaeLiteWarning, match="2 cells have no counts"):
        z = trained.get_latent_representation(a)
    assert np.isfinite(z).all()


# --------------------------------------------------------------------------- labels
def test_missing_perturbation_column(data):
    with pytest.raises(KeyError, match="perturbation_key='guide' is not a column"):
        sl.VAE.setup_anndata(_train(data), perturbation_key="guide")


def test_control_absent_or_not_a_string(data):
    with pytest.raises(ValueError, match="control='NT' is not a label"):
        sl.VAE.setup_anndata(_train(data), control="NT")
    a = _train(data)
    a.obs["code"] = a.obs["perturbation"].cat.codes.astype(int)
    with pytest.raises(TypeError, match="pass control='0'"):
        sl.VAE.setup_anndata(a, perturbation_key="code", control=0)
    sl.VAE.setup_anndata(a, perturbation_key="code", control="0")  # the suggested fix works


def test_nan_labels(data):
    a = _train(data)
    a.obs["perturbation"] = a.obs["perturbation"].astype(object)
    a.obs.iloc[[0, 5], a.obs.columns.get_loc("perturbation")] = np.nan
    with pytest.raises(ValueError, match="2 missing \\(NaN\\) labels"):
        sl.VAE.setup_anndata(a)


def test_labels_colliding_as_strings(data):
    a = _train(data)
    lab = a.obs["perturbation"].astype(str).to_numpy(dtype=object)
    lab[:5], lab[5:10] = 1, "1"
    a.obs["perturbation"] = lab
    with pytest.raises(ValueError, match="become the same string"):
        sl.VAE.setup_anndata(a)


def test_small_and_empty_groups_warn(data):
    a = _train(data)
    keep = np.ones(a.n_obs, bool)
    keep[np.flatnonzero(a.obs["perturbation"] == "P001")[5:]] = False
    a = a[keep].copy()
    with pytest.warns(SvaeLiteWarning, match="fewer than 20 cells.*'P001': 5"):
        sl.VAE.setup_anndata(a)
    b = _train(data)
    b.obs["perturbation"] = b.obs["perturbation"].cat.add_categories(["P999"])
    with pytest.warns(SvaeLiteWarning, match="have no cells and are ignored.*P999"):
        sl.VAE.setup_anndata(b)
    m = sl.VAE(b, n_latent=3, n_hidden=16)
    assert "P999" not in m.perturbations_


def test_n_latent_bounds(data):
    a = _train(data)
    sl.VAE.setup_anndata(a)
    with pytest.raises(ValueError, match="not smaller than the number of genes"):
        sl.VAE(a, n_latent=20)
    with pytest.raises(ValueError, match="n_latent=0"):
        sl.VAE(a, n_latent=0)
    big = sl.simulate(n_latent=3, n_perturbations=2, n_cells_per_perturbation=25, n_genes=130,
                      n_heldout=0, seed=0)
    sl.VAE.setup_anndata(big)
    with pytest.warns(SvaeLiteWarning, match="unusually large"):
        sl.VAE(big, n_latent=110, n_hidden=8)


def test_setup_on_a_view_raises_and_leaves_it_a_view(data):
    v = data[data.obs["split"] == "train"]
    with pytest.raises(ValueError, match="is a view"):
        sl.VAE.setup_anndata(v)
    assert v.is_view and "_svae_perturbation" not in data.obs


# ----------------------------------------------------------------- transfer / prediction
def test_unseen_perturbations_point_to_transfer(trained, data):
    held = _held(data)
    with pytest.raises(ValueError, match="never seen in training.*transfer"):
        trained.get_marginal_ll(held, n_samples=2)
    with pytest.raises(ValueError, match=r"\['P005'\].*never seen in training.*transfer"):
        trained.predict(["P000", "P005"], n_cells=5)
    with pytest.raises(ValueError, match=r"\['P004'\] in 'P000\+P004'"):
        trained.predict("P000+P004", n_cells=5)
    with pytest.raises(ValueError, match="no perturbation the model does not already know"):
        trained.transfer(_train(data), max_epochs=1, **FIT)


def test_predict_label_containing_plus(data):
    a = _train(data)
    a.obs["perturbation"] = a.obs["perturbation"].cat.rename_categories({"P000": "A+B"})
    sl.iVAE.setup_anndata(a)
    m = sl.iVAE(a, n_latent=3, n_hidden=16)
    pred = m.predict(["A+B", "P001+P002"], n_cells=5)  # a known label is never split
    assert pred.shape == (2, a.n_vars) and np.isfinite(pred.to_numpy()).all()
    with pytest.raises(ValueError, match=r"\['A'"):
        m.predict("A+P001", n_cells=5)


@pytest.mark.parametrize("change", ["missing", "extra", "order"])
def test_gene_sets_must_match(trained, data, change):
    a = _held(data)
    if change == "missing":
        a, msg = a[:, 2:].copy(), "2 training genes missing"
    elif change == "extra":
        a.var_names = [f"g{i}" if i < 3 else n for i, n in enumerate(a.var_names)]
        msg = "3 genes the model does not know"
    else:
        a, msg = a[:, a.var_names[::-1]].copy(), "same genes in a different order"
    with pytest.raises(ValueError, match=msg):
        trained.get_latent_representation(a)
    with pytest.raises(ValueError, match=msg):
        trained.transfer(a, max_epochs=1, **FIT)
    a.obs["perturbation"] = "P000"
    with pytest.raises(ValueError, match=msg):
        trained.get_marginal_ll(a, n_samples=2)


def test_transfer_input_checks(trained, data):
    held = _held(data)
    with pytest.raises(ValueError, match="adata_new is a view"):
        trained.transfer(data[data.obs["split"] == "heldout"], max_epochs=1, **FIT)
    bad = held.copy()
    bad.obs["perturbation"] = bad.obs["perturbation"].astype(object)
    bad.obs.iloc[0, bad.obs.columns.get_loc("perturbation")] = np.nan
    with pytest.raises(ValueError, match="adata_new.obs\\['perturbation'\\] has 1 missing"):
        trained.transfer(bad, max_epochs=1, **FIT)
    with pytest.raises(KeyError, match="not a column of adata_new.obs"):
        trained.transfer(ad.AnnData(held.X.copy(), var=held.var.copy()), max_epochs=1, **FIT)
    vae_tr = _train(data)
    sl.VAE.setup_anndata(vae_tr)
    with pytest.raises(ValueError, match="no perturbation-specific parameters"):
        sl.VAE(vae_tr, n_latent=3, n_hidden=16).transfer(held, max_epochs=1)


def test_transfer_leaves_original_untouched_and_round_trips(trained, data, tmp_path):
    before = {k: v.clone() for k, v in trained.module.state_dict().items()}
    grads = {k: p.requires_grad for k, p in trained.module.named_parameters()}
    obs_before = trained.adata.obs.copy()
    perts = list(trained.perturbations_)
    held = _held(data)
    snap = _snapshot(held)
    new = trained.transfer(held, max_epochs=2, **FIT)
    after = trained.module.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert grads == {k: p.requires_grad for k, p in trained.module.named_parameters()}
    assert trained.perturbations_ == perts
    pd.testing.assert_frame_equal(trained.adata.obs, obs_before)
    # adata_new: only the documented registration columns and uns keys are added
    _assert_unchanged(held, snap, SETUP_OBS, SETUP_UNS)
    assert new.perturbations_ == perts + ["P004", "P005"]
    # a transferred model saves and loads exactly too
    new.save(tmp_path / "t", overwrite=True)
    again = sl.SVAEPlus.load(tmp_path / "t", adata=_held(data))
    np.testing.assert_array_equal(again.get_latent_representation(), new.get_latent_representation())
    pd.testing.assert_frame_equal(again.get_intervention_targets(), new.get_intervention_targets())


# --------------------------------------------------------------------------- training
def test_nan_loss_stops_with_epoch_and_hint(fresh):
    calls = {"n": 0}
    orig = fresh.module.loss

    def poisoned(*args, **kwargs):
        out = orig(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 3:  # 150 cells / 64 per batch = 3 steps per epoch: epoch 2 goes NaN
            out.loss = out.loss * float("nan")
        return out

    fresh.module.loss = poisoned
    with pytest.raises(FloatingPointError, match=r"became nan in epoch 2 \(step 4\).*learning rate"):
        fresh.train(max_epochs=3, **FIT)
    assert calls["n"] == 4  # stopped at once


BAD_TRAIN = [
    (dict(early_stopping="yes"), TypeError, "early_stopping='yes' must be True or False"),
    (dict(early_stopping=True, train_size=1.0), ValueError, "needs validation cells"),
    (dict(early_stopping=True, train_size=0.8, early_stopping_patience=0), ValueError, "early_stopping_patience=0"),
    (dict(early_stopping=True, train_size=0.8, early_stopping_patience="5"), TypeError, "early_stopping_patience='5'"),
    (dict(early_stopping=True, train_size=0.8, early_stopping_monitor="loss"), ValueError, "early_stopping_monitor='loss': choose"),
    (dict(early_stopping=True, train_size=0.8, early_stopping_mode="up"), ValueError, "early_stopping_mode='up'"),
    (dict(early_stopping=True, train_size=0.8, early_stopping_min_delta=-1.0), ValueError, "early_stopping_min_delta=-1.0"),
    (dict(early_stopping=True, train_size=0.8, early_stopping_patiance=3), TypeError, "Unknown early stopping option"),
    (dict(n_epochs_kl_warmup=-1), ValueError, "n_epochs_kl_warmup=-1"),
    (dict(n_epochs_kl_warmup=2.5), TypeError, "n_epochs_kl_warmup=2.5"),
    (dict(n_epochs_kl_warmup="10"), TypeError, "n_epochs_kl_warmup='10'"),
    (dict(n_epochs_kl_warmup=50), ValueError, "exceeds max_epochs=3"),
    (dict(plan_kwargs={"n_epochs_kl_warmup": -3}), ValueError, "n_epochs_kl_warmup=-3"),
    (dict(plan_kwargs={"n_steps_kl_warmup": "a"}), TypeError, "n_steps_kl_warmup='a'"),
    (dict(plan_kwargs={"min_kl_weight": 2.0}), ValueError, "exceeds max_kl_weight"),
    (dict(plan_kwargs={"optimizer": "AdamW"}), ValueError, "not supported"),
    (dict(plan_kwargs={"kl_weight": 1}), TypeError, "Unknown plan_kwargs"),
    (dict(plan_kwargs="lr=1"), TypeError, "plan_kwargs must be a dict"),
    (dict(lr=0), ValueError, "lr=0"),
    (dict(train_size=0.0), ValueError, "no training cells"),
    (dict(seed="0"), TypeError, "seed='0'"),
    (dict(dense_fraction=1.0), ValueError, "dense_fraction=1.0"),
    (dict(lr_anneal=1.0), ValueError, "lr_anneal=1.0"),
    (dict(lr_anneal=-0.1), ValueError, "lr_anneal=-0.1"),
]


@pytest.mark.parametrize("kwargs,exc,msg", BAD_TRAIN, ids=[m for _, _, m in BAD_TRAIN])
def test_training_options_validated_before_training(fresh, kwargs, exc, msg):
    dense = fresh.module.prior.dense.clone()
    with pytest.raises(exc, match=msg):
        fresh.train(max_epochs=3, **FIT, **kwargs)
    assert not fresh.is_trained_ and fresh.history_ is None
    assert torch.equal(fresh.module.prior.dense, dense)  # no state changed


def test_early_stopping_options_without_early_stopping_warn():
    with pytest.warns(SvaeLiteWarning, match="early_stopping=False: they are ignored"):
        V.check_early_stopping(False, {"early_stopping_patience": 5})


def test_valid_early_stopping_runs(fresh):
    fresh.train(max_epochs=2, early_stopping=True, train_size=0.8, early_stopping_patience=1,
                early_stopping_monitor="elbo_validation", early_stopping_min_delta=0.0,
                plan_kwargs={"n_epochs_kl_warmup": 1}, dense_fraction=0.0, **FIT)
    assert fresh.is_trained_ and "elbo_validation" in fresh.history


def test_lr_anneal_lowers_both_rates_only_at_the_end(fresh):
    """lr_anneal=0.5 of 4 epochs: full rates in epochs 1-2, a half cosine in 3-4 (0.5 of
    the rates in epoch 4), for the networks and the prior alike."""
    from lightning.pytorch.callbacks import Callback

    from svae_lite._training import anneal_factor

    seen = []

    class Rates(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    fresh.train(max_epochs=4, lr=1e-3, prior_lr=1e-2, lr_anneal=0.5, callbacks=[Rates()], **FIT)
    assert np.allclose(seen, [[1e-3, 1e-2], [1e-3, 1e-2], [1e-3, 1e-2], [5e-4, 5e-3]])
    assert [anneal_factor(e, 100, 0.25) for e in (0, 74, 75)] == [1.0, 1.0, 1.0]
    assert 0 < anneal_factor(99, 100, 0.25) < 0.01


def test_training_anneals_the_last_quarter_by_default(fresh):
    """Default training and transfer anneal over the last quarter: of 8 epochs, 7 run at
    the full rate and the 8th at half of it (the cosine starts at 1 in epoch 7);
    lr_anneal=0 keeps the rate constant."""
    from lightning.pytorch.callbacks import Callback

    def net_rates(fit, **kwargs):
        seen = []

        class Rates(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                seen.append(trainer.optimizers[0].param_groups[0]["lr"])

        fit(max_epochs=8, callbacks=[Rates()], **kwargs, **FIT)
        return seen

    quarter = [1e-3] * 7 + [5e-4]
    assert np.allclose(net_rates(fresh.train), quarter)
    assert np.allclose(net_rates(fresh.train, lr_anneal=0.0), [1e-3] * 8)
    # transfer() trains only the prior's parameters, at prior_lr
    new = fresh.adata[fresh.adata.obs["perturbation"] != "control"].copy()
    new.obs["perturbation"] = new.obs["perturbation"].astype(str) + " (again)"
    assert np.allclose(net_rates(lambda **kw: fresh.transfer(new, **kw)), [q * 10 for q in quarter])


# --------------------------------------------------------------------------- determinism
def test_simulation_is_deterministic():
    kw = dict(n_latent=3, n_perturbations=4, n_cells_per_perturbation=20, n_genes=15,
              n_heldout=1, likelihood="nb")
    a, b, c = sl.simulate(seed=5, **kw), sl.simulate(seed=5, **kw), sl.simulate(seed=6, **kw)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsm["z_true"], b.obsm["z_true"])
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.uns["true_shifts"], b.uns["true_shifts"])
    assert not np.array_equal(a.X, c.X)


def test_same_seed_same_fit(data):
    def fit(seed):
        tr = _train(data)
        sl.SVAEPlus.setup_anndata(tr)
        m = sl.SVAEPlus(tr, n_latent=3, n_hidden=16, seed=seed)
        m.train(max_epochs=2, seed=seed, dense_fraction=0.0, **FIT)
        return m.get_latent_representation(), m.get_intervention_targets()

    torch.manual_seed(123)  # the global state must not matter
    z0, t0 = fit(0)
    z0b, t0b = fit(0)
    z1, _ = fit(1)
    np.testing.assert_array_equal(z0, z0b)
    pd.testing.assert_frame_equal(t0, t0b)
    assert not np.allclose(z0, z1)


def test_model_init_leaves_global_rng_alone(data):
    tr = _train(data)
    sl.VAE.setup_anndata(tr)
    state = torch.get_rng_state()
    sl.VAE(tr, n_latent=3, n_hidden=16, seed=7)
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_save_load_round_trip_is_exact(cls, data, tmp_path):
    tr = _train(data)
    cls.setup_anndata(tr)
    m = cls(tr, n_latent=3, n_hidden=16)
    m.train(max_epochs=1, **FIT)
    m.save(tmp_path / "m", overwrite=True)
    m2 = cls.load(tmp_path / "m", adata=_train(data))
    np.testing.assert_array_equal(m.get_latent_representation(), m2.get_latent_representation())
    pd.testing.assert_frame_equal(m.get_intervention_targets(), m2.get_intervention_targets())
    if hasattr(m.module.prior, "shift"):
        pd.testing.assert_frame_equal(m.get_shifts(), m2.get_shifts())
    pd.testing.assert_frame_equal(m.predict(["P000", "P000+P001"], n_cells=10),
                                  m2.predict(["P000", "P000+P001"], n_cells=10))
    for k, v in m.module.state_dict().items():
        assert torch.equal(v, m2.module.state_dict()[k]), k


def test_load_with_mismatched_anndata(trained, data, tmp_path):
    trained.save(tmp_path / "m", overwrite=True)
    path = tmp_path / "m"
    with pytest.raises(ValueError, match="2 training genes missing"):
        sl.SVAEPlus.load(path, adata=_train(data)[:, 2:].copy())
    tr = _train(data)
    with pytest.raises(ValueError, match="same genes in a different order"):
        sl.SVAEPlus.load(path, adata=tr[:, tr.var_names[::-1]].copy())
    with pytest.raises(ValueError, match=r"perturbations the saved model never saw: \['P004', 'P005'\]"):
        sl.SVAEPlus.load(path, adata=_held(data))
    with pytest.raises(ValueError, match="holds a saved SVAEPlus, not a iVAE"):
        sl.iVAE.load(path, adata=_train(data))
    # a subset of the known perturbations, even without control cells, is fine
    sub = _train(data)
    sub = sub[sub.obs["perturbation"].isin(["P000", "P001"])].copy()
    m2 = sl.SVAEPlus.load(path, adata=sub)
    np.testing.assert_array_equal(m2.get_latent_representation(sub),
                                  trained.get_latent_representation(sub))


# --------------------------------------------------------------------------- no silent in-place changes
def test_setup_anndata_adds_only_documented_fields(data):
    a = _train(data)
    a.layers["counts"] = a.X.copy()
    snap = _snapshot(a)
    X_id = id(a.X)
    sl.SVAEPlus.setup_anndata(a)
    _assert_unchanged(a, snap, SETUP_OBS, SETUP_UNS)
    assert id(a.X) == X_id
    assert list(a.obs["_svae_perturbation"].cat.categories)[0] == "control"


def test_getters_do_not_modify_other_anndata(trained, data):
    a = _train(data)
    snap = _snapshot(a)
    trained.get_latent_representation(a)
    trained.get_marginal_ll(a, n_samples=2)
    _assert_unchanged(a, snap)


def test_metrics_do_not_modify_inputs(trained, data):
    a = _train(data)
    z_true = a.obsm["z_true"].astype(np.float64)
    z = trained.get_latent_representation(a).astype(np.float64)
    zt0, z0 = z_true.copy(), z.copy()
    for method in ("pearson", "spearman"):
        sl.metrics.mcc(z_true, z, method=method)
        sl.metrics.match_latents(z_true, z, method=method)
    t = a.uns["true_targets"].copy()
    learned = np.random.default_rng(0).random(t.shape)
    l0 = learned.copy()
    sl.metrics.target_scores(t, learned)
    np.testing.assert_array_equal(z_true, zt0)
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(learned, l0)
    snap = _snapshot(a)
    true_targets = a.uns["true_targets"].copy()
    sl.metrics.target_recovery(a, trained)
    _assert_unchanged(a, snap)
    pd.testing.assert_frame_equal(a.uns["true_targets"], true_targets)


def test_simulate_does_not_modify_its_arguments():
    n_targets = [1, 2]
    before = copy.deepcopy(n_targets)
    sl.simulate(n_latent=3, n_perturbations=2, n_cells_per_perturbation=5, n_genes=10,
                n_heldout=0, n_targets=n_targets, seed=0)
    assert n_targets == before
