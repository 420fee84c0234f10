import numpy as np
import pandas as pd
import anndata
import pytest

import svae_lite as sl
from svae_lite.simulate import stored_decoder, true_prior


def test_shapes_and_ground_truth():
    a = sl.simulate(n_latent=6, n_perturbations=10, n_cells_per_perturbation=30, n_genes=25,
                    n_heldout=2, seed=0)
    assert a.shape == (11 * 30, 25)
    assert a.obsm["z_true"].shape == (a.n_obs, 6)
    assert list(a.obs["perturbation"].cat.categories)[0] == "control"
    t = a.uns["true_targets"]
    assert isinstance(t, pd.DataFrame) and t.shape == (10, 6) and t.dtypes.eq(bool).all()
    assert (a.obs["split"] == "heldout").sum() == 2 * 30
    assert set(a.obs.loc[a.obs["split"] == "heldout", "perturbation"]) == {"P008", "P009"}
    assert a.uns["simulation"]["seed"] == 0
    X = a.X
    assert (X >= 0).all() and np.allclose(X, np.round(X))


def test_targets_are_sparse_and_distinct():
    a = sl.simulate(n_latent=15, n_perturbations=200, n_cells_per_perturbation=2, n_genes=20,
                    n_heldout=0, seed=3)
    n_t = a.uns["true_targets"].sum(1)
    assert n_t.min() >= 1 and n_t.max() <= 3
    assert set(n_t) == {1, 2, 3}  # without replacement: exactly 1-3 distinct latents
    s = a.uns["true_shifts"].to_numpy()
    on = a.uns["true_targets"].to_numpy()
    assert np.all(s[~on] == 0) and np.all(np.abs(s[on]) > 2.5)


def test_only_targets_shift():
    a = sl.simulate(n_latent=5, n_perturbations=4, n_cells_per_perturbation=3000, n_genes=20,
                    n_heldout=0, seed=2)
    z = a.obsm["z_true"]
    ctrl = z[a.obs["perturbation"] == "control"]
    assert np.allclose(ctrl.mean(0), 0, atol=0.1) and np.allclose(ctrl.std(0), 1, atol=0.1)
    for p, row in a.uns["true_shifts"].iterrows():
        zp = z[(a.obs["perturbation"] == p).to_numpy()]
        assert np.allclose(zp.mean(0), row.to_numpy(), atol=0.15)


def test_deterministic_bit_for_bit():
    a = sl.simulate(n_latent=4, n_perturbations=5, n_cells_per_perturbation=20, n_genes=15, seed=7, n_heldout=1)
    b = sl.simulate(n_latent=4, n_perturbations=5, n_cells_per_perturbation=20, n_genes=15, seed=7, n_heldout=1)
    c = sl.simulate(n_latent=4, n_perturbations=5, n_cells_per_perturbation=20, n_genes=15, seed=8, n_heldout=1)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.obsm["z_true"], b.obsm["z_true"])
    assert not np.array_equal(a.X, c.X)


def test_draws_are_those_of_earlier_versions():
    """The random draws of a seed never change: the same counts and latents as before."""
    import hashlib

    a = sl.simulate(n_latent=4, n_perturbations=5, n_cells_per_perturbation=20, n_genes=15, seed=7, n_heldout=1)
    assert hashlib.sha256(a.obsm["z_true"].tobytes()).hexdigest()[:16] == "16999c79c3889862"
    assert hashlib.sha256(a.X.tobytes()).hexdigest()[:16] == "828ecf9ce69d0021"


def test_negative_binomial_and_variance_change():
    a = sl.simulate(n_latent=3, n_perturbations=3, n_cells_per_perturbation=2000, n_genes=10,
                    n_heldout=0, likelihood="nb", target_scale=2.0, seed=0)
    z = a.obsm["z_true"]
    p, row = next(iter(a.uns["true_targets"].iterrows()))
    zp = z[(a.obs["perturbation"] == p).to_numpy()]
    assert np.allclose(zp.std(0)[row.to_numpy()], 2.0, atol=0.15)


@pytest.mark.parametrize("kw", [dict(n_latent=0), dict(n_targets=(2, 1)), dict(n_targets=(1, 9), n_latent=4),
                                dict(n_heldout=10, n_perturbations=10), dict(likelihood="zip"),
                                dict(shift_sd=-1.0)])
