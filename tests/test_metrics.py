import numpy as np
import pandas as pd

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
