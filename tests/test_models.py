import numpy as np
import pandas as pd
import pytest
import torch

import svae_lite as sl

MODELS = [sl.VAE, sl.BetaVAE, sl.iVAE, sl.SVAE, sl.SVAEPlus]


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_each_model_trains_and_returns_finite_values(cls, small_train):
    cls.setup_anndata(small_train)
    m = cls(small_train, n_latent=4, n_hidden=32)
    m.train(max_epochs=4, batch_size=64, enable_progress_bar=False)
    z = m.get_latent_representation()
    assert z.shape == (small_train.n_obs, 4) and np.isfinite(z).all()
    t = m.get_intervention_targets()
    assert t.shape == (9, 4) and ((t >= 0) & (t <= 1)).all().all()
    assert "control" not in t.index
    ll = m.get_marginal_ll(n_samples=5)
    assert ll.shape == (small_train.n_obs,) and np.isfinite(ll).all() and (ll < 0).all()
    one = m.get_marginal_ll(n_samples=1)  # one sample: the ELBO's single-sample estimate
    assert one.shape == ll.shape and np.isfinite(one).all()
    # seeded draws: the same numbers whatever ran before, torch's global state untouched
    state = torch.get_rng_state()
    seeded = m.get_marginal_ll(n_samples=5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(7)
    assert np.array_equal(seeded, m.get_marginal_ll(n_samples=5, seed=3))
    assert not np.array_equal(seeded, m.get_marginal_ll(n_samples=5, seed=4))
    assert "elbo_train" in m.history and len(m.history["elbo_train"]) == 4
    pred = m.predict(["P000", "P000+P001"], n_cells=20)
    assert pred.shape == (2, small_train.n_vars) and np.isfinite(pred.to_numpy()).all()


@pytest.mark.slow
def test_sparse_model_masks_and_alignment(small_train):
    sl.SVAEPlus.setup_anndata(small_train)
    m = sl.SVAEPlus(small_train, n_latent=4, n_hidden=32)
    m.train(max_epochs=40, batch_size=64, enable_progress_bar=False)
    assert hasattr(m, "alignment_")
    R = m.alignment_["rotation"]
    assert np.allclose(R @ R.T, np.eye(4), atol=1e-6)
    t = m.get_intervention_targets().to_numpy()
    assert t.min() < 0.5 < t.max()  # masks are not all equal after the alignment


@pytest.mark.parametrize("kind", ["l0", "beta_bernoulli"])
def test_penalty_weight_scales_only_the_mask_prior(kind):
    from svae_lite.priors import SparseShift

    def penalty(weight, cells_per_label):
        torch.manual_seed(0)
        p = SparseShift(5, 3, 0, penalty=kind, sparsity=2.0, estimator="exact", penalty_weight=weight,
                        penalty_scale="cells")
        with torch.no_grad():
            p.mask_logit.normal_()
        return float(p.penalty(cells_per_label=cells_per_label))

    # penalty = (entropy term) + w * (prior term): linear in the weight, and the weight
    # multiplies the tempering weight
    p1, p2, p3 = penalty(1.0, 7.0), penalty(2.0, 7.0), penalty(3.0, 7.0)
    assert p2 - p1 == pytest.approx(p3 - p2, rel=1e-5) and p2 != pytest.approx(p1)
    assert penalty(2.0, 3.5) == pytest.approx(penalty(1.0, 7.0), rel=1e-5)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="penalty_weight"):
            SparseShift(5, 3, 0, penalty_weight=bad)
    for bad in (True, "1"):
        with pytest.raises(TypeError, match="penalty_weight"):
            SparseShift(5, 3, 0, penalty_weight=bad)


