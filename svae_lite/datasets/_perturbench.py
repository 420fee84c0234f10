"""Norman et al. (2019) and McFaline-Figueroa et al. (2023), from perturbench's ``devel.h5ad``.

``devel.h5ad`` holds subsets of both screens, log1p-normalized, on 500 genes that were
highly variable across both; the loaders take one screen's cells and recover their counts.
"""
from __future__ import annotations

import os

import anndata
import numpy as np
import pandas as pd
from anndata import AnnData

from ._files import check_source, fetch
from ._preprocess import categorical, recover_counts, without_empty_genes

#: ``obs['dataset']`` value in devel.h5ad -> (its conversion's file name, citation).
_DEVEL_SOURCES = {
    "norman19": (
        "norman2019_k562_subset.h5ad",
        "Norman et al. 2019, Science, K562 CRISPRa single and double perturbations (subset)",
    ),
    "mcfaline23": (
        "mcfaline2023_gbm_subset.h5ad",
        "McFaline-Figueroa et al. 2023, Cell Genomics, CRISPRi in three glioblastoma lines "
        "A172/T98G/U87MG (subset)",
    ),
}


def _screen_from_devel(devel: AnnData, dataset: str, title: str) -> AnnData:
    """The cells of ``devel`` whose ``obs['dataset']`` is ``dataset`` (cells x 500 genes),
    with integer counts recovered from its log1p-normalized ``X`` and a tidy ``obs``."""
    sub = devel[devel.obs["dataset"].astype(str).to_numpy() == dataset]
    o = sub.obs
    obs = pd.DataFrame(
        {
            "perturbation": categorical(o["perturbation"].astype(str)),
            "perturbation_type": categorical(o["perturbation_type"].astype(str)),
            "cell_type": categorical(o["cell_type"].astype(str)),
            "dose": categorical(o["dose"].astype(str)),
            "total_counts_all_genes": o["ncounts"].to_numpy(dtype=np.float64),
            "n_genes_all": o["ngenes"].to_numpy(dtype=np.int32),
        },
        index=pd.Index(o.index.astype(str)),
    )
    adata = AnnData(X=recover_counts(sub.X), obs=obs,
                    var=pd.DataFrame(index=pd.Index(devel.var_names.astype(str))))
    adata.uns["source"] = {
        "dataset": title,
        "obtained_from": "perturbench (altoslabs/perturbench, commit d357dfa, "
                         "src/perturbench/data/resources/devel.h5ad), BSD-3-Clause license",
        "processing": "500 highly variable genes of the source; integer UMI counts recovered "
                      "from log1p-normalized values (svae_lite.datasets.recover_counts)",
    }
    return adata


def _load_devel_screen(dataset: str, loader: str, data_dir, source: str, download: bool,
                       drop_empty_genes: bool) -> AnnData:
    """One screen of devel.h5ad (``source="original"``) or its conversion (``"converted"``),
    tagged with the public ``loader``'s name in ``uns['svae_lite_loader']``."""
    conv, title = _DEVEL_SOURCES[dataset]
    check_source(source, ("original", "converted"))
    if source == "converted":
        adata = anndata.read_h5ad(fetch(conv, data_dir, download=False))
    else:
        devel = anndata.read_h5ad(fetch("devel.h5ad", data_dir, download=download))
        adata = _screen_from_devel(devel, dataset, title)
    if drop_empty_genes:
        adata = without_empty_genes(adata)
    adata.uns["svae_lite_loader"] = loader
    return adata


def norman2019(data_dir: str | os.PathLike | None = None, source: str = "original",
               download: bool = True, drop_empty_genes: bool = True) -> AnnData:
    """Norman et al. (2019, Science): CRISPRa in K562 cells, single and double perturbations.

    A subset of 3,375 cells: ``control``, 18 single genes and 15 pairs ``"A+B"`` whose two
    genes are also among the singles (about 100 cells each), 500 genes (highly variable in
    the source, which also holds the McFaline-Figueroa cells; 250 of them have no counts in
    these cells and are dropped unless ``drop_empty_genes=False``).

    Parameters
    ----------
    source
        ``"original"`` (default): counts recovered exactly from ``devel.h5ad``
        (:func:`recover_counts`); ``"converted"``: read ``norman2019_k562_subset.h5ad``, a
        conversion that divides each cell by its smallest value and rounds (it differs from
        the exact counts in 2 cells whose smallest count is 2).

    Returns
    -------
    AnnData of raw counts; ``obs``: ``perturbation``, ``perturbation_type``, ``cell_type``,
    ``dose`` (``"1"`` or ``"1+1"``), ``total_counts_all_genes``, ``n_genes_all``.
    """
    return _load_devel_screen("norman19", "norman2019", data_dir, source, download, drop_empty_genes)


def mcfaline2023(data_dir: str | os.PathLike | None = None, source: str = "original",
                 download: bool = True, drop_empty_genes: bool = True) -> AnnData:
    """McFaline-Figueroa et al. (2023, Cell Genomics): CRISPRi of 9 kinases in 3
    glioblastoma cell lines.

    A subset of 2,586 cells: ``control`` + 9 knocked-down genes in each of A172, T98G and
    U87MG (``obs['cell_type']``), 500 genes (those without counts here are dropped unless
    ``drop_empty_genes=False``). ``source`` as in :func:`norman2019`.
    """
    return _load_devel_screen("mcfaline23", "mcfaline2023", data_dir, source, download, drop_empty_genes)
