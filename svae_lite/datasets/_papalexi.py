"""Papalexi et al. (2021): the THP-1 ECCITE-seq screen, from the ``sceptredata`` R file."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._files import check_source, fetch, get_data_dir
from ._preprocess import CONTROL, categorical

#: Knocked-out genes of the Papalexi et al. (2021) screen that act in the IFN-gamma ->
#: JAK/STAT -> IRF1 -> PD-L1 pathway (the screen's main finding).
PAPALEXI_IFNG_PATHWAY = ("IFNGR1", "IFNGR2", "JAK2", "STAT1", "IRF1")


def papalexi2021(data_dir: str | os.PathLike | None = None, source: str = "auto",
                 download: bool = True) -> AnnData:
    """Papalexi et al. (2021, Nature Genetics): ECCITE-seq CRISPR knockouts in THP-1 cells.

    gRNAs against 26 genes (IFN-gamma stimulated THP-1 cells, 3 biological replicates), 299
    genes measured (the ``sceptredata`` example, genes downsampled). Each cell is labelled
    by its most abundant gRNA; non-targeting gRNAs give ``"control"`` (2,386 cells). 25
    targets label cells (48 to 1,341 each): no cell's most abundant gRNA targets CD274.

    Parameters
    ----------
    data_dir
        Where to look for / download the files (see :func:`get_data_dir`).
    source
        ``"original"``: build from ``lowmoi_example_data.rda``; ``"converted"``: read
        ``papalexi2021_thp1.h5ad`` (must be present); ``"auto"`` (default): the conversion
        if present with the registered checksum, else the original. Both give the same data.
    download
        Download the original if it is missing.

    Returns
    -------
    AnnData (20,729 cells x 299 genes), raw counts in ``X``; ``obs``: ``perturbation``
    (target gene or ``control``), ``guide`` (the cell's gRNA), ``guide_umis`` and
    ``guide_frac`` (its UMIs and share of the cell's gRNA UMIs), ``replicate``.
    """
    check_source(source, ("auto", "original", "converted"))
    conv = "papalexi2021_thp1.h5ad"
    if source == "converted" or (source == "auto" and (get_data_dir(data_dir) / conv).is_file()):
        adata = anndata.read_h5ad(fetch(conv, data_dir, download=False))
    else:
        adata = _papalexi_from_rda(fetch("lowmoi_example_data.rda", data_dir, download=download))
    adata.uns["svae_lite_loader"] = "papalexi2021"
    return adata


def _read_rda(path: Path) -> dict:
    """The objects of an R ``.rda`` file as nested dicts (``rdata``'s conversion)."""
    import rdata

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Missing constructor.*")
        if hasattr(rdata, "read_rda"):
            return rdata.read_rda(str(path))
        return rdata.conversion.convert(rdata.parser.parse_file(str(path)))


def _dgt_to_csr(m, transpose: bool) -> sp.csr_matrix:
    """An R ``dgTMatrix`` (as parsed by ``rdata``) to CSR; ``transpose`` gives (cols, rows)."""
    shape = tuple(int(s) for s in m.Dim)
    coo = sp.coo_matrix((np.asarray(m.x, dtype=np.float32), (np.asarray(m.i), np.asarray(m.j))), shape=shape)
    return (coo.T if transpose else coo).tocsr()


def _guide_obs(data, G: sp.csr_matrix, name: str) -> pd.DataFrame:
    """Per-cell table of the most abundant gRNA of ``G`` (cells x gRNAs, UMIs).

    Columns: ``perturbation`` (its target, ``control`` for non-targeting), ``guide``,
    ``guide_umis`` and ``guide_frac`` (its UMIs and share of the cell's gRNA UMIs),
    ``replicate``; index ``cell0``, ``cell1``, ...
    """
    grnas = np.array([str(g) for g in data["grna_matrix"].Dimnames[0]], dtype=object)
    Gd = G.toarray()
    total = Gd.sum(1)
    if (total == 0).any():
        raise ValueError(f"{int((total == 0).sum())} cells of {name} have no gRNA UMIs.")
    best = Gd.argmax(1)
    top = Gd[np.arange(len(best)), best]
    targets = data["grna_target_data_frame"]
    target_of = dict(zip(targets["grna_id"].astype(str), targets["grna_target"].astype(str)))
    guide = grnas[best]
    pert = np.array([target_of[g] for g in guide], dtype=object)
    pert[pert == "non-targeting"] = CONTROL
    return pd.DataFrame(
        {
            "perturbation": categorical(pert),
            "guide": categorical(guide),
            "guide_umis": top.astype(np.int64),
            "guide_frac": (top / total).astype(np.float32),
            "replicate": categorical(np.asarray(data["extra_covariates"]["bio_rep"]).astype(str)),
        },
        index=pd.Index([f"cell{i}" for i in range(G.shape[0])]),
    )


def _papalexi_from_rda(path: Path) -> AnnData:
    """The screen as AnnData (cells x genes, raw UMI counts) from ``lowmoi_example_data.rda``.

    The file holds the response matrix (genes x cells), the gRNA matrix (gRNAs x cells), the
    gRNA targets and the replicate of each cell; each cell is labelled by its top gRNA.
    """
    obj = _read_rda(path)
    data = obj["lowmoi_example_data"] if "lowmoi_example_data" in obj else next(iter(obj.values()))
    resp = data["response_matrix"]
    X = _dgt_to_csr(resp, transpose=True)  # cells x genes
    G = _dgt_to_csr(data["grna_matrix"], transpose=True)  # cells x gRNAs
    genes = [str(g) for g in resp.Dimnames[0]]
    adata = AnnData(X=X, obs=_guide_obs(data, G, path.name), var=pd.DataFrame(index=pd.Index(genes)))
    adata.uns["source"] = {
        "dataset": "Papalexi et al. 2021, Nature Genetics, THP-1 ECCITE-seq CRISPR knockout "
                   "screen (gene-downsampled low-MOI example)",
        "obtained_from": "sceptredata R package (Katsevich-Lab/sceptredata, commit ec722d5, "
                         "data/lowmoi_example_data.rda), MIT license",
        "processing": "cells x genes raw UMI counts; each cell labelled by its most abundant "
                      "gRNA; non-targeting gRNAs -> 'control'",
    }
    return adata
