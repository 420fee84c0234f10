"""The interfaces between model, module and prior, and the inputs they refuse."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import svae_lite as sl
from svae_lite.priors import DenseShift, SparseShift, StandardNormal

FIT = dict(enable_progress_bar=False, batch_size=64)


# ---------------------------------------------------------------- bad inputs
def test_only_control_cells_is_refused_by_shift_models(small_train):
    ctrl = small_train[small_train.obs["perturbation"] == "control"].copy()
    for cls in (sl.iVAE, sl.SVAE, sl.SVAEPlus):
        cls.setup_anndata(ctrl)
        with pytest.raises(ValueError, match="only control cells.*use VAE"):
            cls(ctrl, n_latent=3)
    sl.VAE.setup_anndata(ctrl)
    model = sl.VAE(ctrl, n_latent=3)  # a VAE needs no perturbations
    model.train(max_epochs=1, **FIT)
    assert np.isfinite(model.get_latent_representation()).all()


def test_duplicate_gene_names_are_refused(small_train):
    dup = small_train.copy()
    names = list(dup.var_names)
    names[1] = names[0]
    dup.var_names = names
    with pytest.raises(ValueError, match=r"duplicated gene names.*var_names_make_unique"):
        sl.SVAEPlus.setup_anndata(dup)
    assert "_svae_perturbation" not in dup.obs  # nothing registered


# ---------------------------------------------------------------- priors
def test_priors_answer_the_same_methods():
    labels = torch.tensor([0, 1, 2])
    for prior in (StandardNormal(3, 4, 0), DenseShift(3, 4, 0), SparseShift(3, 4, 0)):
        loc, scale = prior.compose([1, 2])
        assert loc.shape == scale.shape == (4,)
        assert prior.kl_per_latent(torch.zeros(3, 4), torch.ones(3, 4), labels).shape == (3, 4)
        assert prior.intervention_probabilities().shape == (3, 4)
        assert float(prior.penalty(cells_per_label=10.0)) >= 0.0 or prior.learns_targets
        prior.set_dense(True)
    with pytest.raises(ValueError, match="no perturbation shifts"):
        StandardNormal(3, 4, 0).shifts()
    with pytest.raises(ValueError, match="no masks"):
        DenseShift(3, 4, 0).start_sparse_phase()


def test_compose_adds_shifts_and_log_scales_over_the_union_of_targets():
    prior = SparseShift(3, 4, 0, estimator="exact")
    with torch.no_grad():
        prior.shift.copy_(torch.arange(12.0).reshape(3, 4))
        prior.log_scale.fill_(0.1)
        prior.mask_logit.copy_(torch.tensor([[5.0] * 4, [5, -5, -5, -5], [-5, 5, -5, -5]]))
    loc, scale = prior.compose([1, 2])
    np.testing.assert_allclose(loc.numpy(), [4.0, 9.0, 0.0, 0.0])
    np.testing.assert_allclose(scale.numpy(), np.exp([0.1, 0.1, 0.0, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(prior.shifts()[1].numpy(), [4.0, 0.0, 0.0, 0.0])
    prior.set_dense(True)  # masks held at 1: every latent shifts
    np.testing.assert_allclose(prior.compose([1])[0].numpy(), [4.0, 5.0, 6.0, 7.0])


def test_tempered_penalty_uses_cells_per_label_only_when_asked():
    def pen(scale, cells):
        torch.manual_seed(0)
        p = SparseShift(5, 3, 0, penalty="l0", sparsity=1.0, penalty_scale=scale)
        return float(p.penalty(cells_per_label=cells))

    assert pen("dataset", 10.0) == pytest.approx(pen("dataset", 1.0))
    assert pen("cells", 10.0) == pytest.approx(10 * pen("cells", 1.0))
    # log_cells: a row of n cells pays log(n) times its code length (BIC-like growth)
    assert pen("log_cells", np.e ** 3) == pytest.approx(3 * pen("log_cells", np.e))
    assert pen("log_cells", 1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="penalty_scale='cell'"):
        SparseShift(5, 3, 0, penalty_scale="cell")


def test_lead_log_cells_prices_the_largest_shift_of_a_row_like_log_cells():
    """lead_log_cells: each row's largest |shift| pays log(n) times, the others n times."""
    def pen(scale, cells, lead_only):
        p = SparseShift(3, 3, 0, penalty="l0", sparsity=1.0, penalty_scale=scale)
        with torch.no_grad():
            p.shift.copy_(torch.tensor([[0.0, 0.0, 0.0], [0.2, -3.0, 0.5], [1.0, 0.1, 0.0]]))
            # only the lead entries on (rows 1 and 2: latents 1 and 0), or every entry on
            on = torch.tensor([[9.0, 9.0, 9.0], [-30, 30, -30], [30, -30, -30]])
            p.mask_logit.copy_(on if lead_only else torch.full((3, 3), 30.0))
        return float(p.penalty(cells_per_label=cells))

    n = np.e ** 4
    assert pen("lead_log_cells", n, True) == pytest.approx(pen("log_cells", n, True), rel=1e-6)
    assert pen("lead_log_cells", n, True) == pytest.approx(2 * 4.0, rel=1e-6)
    # the four non-lead entries pay n each on top of the leads' log(n)
    assert pen("lead_log_cells", n, False) == pytest.approx(2 * 4.0 + 4 * n, rel=1e-6)


