import numpy as np
import pytest
import scipy.sparse as sp
import torch

import svae_lite as sl
from svae_lite.ceiling import _Posterior, _torch_decoder
from svae_lite.simulate import true_prior

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sim():
    """d=4, 60 genes, library size 2000: the count noise leaves the latents well determined."""
    return sl.simulate(n_latent=4, n_perturbations=8, n_cells_per_perturbation=60, n_genes=60,
                       n_heldout=0, library_size=2000.0, seed=11)


@pytest.fixture(scope="module")
def z_map(sim):
    return sl.ceiling.map_latents(sim)


def _posterior(adata, rows, theta=None):
    mean, sd = true_prior(adata)
    x = torch.as_tensor(np.asarray(adata.X[rows]), dtype=torch.float64)
    return _Posterior(_torch_decoder(adata), x, torch.as_tensor(mean[rows]),
                      torch.as_tensor(sd[rows] ** -2.0), theta)


def test_torch_decoder_is_the_simulated_one(sim):
    z = sim.obsm["z_true"][:50].astype(np.float64)
    log_rho, J = _posterior(sim, slice(0, 50))._decode(torch.as_tensor(z), jacobian=True)
    assert np.allclose(log_rho.exp().numpy(), sl.decoder_proportions(sim, z), rtol=1e-10, atol=0)
    assert J.shape == (50, 60, 4)


@pytest.mark.parametrize("theta", [None, 5.0])
def test_gradient_and_fisher_match_autograd(sim, theta):
    post = _posterior(sim, slice(0, 6), theta)
    z = torch.as_tensor(sim.obsm["z_true"][:6], dtype=torch.float64) + 0.3
    grad, step = post.newton(z)
    auto = torch.func.vmap(torch.func.grad(lambda zi, i: post.subset(i).loss(zi[None])[0]))
    rows = torch.arange(6)[:, None]
    assert torch.allclose(grad, auto(z, rows), rtol=1e-8, atol=1e-8)
    if theta is None:  # piecewise-linear decoder: for Poisson counts the Fisher is the Hessian
        hess = torch.stack([torch.autograd.functional.hessian(
            lambda zi: post.subset([i]).loss(zi[None])[0], z[i]) for i in range(6)])
        assert torch.allclose(step, -torch.linalg.solve(hess, grad), rtol=1e-6, atol=1e-8)


def test_map_latents_below_one_but_high(sim, z_map):
    labels = sim.obs["perturbation"].to_numpy()
    z_true = sim.obsm["z_true"]
    assert z_map.shape == z_true.shape and z_map.dtype == np.float64
    ceiling = sl.metrics.cell_level_mcc(z_true, z_map, labels)
    assert 0.8 < ceiling["pooled"] < 0.999
    assert 0.6 < ceiling["within_groups"] < 0.99 and 0.5 < ceiling["control"] < 0.99
    # better than the labels alone and than a random linear map of the counts
    oracle = sl.metrics.cell_level_mcc(z_true, sl.metrics.group_mean_oracle(z_true, labels), labels)
    logc = np.log1p(sim.X / sim.X.sum(1, keepdims=True) * 1e4)
    rand = logc @ np.random.default_rng(0).standard_normal((sim.n_vars, 4))
    random_map = sl.metrics.cell_level_mcc(z_true, rand, labels)
    for level in ceiling:
        assert ceiling[level] > oracle[level] and ceiling[level] > random_map[level] + 0.2
    assert sl.ceiling.mcc_ceiling(sim) == ceiling


def test_more_starts_never_worse_and_seeded(sim, z_map):
    rows = slice(0, 120)
    three = sl.ceiling.map_latents(sim[rows], n_starts=3, seed=1)
    assert np.array_equal(three, sl.ceiling.map_latents(sim[rows], n_starts=3, seed=1))
    post = _posterior(sim, rows)
    f1 = post.loss(torch.as_tensor(z_map[rows])).numpy()
    f3 = post.loss(torch.as_tensor(three)).numpy()
    assert np.all(f3 <= f1 + 1e-9)


