"""Helpers of benchmarks/transfer.py, transfer_weak.py, likelihood_gap.py and likelihood_phases.py."""
import importlib.util
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import torch

from svae_lite.priors import SparseShift

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(_DIR))  # the scripts import _common and real_data
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", _DIR / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(_DIR))


@pytest.fixture(scope="module")
def tw():
    return _load("transfer_weak")


@pytest.fixture(scope="module")
def tr():
    return _load("transfer")


def test_lead_on_starts_only_the_largest_entry_of_the_given_rows(tw):
    prior = SparseShift(3, 4, control_index=0)
    with torch.no_grad():
        prior.shift.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0],
                                        [0.2, -0.6, 0.1, 0.0],     # weak: every entry under 1 SD
                                        [0.3, 0.0, 2.0, 0.0]]))    # strong: one entry over 1 SD
        prior.mask_logit.fill_(7.0)
    rows = torch.tensor([False, True, True])
    tw.lead_on(SparseShift.init_mask_from_shifts)(prior, rows)
    logits = prior.mask_logit.detach()
    assert torch.all(logits[0] == 7.0)  # a row not given keeps its logits
    assert logits[1, 1] == pytest.approx(3.0)  # the weak row's largest |shift| starts on
    assert logits[1, 0] == pytest.approx(3.0 * (0.2 - 1.0))  # the rest as init_mask_from_shifts
    assert logits[2, 2] == pytest.approx(3.0)
    assert logits[2, 0] == pytest.approx(3.0 * (0.3 - 1.0))


def test_again_relabels_a_copy(tr):
    a = anndata.AnnData(np.ones((3, 2), dtype=np.float32),
                        obs=pd.DataFrame({"perturbation": pd.Categorical(["p1", "p1", "p2"])},
                                         index=["c0", "c1", "c2"]))
    b = tr.again(a)
    assert list(b.obs["perturbation"]) == ["p1 (again)", "p1 (again)", "p2 (again)"]
    assert list(a.obs["perturbation"]) == ["p1", "p1", "p2"]  # the input is not modified


def test_no_free_bits_variant_changes_only_free_bits():
    sys.path.insert(0, str(_DIR))
    try:
        import _common as C
    finally:
        sys.path.remove(str(_DIR))
    assert C.network_variant("SVAEPlus/no-free-bits") == ("SVAEPlus", {"kl_free_bits": 0.0})
    assert C.network_variant("SVAEPlus/seen-space") == ("SVAEPlus", {})


def test_dense_twin_holds_the_sparse_models_networks():
    import svae_lite as sl

    gap = _load("likelihood_gap")
    adata = sl.simulate(n_latent=3, n_perturbations=4, n_heldout=0, n_cells_per_perturbation=10,
                        n_genes=12, seed=0)
    sl.SVAEPlus.setup_anndata(adata)
    sparse = sl.SVAEPlus(adata, n_latent=3)
    twin = gap.dense_twin(sparse, adata)
    assert isinstance(twin, sl.iVAE)
    mine, theirs = twin.module.state_dict(), sparse.module.state_dict()
    assert mine.keys() <= theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_phase_scores_leave_training_unchanged(small_train):
    """likelihood_phases.scorer scores during training from a forked random stream: the fit
    is the same as without it, and the last epoch's score is the trained model's IWELBO."""
    import svae_lite as sl

    phases = _load("likelihood_phases")
    fits, rows = [], []
    for callbacks in ([], None):
        data = small_train.copy()
        sl.SVAEPlus.setup_anndata(data)
        model = sl.SVAEPlus(data, n_latent=4, seed=0)
        if callbacks is None:
            callbacks = [phases.scorer(model, data[:60], {2, 4}, 0, rows, "SVAEPlus")]
        model.train(max_epochs=4, seed=0, enable_progress_bar=False, callbacks=callbacks)
        fits.append(model)
    z = [m.get_latent_representation() for m in fits]
    assert np.array_equal(z[0], z[1])
    assert [(r["epoch"], r["dense"]) for r in rows] == [(2, True), (4, False)]
    final = fits[1].get_marginal_ll(data[:60], n_samples=100, return_mean=True, seed=0)
    assert rows[-1]["seen_iwelbo"] == pytest.approx(final, abs=1e-6)
    assert fits[1].history_ is not None  # scoring did not mark the model trained mid-way
