"""The in-memory training data path (svae_lite._data) and the training plan's epoch logging."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import svae_lite as sl
from svae_lite._training import ShiftTrainingPlan
from svae_lite._data import TensorBatchLoader, TensorDataSplitter, dense_tensor

FIT = dict(batch_size=64, enable_progress_bar=False, accelerator="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def registered(small_train):
    sl.SVAEPlus.setup_anndata(small_train, perturbation_key="perturbation", control="control")
    return small_train


def test_dense_tensor_from_sparse_and_dense():
    rng = np.random.default_rng(0)
    X = rng.poisson(0.5, size=(50, 7)).astype(np.float64)
    for M_ in (X, sp.csr_matrix(X), sp.csc_matrix(X)):
        t = dense_tensor(M_, chunk_rows=16)
        assert t.dtype == torch.float32 and t.shape == (50, 7)
        np.testing.assert_array_equal(t.numpy(), X.astype(np.float32))


def test_loader_covers_every_cell_once_and_merges_tiny_last_batch():
    X = torch.arange(130, dtype=torch.float32).view(130, 1)
    labels = torch.arange(130).view(130, 1) % 5
    idx = np.arange(3, 130)  # 127 cells, batch 63 -> 63, 64 (the last single cell merged)
    torch.manual_seed(0)
    loader = TensorBatchLoader(X, labels, idx, batch_size=63, shuffle=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert [len(b["X"]) for b in batches] == [63, 64]
    seen = torch.cat([b["X"][:, 0] for b in batches]).long()
    assert sorted(seen.tolist()) == idx.tolist()
    for b in batches:  # labels travel with their cells
        assert torch.equal(b["labels"][:, 0], b["X"][:, 0].long() % 5)
        assert b["labels"].dtype == torch.long
    torch.manual_seed(0)
    again = torch.cat([b["X"][:, 0] for b in loader]).long()
    assert torch.equal(again, seen)  # the global seed fixes the order
    ordered = TensorBatchLoader(X, labels, idx, batch_size=63, shuffle=False)
    assert torch.cat([b["X"][:, 0] for b in ordered]).long().tolist() == idx.tolist()


def test_models_train_from_memory_and_are_deterministic(registered):
    assert sl.SVAEPlus._data_splitter_cls is TensorDataSplitter
    zs, hists = [], []
    for _ in range(2):
        m = sl.SVAEPlus(registered, n_latent=4, n_hidden=16, seed=0)
        m.train(max_epochs=2, seed=0, **FIT)
        zs.append(m.get_latent_representation())
        hists.append(m.history["elbo_train"].to_numpy())
    np.testing.assert_array_equal(zs[0], zs[1])
    np.testing.assert_array_equal(hists[0], hists[1])
    assert set(m.history) >= {"train_loss", "elbo_train", "reconstruction_loss_train",
                              "kl_local_train", "kl_global_train", "kl_weight"}
    assert all(len(v) == 2 for k, v in m.history.items())


def test_epoch_logging_matches_scvi_tools_metrics(registered):
    """The plan's once-per-epoch history equals scvi-tools' per-step logging, value for value."""
    from scvi.train import TrainingPlan

    class ScviLogging(ShiftTrainingPlan):
        def training_step(self, batch, batch_idx):
            return TrainingPlan.training_step(self, batch, batch_idx)

        def on_train_epoch_end(self):
            pass

    hist = {}
    for plan in (ScviLogging, ShiftTrainingPlan):
        m = sl.SVAEPlus(registered, n_latent=4, n_hidden=16, seed=0)
        m._training_plan_cls = plan
        m.train(max_epochs=3, seed=0, dense_fraction=0.5, **FIT)
        hist[plan] = m.history
    for key in ("train_loss", "elbo_train", "reconstruction_loss_train", "kl_local_train", "kl_global_train"):
        ours = hist[ShiftTrainingPlan][key].to_numpy(dtype=float)
        np.testing.assert_allclose(ours, hist[ScviLogging][key].to_numpy(dtype=float), rtol=1e-6, err_msg=key)


def test_anndata_loader_still_available(registered):
    m = sl.SVAEPlus(registered, n_latent=4, n_hidden=16)
    m.train(max_epochs=1, datasplitter_kwargs={"in_memory": False}, **FIT)
    assert np.isfinite(m.get_latent_representation()).all()
    with pytest.raises(TypeError, match="in_memory='no' must be True or False"):
        m.train(max_epochs=1, datasplitter_kwargs={"in_memory": "no"}, **FIT)