def test_batches_and_sparse_counts_give_the_same_latents(sim, z_map):
    a = sim[:100].copy()
    a.X = sp.csr_matrix(a.X)
    before = a.copy()
    assert np.allclose(sl.ceiling.map_latents(a, batch_size=33), z_map[:100], rtol=0, atol=1e-6)
    assert (a.X != before.X).nnz == 0 and a.obs.equals(before.obs)  # the AnnData is only read
    assert np.array_equal(a.obsm["z_true"], before.obsm["z_true"])


def test_negative_binomial_simulation():
    a = sl.simulate(n_latent=3, n_perturbations=5, n_cells_per_perturbation=60, n_genes=40,
                    n_heldout=0, likelihood="nb", nb_dispersion=10.0, seed=5)
    scores = sl.ceiling.mcc_ceiling(a)
    assert set(scores) == {"pooled", "within_groups", "control"}
    assert 0.8 < scores["pooled"] < 1 and 0.2 < scores["control"] < 1


def test_errors_name_the_problem(sim):
    no_decoder = sim[:50].copy()
    del no_decoder.uns["simulation"]["decoder"]
    with pytest.raises(KeyError, match="decoder"):
        sl.ceiling.map_latents(no_decoder)
    plain = sim[:50].copy()
    plain.uns = {}
    with pytest.raises(KeyError, match="decoder"):
        sl.ceiling.mcc_ceiling(plain)
    with pytest.raises(ValueError, match="genes"):
        sl.ceiling.map_latents(sim[:50, :30])
    renamed = sim[:50].copy()
    renamed.obs["perturbation"] = renamed.obs["perturbation"].cat.rename_categories({"control": "ctrl"})
    with pytest.raises(KeyError, match="ctrl"):
        sl.ceiling.map_latents(renamed)
    with pytest.raises(ValueError, match="n_starts"):
        sl.ceiling.map_latents(sim[:50], n_starts=0)


def test_true_log_likelihood_matches_brute_force():
    """Importance sampling around the MAP agrees with plain Monte Carlo from the prior
    (100,000 draws; exact enough in d=2) cell by cell."""
    import math

    a = sl.simulate(n_latent=2, n_perturbations=3, n_cells_per_perturbation=2, n_genes=30,
                    n_heldout=0, n_targets=(1, 1), seed=1)
    ll = sl.ceiling.true_log_likelihood(a, n_samples=2000, seed=0)
    assert ll.shape == (a.n_obs,) and np.isfinite(ll).all()
    mean, sd = true_prior(a)
    post = _posterior(a, slice(None))
    z = torch.as_tensor(mean + sd * np.random.default_rng(0).standard_normal((100_000,) + mean.shape))
    log_pz = torch.distributions.Normal(torch.as_tensor(mean), torch.as_tensor(sd)).log_prob(z).sum(-1)
    brute = (torch.logsumexp(post.log_joint(z) - log_pz, 0) - math.log(z.shape[0])).numpy()
    assert np.abs(ll - brute).max() < 0.15
    assert abs(ll.mean() - brute.mean()) < 0.02
    assert np.array_equal(ll, sl.ceiling.true_log_likelihood(a, n_samples=2000, seed=0))


def test_true_log_likelihood_is_the_models_likelihood(sim):
    """log p(x | z) in the ceiling is the negative binomial the models score with: at the
    true latents it equals scvi-tools' NegativeBinomial log-probability with the same mean."""
    from scvi.distributions import NegativeBinomial

    rows = slice(0, 20)
    post = _posterior(sim, rows, theta=7.0)
    z = torch.as_tensor(sim.obsm["z_true"][rows].astype(np.float64))
    mean, sd = true_prior(sim)
    log_pz = torch.distributions.Normal(torch.as_tensor(mean[rows]), torch.as_tensor(sd[rows])).log_prob(z).sum(-1)
    mu = post.library * sl.decoder_proportions(sim, z.numpy())
    nb = NegativeBinomial(mu=torch.as_tensor(mu), theta=torch.tensor(7.0, dtype=torch.float64))
    expected = nb.log_prob(post.x).sum(-1) + log_pz
    assert torch.allclose(post.log_joint(z[None])[0], expected, atol=1e-6)


def test_true_log_likelihood_errors(sim):
    with pytest.raises(ValueError, match="df"):
        sl.ceiling.true_log_likelihood(sim[:10], df=0)
    with pytest.raises(ValueError, match="n_samples"):
        sl.ceiling.true_log_likelihood(sim[:10], n_samples=0)
