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



# ------------------------------------------------------------------- cell-level MCC
@pytest.fixture(scope="module")
def screen():
    """A simulation no other test uses; z_learned: a noisy mix of the true latents."""
    a = sl.simulate(n_latent=4, n_perturbations=16, n_cells_per_perturbation=40, n_genes=10,
                    n_heldout=0, seed=123)
    z = a.obsm["z_true"].astype(np.float64)
    rng = np.random.default_rng(123)
    learned = z @ rng.standard_normal((4, 5)) + rng.standard_normal((a.n_obs, 5))
    return z, learned, a.obs["perturbation"].to_numpy()


def _direct_mcc(z, learned):
    """Pearson MCC with numpy and scipy only, for comparison."""
    from scipy.optimize import linear_sum_assignment

    corr = np.abs(np.corrcoef(z.T, learned.T)[: z.shape[1], z.shape[1]:])
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols].mean()


def test_within_group_and_control_mcc_equal_direct_computation(screen):
    z, learned, labels = screen
    resid = [x - pd.DataFrame(x).groupby(labels).transform("mean").to_numpy() for x in (z, learned)]
    ctrl = labels == "control"
    z0, learned0, labels0 = z.copy(), learned.copy(), labels.copy()
    scores = sl.metrics.cell_level_mcc(z, learned, labels, method="spearman")
    assert np.array_equal(z, z0) and np.array_equal(learned, learned0) and np.array_equal(labels, labels0)
    scores = sl.metrics.cell_level_mcc(z, learned, labels)
    assert np.isclose(scores["within_groups"], _direct_mcc(*resid), rtol=1e-12)
    assert np.isclose(scores["control"], _direct_mcc(z[ctrl], learned[ctrl]), rtol=1e-12)
    assert np.isclose(scores["pooled"], _direct_mcc(z, learned), rtol=1e-12)
    assert scores["pooled"] == sl.metrics.mcc(z, learned)
    assert scores["within_groups"] < scores["pooled"]  # the mix hides less than the groups
    # match_latents and correlation_matrix take the same groups
    rows, cols, corr = sl.metrics.match_latents(z, learned, groups=labels)
    assert np.allclose(corr, sl.metrics.correlation_matrix(*resid), rtol=1e-12)


def test_permuted_sign_flipped_latents_score_one_at_every_level(screen):
    z, _, labels = screen
    rng = np.random.default_rng(0)
    copy = z[:, rng.permutation(4)] * rng.choice([-1, 1], 4) * 2.0 + 3.0
    for method in ("pearson", "spearman"):
        scores = sl.metrics.cell_level_mcc(z, copy, labels, method=method)
        assert set(scores) == {"pooled", "within_groups", "control"}
        assert all(np.isclose(v, 1.0) for v in scores.values()), scores
    # within-group ranks: any monotone map of the latents scores 1 too
    assert np.isclose(sl.metrics.mcc(z, np.exp(copy), "spearman", groups=labels), 1.0)


def test_group_mean_oracle_knows_only_the_labels(screen):
    z, _, labels = screen
    oracle = sl.metrics.group_mean_oracle(z, labels)
    assert oracle.shape == z.shape
    ctrl = labels == "control"
    assert np.allclose(oracle[ctrl], z[ctrl].mean(0)) and np.allclose(oracle[~ctrl].mean(0), z[~ctrl].mean(0))
    scores = sl.metrics.cell_level_mcc(z, oracle, labels)
    assert scores["pooled"] > 0.8  # the groups alone put the latents on the right axes
    assert scores["within_groups"] < 1e-8 and scores["control"] < 1e-8
    categorical = pd.Series(labels, dtype="category")  # e.g. obs["perturbation"]
    assert np.array_equal(sl.metrics.group_mean_oracle(z, categorical), oracle)
    assert sl.metrics.cell_level_mcc(z, oracle, categorical) == scores


def test_groups_are_checked(screen):
    z, learned, labels = screen
    with pytest.raises(ValueError, match="one label per cell"):
        sl.metrics.mcc(z, learned, groups=labels[:-1])
    with pytest.raises(ValueError, match="one label per cell"):
        sl.metrics.group_mean_oracle(z, "control")
    with pytest.raises(ValueError, match="missing"):
        sl.metrics.correlation_matrix(z, learned, groups=np.where(labels == "P000", None, labels))
    with pytest.raises(ValueError, match="control='ctrl'"):
        sl.metrics.cell_level_mcc(z, learned, labels, control="ctrl")
    with pytest.raises(ValueError, match="same cells"):
        sl.metrics.cell_level_mcc(z, learned[:-1], labels)
    with pytest.raises(ValueError, match="method"):
        sl.metrics.mcc(z, learned, method="kendall", groups=labels)

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


def test_paired_difference_interval_and_verdicts():
    from svae_lite.metrics import paired_difference

    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    r = paired_difference(a + 1.0, a)  # a constant difference: a zero-width interval
    assert r["n"] == 5 and r["mean"] == pytest.approx(1.0) and r["verdict"] == "a > b"
    assert r["low"] == pytest.approx(1.0) and r["high"] == pytest.approx(1.0)
    d = np.array([0.5, -0.3, 0.2, -0.1, 0.4])
    r = paired_difference(d, np.zeros(5))
    half = 2.7764451 * d.std(ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert r["low"] == pytest.approx(d.mean() - half) and r["verdict"] == "tie"
    assert paired_difference([1.0], [2.0])["verdict"] == "tie"
    assert paired_difference(a, a + 2.0)["verdict"] == "a < b"
    with pytest.raises(ValueError, match="same units"):
        paired_difference([1, 2], [1, 2, 3])