# ---------------------------------------------------------------- module
def test_freeze_shared_trains_only_the_new_rows(small_train):
    sl.iVAE.setup_anndata(small_train)
    module = sl.iVAE(small_train, n_latent=3).module
    trainable = torch.zeros(module.prior.n_labels, dtype=torch.bool)
    trainable[-1] = True
    hooks = module.freeze_shared_(trainable)
    module.train()
    assert module.networks_frozen and not module.encoder.training
    assert all(not p.requires_grad for n, p in module.named_parameters() if not n.startswith("prior."))
    codes = torch.arange(module.prior.n_labels)
    loc, _ = module.prior.loc_scale(codes)
    loc.sum().backward()
    grad = module.prior.shift.grad
    assert torch.all(grad[:-1] == 0) and torch.all(grad[-1] != 0)
    for h in hooks:
        h.remove()


def test_alignment_rotation_hook_and_record(small_train):
    sl.SVAEPlus.setup_anndata(small_train)
    model = sl.SVAEPlus(small_train, n_latent=3, n_hidden=16)
    seen = {}

    def hook(m):
        seen["z"] = m.get_latent_representation()
        return None  # keep the sparsest rotation

    model.train(max_epochs=4, dense_fraction=0.5, alignment_rotation=hook, **FIT)
    rec = model.alignment_
    assert rec["epoch"] == 2 and np.isfinite(rec["objective"])
    R = rec["rotation"]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert seen["z"].shape == (small_train.n_obs, 3)
    sl.iVAE.setup_anndata(small_train)
    with pytest.raises(ValueError, match="only apply to sparse models"):
        sl.iVAE(small_train, n_latent=3).train(max_epochs=1, alignment_rotation=np.eye(3), **FIT)


def test_align_rotates_latents_exactly(small_train):
    sl.SVAEPlus.setup_anndata(small_train)
    model = sl.SVAEPlus(small_train, n_latent=3, n_hidden=16)
    model.module.prior.set_dense(True)
    before = model.get_latent_representation()
    R = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    rec = model.module.align_(rotation=R)
    np.testing.assert_allclose(model.get_latent_representation(), before @ R, atol=1e-4)
    assert np.isnan(rec["objective"]) and not bool(model.module.prior.dense)


# ---------------------------------------------------------------- model
def test_queries_read_sparse_counts_like_dense(small_train):
    sl.iVAE.setup_anndata(small_train)
    model = sl.iVAE(small_train, n_latent=3, n_hidden=16)
    dense = small_train.copy()
    dense.X = np.asarray(dense.X.toarray() if sp.issparse(dense.X) else dense.X)
    sparse = small_train.copy()
    sparse.X = sp.csr_matrix(dense.X)
    np.testing.assert_array_equal(model.get_latent_representation(dense, batch_size=7),
                                  model.get_latent_representation(sparse, batch_size=7))
    lls = []
    for data in (dense, sparse):
        torch.manual_seed(0)  # the importance samples
        lls.append(model.get_marginal_ll(data, n_samples=3))
    np.testing.assert_allclose(lls[0], lls[1], rtol=1e-5)


def test_validation_split_is_seeded(small_train):
    sl.VAE.setup_anndata(small_train)
    hist = []
    for _ in range(2):
        m = sl.VAE(small_train, n_latent=3, n_hidden=16, seed=0)
        m.train(max_epochs=2, train_size=0.8, check_val_every_n_epoch=1, seed=5, **FIT)
        hist.append(m.history["elbo_validation"].to_numpy())
    np.testing.assert_array_equal(hist[0], hist[1])


def test_plan_options_follow_scvi_tools():
    from svae_lite._validation import check_plan_kwargs, plan_kwargs_options

    opts = plan_kwargs_options()
    assert {"lr", "prior_lr", "n_epochs_kl_warmup", "max_kl_weight"} <= set(opts)
    with pytest.raises(ValueError, match="not supported"):
        check_plan_kwargs({"optimizer": "AdamW"}, 10)