def test_kl_free_bits_floors_each_latents_batch_kl_while_training(small_train):
    from scvi import REGISTRY_KEYS

    sl.SVAEPlus.setup_anndata(small_train)
    plain = sl.SVAEPlus(small_train, n_latent=4, n_hidden=32, kl_free_bits=0.0)
    floored = sl.SVAEPlus(small_train, n_latent=4, n_hidden=32, kl_free_bits=0.7)
    floored.module.load_state_dict(plain.module.state_dict())
    X = torch.as_tensor(np.asarray(small_train.X[:64]))
    labels = torch.as_tensor(small_train.obs["_scvi_labels"].to_numpy()[:64]).long().view(-1, 1)
    tensors = {REGISTRY_KEYS.X_KEY: X, REGISTRY_KEYS.LABELS_KEY: labels}

    def loss_and_parts(m, training):
        m.module.train(training)
        for mod in (plain.module, floored.module):
            mod.prior.dense.fill_(True)  # deterministic prior: no mask sample
        torch.manual_seed(0)
        inf, _, out = m.module.forward(tensors)
        return float(out.loss.detach()), out, inf["qz"]
    for training in (True, False):
        (lp, op, _), (lf, of, qz) = loss_and_parts(plain, training), loss_and_parts(floored, training)
        # the reported KL and reconstruction are the true ones either way
        assert float(op.kl_local_sum.detach()) == pytest.approx(float(of.kl_local_sum.detach()), rel=1e-6)
        assert float(op.reconstruction_loss_sum.detach()) == pytest.approx(float(of.reconstruction_loss_sum.detach()), rel=1e-6)
        kl_j = floored.module.prior.kl_per_latent(qz.loc, qz.scale, labels.view(-1)).mean(0)
        assert float(kl_j.sum().detach()) * 64 == pytest.approx(float(op.kl_local_sum.detach()), rel=1e-4)
        if training:  # the loss pays max(KL_j, floor) for every latent
            extra = float((torch.clamp(kl_j, min=0.7) - kl_j).sum().detach())
            assert extra > 0 and lf - lp == pytest.approx(extra, rel=1e-3)
        else:  # evaluation: the plain ELBO
            assert lf == pytest.approx(lp, rel=1e-6)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="kl_free_bits"):
            sl.SVAEPlus(small_train, n_latent=4, kl_free_bits=bad)
    with pytest.raises(TypeError, match="kl_free_bits"):
        sl.SVAEPlus(small_train, n_latent=4, kl_free_bits="0.5")


def test_save_load_round_trip(tmp_path, small_train):
    sl.SVAEPlus.setup_anndata(small_train)
    m = sl.SVAEPlus(small_train, n_latent=4, n_hidden=32)
    m.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    m.save(tmp_path / "m", overwrite=True)
    m2 = sl.SVAEPlus.load(tmp_path / "m", adata=small_train)
    np.testing.assert_array_equal(m.get_latent_representation(), m2.get_latent_representation())
    pd.testing.assert_frame_equal(m.get_intervention_targets(), m2.get_intervention_targets())


@pytest.mark.slow
def test_transfer_learns_only_new_perturbations(small_adata):
    train = small_adata[small_adata.obs["split"] == "train"].copy()
    held = small_adata[small_adata.obs["split"] == "heldout"].copy()
    sl.SVAEPlus.setup_anndata(train)
    m = sl.SVAEPlus(train, n_latent=4, n_hidden=32)
    m.train(max_epochs=6, batch_size=64, enable_progress_bar=False)
    with pytest.raises(ValueError, match="never seen in training"):
        m.get_marginal_ll(held, n_samples=5)
    z_before = m.get_latent_representation(held)
    t = m.transfer(held, max_epochs=30, batch_size=64, enable_progress_bar=False)
    # shared parts unchanged, original model untouched
    np.testing.assert_allclose(t.get_latent_representation(held), z_before, rtol=1e-5, atol=1e-5)
    old = m.get_intervention_targets()
    # float32 sigmoids of the same logits in tables of another size: equal to rounding
    np.testing.assert_allclose(t.get_intervention_targets().loc[old.index].to_numpy(), old.to_numpy(),
                               rtol=1e-6)
    n_old = len(m.perturbations_)
    for name in ("mask_logit", "shift", "log_scale"):  # the known rows did not train
        assert torch.equal(getattr(t.module.prior, name)[:n_old], getattr(m.module.prior, name)), name
    assert set(held.obs["perturbation"]) <= set(t.get_intervention_targets().index)
    ll = t.get_marginal_ll(held, n_samples=10, return_mean=True)
    assert np.isfinite(ll)
