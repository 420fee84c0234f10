import numpy as np
import pandas as pd
import pytest

import svae_lite as sl
from svae_lite.metrics import target_scores


def test_mcc_permuted_sign_flipped_is_one():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((500, 6))
    perm = rng.permutation(6)
    signs = rng.choice([-1, 1], 6)
    assert np.isclose(sl.metrics.mcc(z, z[:, perm] * signs * 3.0 + 1.0), 1.0)
    # Spearman: invariant to monotone maps too
    assert np.isclose(sl.metrics.mcc(z, np.exp(z[:, perm]), method="spearman"), 1.0)


def test_mcc_independent_noise_near_zero():
    rng = np.random.default_rng(1)
    assert sl.metrics.mcc(rng.standard_normal((5000, 5)), rng.standard_normal((5000, 5))) < 0.05


def test_mcc_rotation_is_below_one():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2000, 2))
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    assert 0.6 < sl.metrics.mcc(z, z @ np.array([[c, -s], [s, c]])) < 0.8


def test_target_scores_known_case():
    t = np.array([[1, 0, 0], [0, 1, 1]], bool)
    p = np.array([[0.9, 0.1, 0.6], [0.2, 0.8, 0.3]])
    s = target_scores(t, p)
    assert np.isclose(s["precision"], 2 / 3) and np.isclose(s["recall"], 2 / 3)
    assert np.isclose(s["f1"], 2 / 3)
    assert np.isclose(s["auroc"], 8 / 9)  # 8 of 9 positive-negative pairs ordered


def test_target_recovery_uses_matching():
    class Fake:
        def __init__(self, z, targets):
            self.z, self.t = z, targets

        def get_latent_representation(self, adata=None):
            return self.z

        def get_intervention_targets(self):
            return self.t

    a = sl.simulate(n_latent=4, n_perturbations=6, n_cells_per_perturbation=50, n_genes=12, n_heldout=0, seed=0)
    perm = np.array([2, 0, 3, 1])
    z = a.obsm["z_true"][:, perm] * -1
    truth = a.uns["true_targets"]
    learned = pd.DataFrame(truth.to_numpy()[:, perm].astype(float), index=truth.index)
    r = sl.metrics.target_recovery(a, Fake(z, learned))
    assert r["f1"] == 1.0 and np.isclose(r["mcc"], 1.0) and r["auroc"] == 1.0


# ---------------------------------------------------------------------------- effects
def _tiny_adata(sparse: bool):
    import anndata
    import scipy.sparse as sp

    X = np.array([[1, 3, 0], [2, 2, 4], [0, 0, 0], [5, 0, 5], [1, 1, 2]], dtype=np.float32)
    obs = pd.DataFrame({"perturbation": pd.Categorical(["control", "control", "A", "A", "B"],
                                                       categories=["control", "A", "B", "C"])},
                       index=[f"c{i}" for i in range(5)])
    return anndata.AnnData(sp.csr_matrix(X) if sparse else X, obs=obs,
                           var=pd.DataFrame(index=["g0", "g1", "g2"]))


def test_pseudobulk_equals_hand_computation():
    pb = sl.metrics.pseudobulk(_tiny_adata(False), target_sum=8.0)
    # control: (1,3,0)/4*8 = (2,6,0) and (2,2,4)/8*8 = (2,2,4) -> mean (2,4,2)
    # A: an empty cell stays 0, (5,0,5)/10*8 = (4,0,4) -> mean (2,0,2); B: (1,1,2)/4*8 = (2,2,4)
    expected = np.log1p(np.array([[2, 4, 2], [2, 0, 2], [2, 2, 4]], dtype=float))
    assert list(pb.index) == ["control", "A", "B"]  # category order, groups without cells left out
    assert list(pb.columns) == ["g0", "g1", "g2"]
    assert np.allclose(pb.to_numpy(), expected)
    sub = sl.metrics.pseudobulk(_tiny_adata(False), groups=["B", "control"], target_sum=8.0)
    assert list(sub.index) == ["B", "control"] and np.allclose(sub.to_numpy(), expected[[2, 0]])
    with pytest.raises(KeyError, match="C"):
        sl.metrics.pseudobulk(_tiny_adata(False), groups=["C"])
    with pytest.raises(KeyError, match="obs"):
        sl.metrics.pseudobulk(_tiny_adata(False), key="guide")


