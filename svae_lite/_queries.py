"""What a trained model answers: latents, targets, shifts, held-out likelihood, predictions.

:class:`QueryMixin` is mixed into :class:`svae_lite.ShiftModel`. Queries read any AnnData
with the training genes (held-out cells, new perturbations) without registering it, so the
user's AnnData is never written to; counts are read one minibatch at a time, so a sparse
matrix is never densified whole.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from . import _validation as V
from ._data import count_batches, library_sizes

__all__ = ["QueryMixin"]


class QueryMixin:
    """Queries of a fitted :class:`~svae_lite.ShiftModel` (needs ``module``, ``adata``,
    ``adata_manager``, ``perturbations_``, ``control_`` and ``device``)."""

    # ------------------------------------------------------------------ reading data
    def _counts(self, adata: AnnData | None):
        """The count matrix (cells, genes) of ``adata`` (None: the training data), checked,
        in the registered layer, as stored (dense or sparse)."""
        if adata is None:
            adata = self.adata
        if not isinstance(adata, AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        V.check_genes_match(adata.var_names, self.adata.var_names)
        layer = self.adata_manager.registry["setup_args"].get("layer")
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"The model reads counts from layer {layer!r}, which this AnnData lacks "
                           f"(layers: {list(adata.layers)}).")
        X = adata.X if layer is None else adata.layers[layer]
        if adata is not self.adata:
            V.check_counts(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
        return X

    def _label_codes(self, adata: AnnData | None) -> np.ndarray:
        """Each cell's perturbation as the model's code, (cells,) int64; every label must be
        known to the model."""
        if adata is None:
            adata = self.adata
        key = self.adata_manager.registry["setup_args"]["perturbation_key"]
        if key not in adata.obs:
            raise KeyError(f"adata.obs has no column {key!r} (the model's perturbation_key).")
        labels = adata.obs[key].astype(str).to_numpy()
        index = {p: i for i, p in enumerate(self.perturbations_)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(
                f"Perturbations never seen in training: {unknown[:10]}"
                f"{'...' if len(unknown) > 10 else ''}. Learn them first with "
                "`model.transfer(adata_new)`, or drop those cells."
            )
        return np.array([index[p] for p in labels], dtype=np.int64)

    def _frame(self, table: torch.Tensor) -> pd.DataFrame:
        """A (labels, d) table as a DataFrame over the perturbations (control dropped)."""
        idx = [i for i, p in enumerate(self.perturbations_) if p != self.control_]
        T = table.numpy()
        return pd.DataFrame(T[idx], index=[self.perturbations_[i] for i in idx],
                            columns=[f"latent_{j}" for j in range(T.shape[1])])

    # ------------------------------------------------------------------ queries
    @torch.no_grad()
    def get_latent_representation(self, adata: AnnData | None = None, give_mean: bool = True,
                                  batch_size: int = 1024) -> np.ndarray:
        """Posterior mean (or a sample) of z for every cell: array (cells, n_latent)."""
        self.module.eval()
        X = self._counts(adata)
        out = []
        for x, _ in count_batches(X, None, batch_size, self.device):
            qz = self.module.inference(x)["qz"]
            out.append((qz.loc if give_mean else qz.sample()).cpu().numpy())
        return np.concatenate(out)

    def get_intervention_targets(self) -> pd.DataFrame:
        """Probability that each perturbation targets each latent: DataFrame (K x d) in [0, 1].

        Sparse models: the mask probabilities sigmoid(logit). iVAE: 1 everywhere (every latent
        may shift). VAE/beta-VAE: 0 everywhere (no perturbation-specific prior).
        """
        return self._frame(self.module.prior.intervention_probabilities())

    def get_shifts(self) -> pd.DataFrame:
        """Learned mean shift of every latent per perturbation (K x d), in control standard
        deviations; for sparse models entries whose mask probability is <= 0.5 are 0."""
        if not self.module.prior.has_shifts:
            raise ValueError(f"{type(self).__name__} has no perturbation shifts (its prior is N(0, I)).")
        return self._frame(self.module.prior.shifts())

    @torch.no_grad()
    def get_marginal_ll(self, adata: AnnData | None = None, n_samples: int = 100,
                        batch_size: int = 256, return_mean: bool = False,
                        seed: int | None = None):
        """Importance-weighted log-likelihood log p(x | perturbation, library) per cell (nats).

        Uses ``n_samples`` draws from q(z|x) (IWELBO, a lower bound); sparse models use the
        most probable mask, so this bounds log p(x | a, m_MAP), not the likelihood with the
        mask integrated out. Every cell's perturbation must be known to the model (see
        :meth:`transfer`). With ``seed`` the draws are seeded (the same numbers whatever ran
        before, and torch's global random state is left as it was); without it they come
        from torch's global random state.

        Returns
        -------
        array (cells,), or its mean if ``return_mean``.
        """
        n_samples = V.check_positive_int(n_samples, "n_samples")
        if seed is None:
            ll = self._marginal_ll(adata, n_samples, batch_size)
        else:
            seed = V.check_seed(seed)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                ll = self._marginal_ll(adata, n_samples, batch_size)
        return float(ll.mean()) if return_mean else ll

    def _marginal_ll(self, adata, n_samples: int, batch_size: int) -> np.ndarray:
        self.module.eval()
        X, codes = self._counts(adata), self._label_codes(adata)
        out = []
        bs = max(1, batch_size * 100 // max(n_samples, 1))
        for x, c in count_batches(X, codes, bs, self.device):
            out.append(self.module.marginal_ll(x, c, n_samples=n_samples).cpu().numpy())
        return np.concatenate(out)

    def _codes_of(self, name: str) -> list[int]:
        """Codes of a known perturbation or of a combination ``"A+B"`` of known ones."""
        index = {p: i for i, p in enumerate(self.perturbations_)}
        parts = [name] if name in index else name.split("+")
        unknown = [p for p in parts if p not in index]
        if unknown:
            raise ValueError(
                f"Perturbation(s) {unknown} in {name!r} were never seen in training (known: "
                f"{self.perturbations_[:10]}{'...' if len(index) > 10 else ''}). Learn them "
                "from cells with `model.transfer(adata_new)` and predict with the returned model."
            )
        return [index[p] for p in parts]

    @torch.no_grad()
    def predict(self, perturbations, n_cells: int = 500, library_size: float | None = None,
                seed: int = 0) -> pd.DataFrame:
        """Predicted mean expression (genes, as expected counts) for perturbations.

        Draws ``n_cells`` latents from the prior p(z | a), decodes them and averages the
        expected counts at ``library_size`` UMIs (default: median total counts of the
        training cells). A combination ``"A+B"`` of known perturbations is predicted by
        composing their mechanisms (``prior.compose``: the union of their targets, shifts
        and log-scales added).

        Returns
        -------
        DataFrame (perturbations x genes) of expected counts per cell.
        """
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        n_cells = V.check_positive_int(n_cells, "n_cells")
        if library_size is None:
            library_size = float(np.median(library_sizes(self._counts(None))))
        gen = torch.Generator().manual_seed(seed)
        d = self.module.n_latent
        lib = torch.full((n_cells, 1), math.log(library_size)).to(self.device)
        rows = []
        self.module.eval()
        for name in perturbations:
            loc, scale = self.module.prior.compose(self._codes_of(str(name)))
            z = loc + scale * torch.randn(n_cells, d, generator=gen)
            px_scale = self.module.generative(z.to(self.device), lib)["px_scale"]
            rows.append((px_scale.mean(0) * library_size).cpu().numpy())
        return pd.DataFrame(np.stack(rows), index=list(perturbations), columns=self.adata.var_names)
