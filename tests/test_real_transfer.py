"""Models on the real screens at small sizes: transfer to held-out perturbations improves the
held-out likelihood, and double perturbations are predicted from singles."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import svae_lite as sl

DATA = Path(os.environ["SVAE_LITE_DATA"])
pytestmark = pytest.mark.skipif(not (DATA / "devel.h5ad").is_file(),
                                reason=f"real data not found in {DATA} (set SVAE_LITE_DATA)")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small networks run fastest on one thread (and do not stall on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _take(adata, groups, n, rng):
    """Up to ``n`` random cells of each group."""
    lab = adata.obs["perturbation"].astype(str).to_numpy()
    idx = [rng.permutation(np.flatnonzero(lab == g))[:n] for g in groups]
    return adata[np.sort(np.concatenate(idx))].copy()


def _iwelbo(model, adata, n_samples=30):
    torch.manual_seed(0)  # the same random stream for every evaluation: common random numbers
    return model.get_marginal_ll(adata, n_samples=n_samples, return_mean=True)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [sl.iVAE, sl.SVAEPlus], ids=lambda c: c.__name__)
def test_transfer_to_held_out_perturbation_improves_likelihood(cls):
    rng = np.random.default_rng(0)
    adata = sl.datasets.papalexi2021()
    # IFNGR2 knockouts are held out; IFNGR1 and JAK2 (same pathway) are seen in training
    train = _take(adata, ["control", "IFNGR1", "JAK2", "SMAD4", "CD86", "ATF2"], 300, rng)
    new = _take(adata, ["IFNGR2"], 400, rng)
    new.obs["perturbation"] = new.obs["perturbation"].astype(str)
    pool, held = new[:200].copy(), new[200:].copy()
    cls.setup_anndata(train)
    model = cls(train, n_latent=6, n_hidden=64)
    model.train(max_epochs=30, batch_size=128, enable_progress_bar=False)
    with pytest.raises(ValueError, match="never seen in training"):
        model.get_marginal_ll(held, n_samples=5)
    # the untransferred model: the unseen perturbation's cells under the control prior
    as_control = held.copy()
    as_control.obs["perturbation"] = "control"
    before = _iwelbo(model, as_control)
    transferred = model.transfer(pool, enable_progress_bar=False)  # default: >= 1,000 steps
    after = _iwelbo(transferred, held)
    assert np.isfinite(before) and np.isfinite(after)
    assert after > before + 0.1, (before, after)
    # seen perturbations keep their parameters; the networks are shared
    np.testing.assert_allclose(transferred.get_latent_representation(held), model.get_latent_representation(held),
                               rtol=1e-5, atol=1e-5)
    assert "IFNGR2" in transferred.get_intervention_targets().index


def test_double_perturbations_are_predicted_from_singles():
    adata = sl.datasets.norman2019()
    lab = adata.obs["perturbation"].astype(str)
    singles = ["KLF1", "MAP2K6", "TGFBR2"]
    train = adata[lab.isin(["control"] + singles).to_numpy()].copy()
    sl.iVAE.setup_anndata(train)
    model = sl.iVAE(train, n_latent=4, n_hidden=32)
    model.train(max_epochs=10, batch_size=128, enable_progress_bar=False)
    pred = model.predict(["control", "KLF1", "MAP2K6", "KLF1+MAP2K6"], n_cells=200)
    assert pred.shape == (4, adata.n_vars) and np.isfinite(pred.to_numpy()).all()
    # iVAE composes by adding shifts: the double lies away from both singles
    assert not np.allclose(pred.loc["KLF1+MAP2K6"], pred.loc["KLF1"])
    assert not np.allclose(pred.loc["KLF1+MAP2K6"], pred.loc["MAP2K6"])
    with pytest.raises(ValueError, match="CBL"):
        model.predict(["CBL+CNN1"])  # genes never seen alone cannot be composed