def test_bad_parameters(kw):
    with pytest.raises((ValueError, TypeError)):
        sl.simulate(**kw)


def test_stored_decoder_reproduces_the_simulation():
    from svae_lite.simulate import decoder_proportions

    a = sl.simulate(n_latent=4, n_perturbations=5, n_cells_per_perturbation=200, n_genes=12,
                    n_heldout=1, seed=4)
    dec = a.uns["simulation"]["decoder"]
    assert [dec["weights"][k].shape for k in sorted(dec["weights"], key=int)] == [(40, 4), (40, 40), (40, 40), (12, 40)]
    weights, biases, slope = stored_decoder(a)
    assert [W.shape for W in weights] == [dec["weights"][k].shape for k in sorted(dec["weights"], key=int)]
    assert slope == 0.2
    assert all(b.shape == (W.shape[0],) and b.dtype == np.float64 for W, b in zip(weights, biases))
    rho = decoder_proportions(a, a.obsm["z_true"])
    assert rho.shape == (a.n_obs, 12) and np.allclose(rho.sum(1), 1)
    # the Poisson counts were drawn with mean rho * library size
    expected = rho * a.obs["library_size"].to_numpy()[:, None]
    assert abs(a.X.sum() / expected.sum() - 1) < 0.01
    assert np.corrcoef(a.X.ravel(), expected.ravel())[0, 1] > 0.95
    # the same from uns or from uns["simulation"]
    assert np.allclose(decoder_proportions(a.uns, a.obsm["z_true"][:5]), rho[:5], rtol=1e-12, atol=0)
    assert np.allclose(decoder_proportions(a.uns["simulation"], a.obsm["z_true"][:5]), rho[:5], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="shape"):
        decoder_proportions(a, np.zeros((3, 5)))
    with pytest.raises(KeyError, match="decoder"):
        decoder_proportions({"simulation": {"seed": 0}}, np.zeros((3, 4)))


def test_simulation_writes_to_h5ad_with_its_decoder(tmp_path):
    from svae_lite.simulate import decoder_proportions

    a = sl.simulate(n_latent=3, n_perturbations=3, n_cells_per_perturbation=10, n_genes=8,
                    n_heldout=0, n_layers=11, n_hidden=5, seed=1)  # > 10 layers: keys "10" < "2"
    path = tmp_path / "sim.h5ad"
    a.write_h5ad(path)
    b = anndata.read_h5ad(path)
    z = a.obsm["z_true"]
    assert np.array_equal(decoder_proportions(b, z), decoder_proportions(a, z))
    assert b.uns["simulation"]["likelihood"] == "poisson"
    for x, y in zip(true_prior(a), true_prior(b)):
        assert np.array_equal(x, y)


def test_true_prior_is_the_simulated_distribution():
    a = sl.simulate(n_latent=4, n_perturbations=3, n_cells_per_perturbation=2000, n_genes=10,
                    n_heldout=0, target_scale=2.0, seed=6)
    mean, sd = true_prior(a)
    assert mean.shape == sd.shape == a.obsm["z_true"].shape
    labels = a.obs["perturbation"].to_numpy()
    assert np.all(mean[labels == "control"] == 0) and np.all(sd[labels == "control"] == 1)
    for p, row in a.uns["true_shifts"].iterrows():
        cells = labels == p
        on = a.uns["true_targets"].loc[p].to_numpy()
        assert np.all(mean[cells] == row.to_numpy()) and np.all(sd[cells] == np.where(on, 2.0, 1.0))
        z = a.obsm["z_true"][cells]
        assert np.allclose(z.mean(0), row.to_numpy(), atol=0.15) and np.allclose(z.std(0), sd[cells][0], atol=0.1)
    # a subset of cells: the rows of its cells
    sub = a[labels != "control"]
    assert np.array_equal(true_prior(sub)[0], mean[labels != "control"])
    other = a[:5].copy()
    other.obs["perturbation"] = other.obs["perturbation"].cat.rename_categories({"control": "NT"})
    with pytest.raises(KeyError, match="NT"):
        true_prior(other)
    with pytest.raises(KeyError, match="true_shifts"):
        true_prior(anndata.AnnData(np.zeros((2, 2))))