def test_pseudobulk_sparse_dense_and_layer_agree():
    dense = _tiny_adata(False)
    sparse = _tiny_adata(True)
    assert np.allclose(sl.metrics.pseudobulk(dense).to_numpy(), sl.metrics.pseudobulk(sparse).to_numpy())
    dense.layers["counts"] = dense.X.copy()
    dense.X = np.zeros_like(dense.X)
    assert np.allclose(sl.metrics.pseudobulk(dense, layer="counts").to_numpy(),
                       sl.metrics.pseudobulk(sparse).to_numpy())


def test_log_expression_matches_pseudobulk_scale():
    expected = pd.DataFrame([[1.0, 3.0, 0.0], [10.0, 10.0, 20.0]], index=["control", "A"], columns=["g0", "g1", "g2"])
    le = sl.metrics.log_expression(expected, target_sum=8.0)
    assert np.allclose(le.to_numpy(), np.log1p([[2, 6, 0], [2, 2, 4]]))
    assert list(le.index) == ["control", "A"] and list(le.columns) == ["g0", "g1", "g2"]
    with pytest.raises(ValueError, match="sum to 0"):
        sl.metrics.log_expression(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        sl.metrics.log_expression(-expected)


def test_effect_scores_known_cases():
    rng = np.random.default_rng(0)
    obs = rng.standard_normal(50)
    s = sl.metrics.effect_scores(obs.copy(), obs, n_top=10)
    assert np.isclose(s["pearson_top"], 1) and np.isclose(s["pearson_all"], 1)
    assert s["rmse_top"] == 0 and s["mse_all"] == 0
    # a constant prediction (e.g. "no change") has no correlation
    zero = sl.metrics.effect_scores(np.zeros(50), obs, n_top=10)
    assert np.isnan(zero["pearson_top"]) and np.isnan(zero["pearson_all"])
    top = np.argsort(-np.abs(obs))[:10]
    assert np.isclose(zero["rmse_top"], np.sqrt(np.mean(obs[top] ** 2)))
    assert np.isclose(zero["mse_all"], np.mean(obs ** 2))
    # the top genes are those with the largest observed |effect|: errors elsewhere do not count
    pred = obs.copy()
    rest = np.setdiff1d(np.arange(50), top)
    pred[rest] += 1.0
    s = sl.metrics.effect_scores(pred, obs, n_top=10)
    assert np.isclose(s["pearson_top"], 1) and s["rmse_top"] == 0 and np.isclose(s["mse_all"], 40 / 50)
    # a sign-flipped prediction
    assert np.isclose(sl.metrics.effect_scores(-obs, obs)["pearson_top"], -1)


def test_effect_scores_aligns_series_and_checks_inputs():
    genes = [f"g{i}" for i in range(6)]
    obs = pd.Series([3.0, -2.0, 0.5, 0.1, 1.0, -0.2], index=genes)
    shuffled = obs.iloc[::-1] * 2
    s = sl.metrics.effect_scores(shuffled, obs, n_top=3)
    assert np.isclose(s["pearson_top"], 1) and np.isclose(s["pearson_all"], 1)
    assert np.isclose(s["mse_all"], np.mean(obs ** 2))
    # a Series and an array: matched by position
    assert np.isclose(sl.metrics.effect_scores(obs.to_numpy(), obs)["mse_all"], 0)
    with pytest.raises(ValueError, match="different genes"):
        sl.metrics.effect_scores(obs.rename(index={"g0": "other"}), obs)
    with pytest.raises(ValueError, match="same genes"):
        sl.metrics.effect_scores(np.zeros(5), obs)
    with pytest.raises(ValueError, match="n_top"):
        sl.metrics.effect_scores(obs, obs, n_top=0)
    with pytest.raises(ValueError, match="NaN"):
        sl.metrics.effect_scores(obs.where(obs > 0), obs)
