"""In-memory minibatches for training: the counts and labels preloaded as tensors.

scvi-tools' ``AnnDataLoader`` slices the AnnData for every minibatch (sparse row indexing,
densifying, a NumPy-to-torch copy and, on a GPU, a host-to-device copy). For the data sizes
of perturbation screens (116k cells x 1.2k genes are 0.56 GB as dense float32) the whole
count matrix fits in memory, also in a GPU's, so :class:`TensorDataSplitter` densifies it
once, on the training device, and cuts minibatches by indexing that tensor. Above a size
limit it falls back to scvi-tools' loader.

Models select it through scvi-tools' ``_data_splitter_cls`` hook; ``model.train(...,
datasplitter_kwargs={"in_memory": False})`` restores scvi-tools' own loader.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from scvi.dataloaders import DataSplitter

logger = logging.getLogger(__name__)

__all__ = ["TensorDataSplitter", "TensorBatchLoader", "dense_tensor", "count_batches", "library_sizes"]

#: Largest dense count matrix (bytes, float32) preloaded on the CPU / on a GPU (there at
#: most half of the free memory).
MAX_DENSE_BYTES_CPU = 8 * 2**30
MAX_DENSE_BYTES_GPU = 8 * 2**30


def dense_tensor(X, device: torch.device | str = "cpu", chunk_rows: int = 8192) -> torch.Tensor:
    """A (cells, genes) float32 tensor on ``device`` from a dense or sparse matrix.

    Sparse matrices are densified ``chunk_rows`` rows at a time straight into the
    preallocated tensor, so the host never holds a second full dense copy.
    """
    n, g = X.shape
    device = torch.device(device)
    if not sp.issparse(X) and device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    out = torch.empty((n, g), dtype=torch.float32, device=device)
    for s in range(0, n, chunk_rows):
        block = X[s:s + chunk_rows]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        out[s:s + chunk_rows] = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(device)
    return out


def count_batches(X, codes, batch_size: int, device):
    """Minibatches ``(x, c)`` of a (cells, genes) dense or sparse count matrix for inference:
    ``x`` (b, genes) float32 on ``device``, ``c`` (b,) int64 label codes (None if ``codes``
    is None). Only one minibatch is dense at a time; cells in their order."""
    for s in range(0, X.shape[0], batch_size):
        block = X[s:s + batch_size]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        x = torch.as_tensor(np.asarray(block, dtype=np.float32), device=device)
        c = None if codes is None else torch.as_tensor(codes[s:s + batch_size], device=device)
        yield x, c


def library_sizes(X) -> np.ndarray:
    """Total counts of every cell, (cells,), without densifying a sparse matrix."""
    return np.asarray(X.sum(axis=1)).ravel()


class TensorBatchLoader:
    """Iterable of minibatches ``{"X": (b, genes) float32, "labels": (b, 1) int64}`` cut
    from preloaded tensors (on the training device).

    Parameters
    ----------
    X, labels
        Tensors of all cells (same device).
    indices
        Cells this loader serves (a training, validation or test split), (n,) int64.
    batch_size
        Cells per minibatch. A last minibatch of fewer than 3 cells is merged into the one
        before it (batch norm needs more than one cell; every cell is still seen each epoch).
    shuffle
        New random order every epoch (torch's global generator: seeded runs repeat).
    """

    def __init__(self, X: torch.Tensor, labels: torch.Tensor, indices, batch_size: int,
                 shuffle: bool):
        self.X, self.labels = X, labels
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.batch_size, self.shuffle = int(batch_size), bool(shuffle)
        n, b = len(self.indices), self.batch_size
        edges = list(range(0, n, b)) + [n]
        if len(edges) > 2 and edges[-1] - edges[-2] < 3:
            del edges[-2]
        self._edges = edges

    def __len__(self) -> int:
        return len(self._edges) - 1

    def __iter__(self):
        idx = self.indices
        if self.shuffle:
            idx = idx[torch.randperm(len(idx))]
        idx = idx.to(self.X.device, non_blocking=True)
        for s, e in zip(self._edges[:-1], self._edges[1:]):
            ix = idx[s:e]
            yield {REGISTRY_KEYS.X_KEY: self.X.index_select(0, ix),
                   REGISTRY_KEYS.LABELS_KEY: self.labels.index_select(0, ix)}


class TensorDataSplitter(DataSplitter):
    """scvi-tools' ``DataSplitter`` (same train/validation/test split, same arguments) whose
    loaders serve minibatches from the count matrix preloaded on the training device.

    Extra keyword
    -------------
    split_seed
        Seed of the shuffle before the train/validation split (scvi-tools uses
        ``scvi.settings.seed``, fresh entropy when unset); None keeps scvi-tools' behaviour.
    in_memory
        ``True`` (default): preload when the dense matrix is at most
        :data:`MAX_DENSE_BYTES_CPU` (CPU) or :data:`MAX_DENSE_BYTES_GPU` and half the free
        memory (GPU), else use scvi-tools' ``AnnDataLoader``; ``False``: always
        ``AnnDataLoader``.
    """

    def __init__(self, adata_manager, *args, in_memory: bool = True, split_seed: int | None = None,
                 **kwargs):
        self.split_seed = split_seed
        if not isinstance(in_memory, bool):
            raise TypeError(f"in_memory={in_memory!r} must be True or False.")
        with warnings.catch_warnings():
            if in_memory:  # a tiny last batch is merged by TensorBatchLoader, not an error
                warnings.filterwarnings("ignore", message="Last batch will have a small size")
            super().__init__(adata_manager, *args, **kwargs)
        self.in_memory = in_memory and not kwargs.get("distributed_sampler", False)
        self._tensors = None
        self._decided = None

    def setup(self, stage: str | None = None):
        """scvi-tools' split, with the shuffle seeded by ``split_seed`` when given."""
        if self.split_seed is None or self.external_indexing is not None or not self.shuffle_set_split:
            return super().setup(stage)
        n = self.adata_manager.adata.n_obs
        indices = np.random.RandomState(seed=self.split_seed).permutation(np.arange(n))
        self.val_idx = indices[:self.n_val]
        self.train_idx = indices[self.n_val:self.n_val + self.n_train]
        self.test_idx = indices[self.n_val + self.n_train:]

    # -- device and size ---------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def _fits(self, device: torch.device) -> bool:
        X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        if not (isinstance(X, np.ndarray) or sp.issparse(X)):
            logger.info("Counts stored as %s (e.g. backed): using AnnDataLoader.", type(X).__name__)
            return False
        n, g = self.adata_manager.adata.shape
        nbytes = 4 * n * g
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            ok = nbytes <= min(MAX_DENSE_BYTES_GPU, free // 2)
        else:
            ok = nbytes <= MAX_DENSE_BYTES_CPU
        if not ok:
            logger.info("Counts (%.1f GB dense) too large to preload on %s: using AnnDataLoader.",
                        nbytes / 2**30, device)
        return ok

    def _load(self):
        device = self._device()
        if self._tensors is None or self._tensors[0].device != device:
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            labels = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
            labels = torch.as_tensor(labels.reshape(-1, 1).astype(np.int64)).to(device)
            self._tensors = (dense_tensor(X, device), labels)
        return self._tensors

    def _loader(self, indices, shuffle: bool):
        X, labels = self._load()
        bs = self.data_loader_kwargs.get("batch_size") or 128
        return TensorBatchLoader(X, labels, indices, bs, shuffle=shuffle)

    def _use_memory(self) -> bool:
        if self._decided is None:
            self._decided = self.in_memory and self._fits(self._device())
        return self._decided

    # -- Lightning hooks -----------------------------------------------------------------
    def train_dataloader(self):
        if not self._use_memory():
            return super().train_dataloader()
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self):
        if not self._use_memory():
            return super().val_dataloader()
        if len(self.val_idx) > 0:
            return self._loader(self.val_idx, shuffle=False)
        return None

    def test_dataloader(self):
        if not self._use_memory():
            return super().test_dataloader()
        if len(self.test_idx) > 0:
            return self._loader(self.test_idx, shuffle=False)
        return None

    def teardown(self, stage: str | None = None):
        # Free the preloaded copy (GPU memory) after training; decide again next time.
        self._tensors, self._decided = None, None