def test_load_names_a_missing_save(tmp_path, small_train):
    with pytest.raises(FileNotFoundError, match="No saved model"):
        sl.SVAEPlus.load(str(tmp_path / "nowhere"), adata=small_train)


# ---------------------------------------------------------------- transfer (sparse models)
def _penalty_per_cell_of_row(prior, cells, k):
    """A row's share of the tempered mask penalty, per cell of its perturbation."""
    rows = prior.is_perturbed.squeeze(1).bool()
    m = torch.sigmoid(prior.mask_logit[rows])
    share = -prior.penalty_weight * prior._log_prior_entries(m).sum(1)
    return float(share[k - 1])  # row k is the (k-1)-th perturbed row (control is row 0)


def _fit_on_train_split(adata, cls, max_epochs):
    """``cls`` trained on the training perturbations; returns (model, train, held out)."""
    train = adata[adata.obs["split"] == "train"].copy()
    held = adata[adata.obs["split"] == "heldout"].copy()
    cls.setup_anndata(train)
    model = cls(train, n_latent=3, n_hidden=16)
    model.train(max_epochs=max_epochs, **FIT)
    return model, train, held


def test_mask_penalty_of_a_perturbation_is_the_same_in_train_and_transfer(small_adata):
    model, train, held = _fit_on_train_split(small_adata, sl.SVAEPlus, 4)
    counts = train.obs["perturbation"].value_counts()
    cells = model.module.label_cells.numpy()
    assert [cells[model.perturbations_.index(p)] for p in counts.index] == counts.tolist()
    new = model.transfer(held, max_epochs=4, **FIT)
    held_counts = held.obs["perturbation"].value_counts()
    cells_new = new.module.label_cells.numpy()
    n_old = len(model.perturbations_)
    assert np.all(cells_new[:n_old] == 0)  # frozen rows are not fitted
    for p, n in held_counts.items():
        assert cells_new[new.perturbations_.index(p)] == n
    # each row pays, per cell, penalty_weight times its code length given the other rows,
    # whichever of train() and transfer() fits it
    prior = new.module.prior
    k = new.perturbations_.index(held_counts.index[0])
    per_cell = _penalty_per_cell_of_row(prior, cells_new, k)
    joint = SparseShift(prior.n_labels, 3, 0, penalty="beta_bernoulli", sparsity=prior.sparsity,
                        penalty_scale="cells", penalty_weight=prior.penalty_weight)
    with torch.no_grad():
        joint.mask_logit.copy_(prior.mask_logit)
    assert per_cell == pytest.approx(_penalty_per_cell_of_row(joint, np.ones(prior.n_labels), k))


def test_penalty_weights_each_row_by_its_cells():
    prior = SparseShift(4, 2, 0, penalty="l0", sparsity=1.0, penalty_scale="cells")
    with torch.no_grad():
        prior.mask_logit.copy_(torch.tensor([[0.0, 0.0], [10.0, -10.0], [10.0, 10.0], [-10.0, -10.0]]))
    cells = torch.tensor([100.0, 5.0, 7.0, 0.0])
    p = torch.sigmoid(prior.mask_logit[1:]).sum(1)
    assert float(prior.penalty(cells)) == pytest.approx(float((cells[1:] * p).sum()), rel=1e-6)


@pytest.mark.slow
def test_transferred_masks_become_sparse():
    adata = sl.simulate(n_latent=4, n_perturbations=20, n_cells_per_perturbation=60, n_genes=40,
                        n_heldout=4, n_targets=(1, 1), seed=7)
    train = adata[adata.obs["split"] == "train"].copy()
    held = adata[adata.obs["split"] == "heldout"].copy()
    sl.SVAEPlus.setup_anndata(train)
    model = sl.SVAEPlus(train, n_latent=4, n_hidden=32, seed=0)
    model.train(max_epochs=100, **FIT)
    new = model.transfer(held, **FIT)
    learned = new.get_intervention_targets().loc[held.obs["perturbation"].unique()]
    density = float((learned.to_numpy() > 0.5).mean())
    assert 0.0 < density <= 0.7, learned.round(2)  # one true target of 4; all-on masks: 1.0
    dense = model.transfer(held, dense_fraction=0.0, **FIT)  # masks start all on and stay on
    assert float((dense.get_intervention_targets().loc[learned.index].to_numpy() > 0.5).mean()) > density


def test_transfer_warns_when_too_short_to_learn_shifts(small_adata):
    model, _, held = _fit_on_train_split(small_adata, sl.iVAE, 2)
    with pytest.warns(sl.SvaeLiteWarning, match="optimisation steps"):
        model.transfer(held, max_epochs=3, **FIT)
