import os
import warnings

import pytest

os.environ.setdefault("SVAE_LITE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
warnings.filterwarnings("ignore", category=DeprecationWarning)


def pytest_configure(config):
    """Under pytest-xdist (``-n N``), one torch thread per worker: N workers with one thread
    each use N cores without oversubscribing them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_adata():
    import svae_lite as sl

    return sl.simulate(n_latent=4, n_perturbations=12, n_cells_per_perturbation=40, n_genes=30,
                       n_heldout=3, seed=1)


@pytest.fixture()
def small_train(small_adata):
    return small_adata[small_adata.obs["split"] == "train"].copy()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests: tiny networks gain nothing from intra-op
    threads, which only spin on a busy machine. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
