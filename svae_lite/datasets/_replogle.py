"""Replogle et al. (2022): genome-wide K562 CRISPRi Perturb-seq, reduced to a trainable size.

The file (tens of GB) is read in backed mode, a block of cells at a time, in at most two
passes: one to score each perturbation against the controls (when the selection needs the
scores), one to read the kept cells' counts.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._preprocess import CONTROL, categorical, preprocess

_REPLOGLE_URL = ("https://plus.figshare.com/articles/dataset/_Mapping_information-rich_genotype-"
                 "phenotype_landscapes_with_genome-scale_Perturb-seq_Replogle_et_al_2022_"
                 "processed_Perturb-seq_datasets/20029387")


def replogle2022(path: str | os.PathLike, perturbations="strong", genes="responsive",
                 n_perturbations: int | None = None, n_genes: int = 1000,
                 min_cells_per_perturbation: int = 50, min_de_genes: int = 50,
                 z_threshold: float = 5.0, max_cells_per_perturbation: int | None = None,
                 max_control_cells: int | None = None, chunk_size: int = 20_000,
                 seed: int = 0) -> AnnData:
    """Replogle et al. (2022, Cell) genome-wide K562 CRISPRi Perturb-seq, reduced as in the
    sVAE+ paper: strong-effect perturbations, responsive genes, raw counts.

    The file (``K562_gwps_raw_singlecell_01.h5ad``, 65.8 GB, or the smaller
    ``K562_essential_raw_singlecell_01.h5ad``, 10.7 GB) is downloaded by hand from figshare
    (article 20029387); it is read in backed mode, a block of ``chunk_size`` cells at a time.
    Expected schema: ``obs['gene']`` (targeted gene, ``"non-targeting"`` for controls),
    raw UMI counts in ``X``, gene symbols in ``var['gene_name']`` (else ``var_names``).

    The paper kept the perturbations of Replogle et al.'s perturbation clusters (their
    Table S3: perturbations with a strong transcriptional phenotype) and the genes of their
    expression programs. Pass those lists as ``perturbations=`` and ``genes=`` to reproduce
    that selection exactly; by default both are selected from the data the same way:

    - ``perturbations="strong"``: among perturbations with at least
      ``min_cells_per_perturbation`` cells, those that change at least ``min_de_genes``
      genes, a gene counting as changed when the mean of log1p(CP10k) differs from the
      controls' with ``|z| > z_threshold`` (Welch statistic); the ``n_perturbations`` with
      most changed genes if given.
    - ``genes="responsive"``: the ``n_genes`` genes changed by the most selected
      perturbations (ties by the summed ``|z|``), i.e. genes that respond to perturbations;
      ``"hvg"``: scanpy's ``seurat_v3`` highly variable genes of the kept cells.

    Parameters
    ----------
    path
        The local ``.h5ad`` file.
    perturbations
        ``"strong"`` or a list of targeted genes.
    genes
        ``"responsive"``, ``"hvg"`` or a list of gene symbols.
    max_cells_per_perturbation, max_control_cells
        Subsample groups to at most this many cells (seeded by ``seed``).

    Returns
    -------
    AnnData (kept cells x kept genes) of raw counts; ``obs['perturbation']`` (``control``
    for non-targeting), the file's other ``obs`` columns; ``var['n_perturbations_changing']``
    and ``uns['svae_lite_reduction']`` (the statistics and parameters used).
    """
    path = Path(path)
    backed = _open_backed(path)
    try:
        labels, symbols = _labels_and_symbols(backed, path.name)
        pert_mode, gene_mode = _selection_modes(perturbations, genes)
        candidates = _candidate_perturbations(labels, perturbations, min_cells_per_perturbation, path.name)
        z = None  # Welch z (perturbations, genes), computed when a selection needs it
        if pert_mode == "strong" or gene_mode == "responsive":
            z = _welch_z(backed, labels, candidates, chunk_size)
        kept = candidates
        if pert_mode == "strong":
            kept, z = _strongest(z, candidates, z_threshold, min_de_genes, n_perturbations)
        cell_idx = _subsample_cells(labels, kept, max_control_cells, max_cells_per_perturbation, seed)
        gene_idx = _select_genes(gene_mode, genes, z, z_threshold, n_genes, symbols, path.name)
        X = _read_cells(backed, cell_idx, gene_idx, chunk_size)
        obs = backed.obs.iloc[cell_idx].copy()
    finally:
        if backed.isbacked:
            backed.file.close()
    changed = None if z is None else np.abs(z) > z_threshold  # (kept perturbations, all genes)
    adata = _reduced_anndata(X, obs, labels[cell_idx], symbols[gene_idx],
                             None if changed is None else changed[:, gene_idx], gene_mode, n_genes, path.name)
    adata.uns["svae_lite_reduction"] = {
        "file": path.name, "perturbations": pert_mode, "genes": gene_mode,
        "n_perturbations": len(kept), "n_genes": adata.n_vars,
        "min_cells_per_perturbation": min_cells_per_perturbation, "min_de_genes": min_de_genes,
        "z_threshold": z_threshold,
        "changed_genes_per_perturbation": {} if changed is None else dict(zip(kept, changed.sum(1).tolist())),
    }
    adata.uns["svae_lite_loader"] = "replogle2022"
    return adata


def _open_backed(path: Path) -> AnnData:
    """The file opened in backed mode: ``obs`` and ``var`` in memory, ``X`` read on demand
    (the genome-wide file does not fit in memory); FileNotFoundError says where to get it."""
    import anndata as ad

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Download K562_gwps_raw_singlecell_01.h5ad (or "
            f"K562_essential_raw_singlecell_01.h5ad) from {_REPLOGLE_URL} and pass its path."
        )
    return ad.read_h5ad(path, backed="r")


def _labels_and_symbols(backed: AnnData, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's perturbation label, (cells,), and each gene's symbol, (genes,).

    The label is the targeted gene of ``obs['gene']``, ``control`` for ``"non-targeting"``
    (checked to be present: the controls are the reference of every comparison). Symbols
    come from ``var['gene_name']``, as the file's ``var_names`` are Ensembl ids.
    """
    if "gene" not in backed.obs:
        raise KeyError(
            f"{name} has no obs['gene'] column (the targeted gene of each cell); "
            f"columns: {list(backed.obs.columns)[:12]}. Is it a Replogle et al. 2022 file?"
        )
    target = backed.obs["gene"].astype(str).to_numpy()
    if "non-targeting" not in set(target):
        raise ValueError(f"{name} has no 'non-targeting' cells in obs['gene'] to use as controls.")
    symbols = (backed.var["gene_name"].astype(str).to_numpy() if "gene_name" in backed.var
               else backed.var_names.astype(str).to_numpy())
    return np.where(target == "non-targeting", CONTROL, target), symbols


def _selection_modes(perturbations, genes) -> tuple[str, str]:
    """How perturbations and genes are chosen: ``"strong"`` or ``"list"``, and
    ``"responsive"``, ``"hvg"`` or ``"list"``; ValueError for any other string."""
    if isinstance(perturbations, str) and perturbations != "strong":
        raise ValueError(f"perturbations={perturbations!r}: use 'strong' or a list of genes.")
    if isinstance(genes, str) and genes not in ("responsive", "hvg"):
        raise ValueError(f"genes={genes!r}: use 'responsive', 'hvg' or a list of genes.")
    return ("strong" if isinstance(perturbations, str) else "list",
            genes if isinstance(genes, str) else "list")


def _candidate_perturbations(labels: np.ndarray, perturbations, min_cells: int, name: str) -> list[str]:
    """The perturbations to consider, in order: for ``"strong"``, every perturbation with at
    least ``min_cells`` cells (most cells first; fewer cells give too noisy a mean); for a
    list, its entries present in the file (a warning names the absent ones; ValueError if
    none is left)."""
    counts = pd.Series(labels).value_counts()
    if isinstance(perturbations, str):
        return [p for p in counts.index if p != CONTROL and counts[p] >= min_cells]
    wanted = [str(p) for p in perturbations]
    missing = sorted(set(wanted) - set(counts.index))
    if missing:
        warnings.warn(f"{len(missing)} requested perturbations are not in {name} "
                      f"(e.g. {missing[:5]}); they are skipped.", stacklevel=3)
    present = [p for p in dict.fromkeys(wanted) if p in counts.index and p != CONTROL]
    if not present:
        raise ValueError("No perturbation left to keep: check perturbations= and min_cells_per_perturbation.")
    return present


def _row_blocks(backed: AnnData, rows: np.ndarray, chunk_size: int,
                dtype) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """The cells ``rows`` (sorted indices) of ``backed.X``, ``chunk_size`` file rows at a time.

    Yields, for each slice of the file holding some of them, (their indices, CSR of their
    counts (those cells, genes) as ``dtype``): a backed file is read fastest in contiguous
    slices, so each slice is read whole and the wanted cells are taken from it in memory.
    """
    for start in range(0, backed.n_obs, chunk_size):
        stop = min(start + chunk_size, backed.n_obs)
        here = rows[np.searchsorted(rows, start):np.searchsorted(rows, stop)]
        if here.size:
            yield here, sp.csr_matrix(backed.X[start:stop], dtype=dtype)[here - start]


def _group_sums(backed: AnnData, codes: np.ndarray, n_groups: int, chunk_size: int,
                target_sum: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sum and sum of squares of log1p(counts / library * ``target_sum``), each
    (groups, genes) float64, in one pass over ``backed.X`` (cells of code -1 are skipped)."""
    s1 = np.zeros((n_groups, backed.n_vars))
    s2 = np.zeros((n_groups, backed.n_vars))
    for rows, block in _row_blocks(backed, np.flatnonzero(codes >= 0), chunk_size, np.float64):
        lib = np.asarray(block.sum(1)).ravel()
        lib[lib == 0] = 1.0
        block = (sp.diags(target_sum / lib) @ block).tocsr()
        block.data = np.log1p(block.data)
        ind = sp.csr_matrix((np.ones(rows.size), (codes[rows], np.arange(rows.size))), shape=(n_groups, rows.size))
        s1 += np.asarray((ind @ block).todense())
        sq = block.copy()
        sq.data **= 2
        s2 += np.asarray((ind @ sq).todense())
    return s1, s2


def _welch_z(backed: AnnData, labels: np.ndarray, perturbations: list[str], chunk_size: int) -> np.ndarray:
    """Welch z of each perturbation's mean log1p(CP10k) against the controls', per gene:
    (perturbations, genes), 0 where the standard error is 0 (both groups constant).

    z = (mean_p - mean_c) / sqrt(var_p / n_p + var_c / n_c), unbiased variances; it measures
    how far a perturbation moves a gene in units of the noise of the two means.
    """
    groups = [CONTROL] + perturbations
    index = {p: i for i, p in enumerate(groups)}
    codes = np.array([index.get(p, -1) for p in labels], dtype=np.int64)
    s1, s2 = _group_sums(backed, codes, len(groups), chunk_size)
    n = np.bincount(codes[codes >= 0], minlength=len(groups)).astype(float)[:, None]
    mean = s1 / n
    var = np.maximum(s2 / n - mean**2, 0) * n / np.maximum(n - 1, 1)
    se = np.sqrt(var[1:] / n[1:] + var[:1] / n[:1])
    return (mean[1:] - mean[:1]) / np.where(se > 0, se, np.inf)


def _strongest(z: np.ndarray, perturbations: list[str], z_threshold: float, min_de_genes: int,
               n_perturbations: int | None) -> tuple[list[str], np.ndarray]:
    """The perturbations with a strong transcriptional phenotype, and their rows of ``z``.

    Of the rows of ``z`` (perturbations, genes), those that change at least
    ``min_de_genes`` genes (``|z| > z_threshold``), most changed genes first, at most
    ``n_perturbations`` of them. Returns the kept names and ``z`` (kept, genes).
    """
    n_de = pd.Series((np.abs(z) > z_threshold).sum(1))  # indexed by row of z
    strong = n_de[n_de >= min_de_genes].sort_values(ascending=False, kind="stable")
    if n_perturbations is not None:
        strong = strong.iloc[:n_perturbations]
    if strong.empty:
        raise ValueError(
            f"No perturbation changes >= {min_de_genes} genes at |z| > {z_threshold}. "
            "Lower min_de_genes or z_threshold, or pass perturbations= explicitly."
        )
    rows = strong.index.to_numpy()
    return [perturbations[i] for i in rows], z[rows]


def _subsample_cells(labels: np.ndarray, kept: list[str], max_control_cells: int | None,
                     max_cells_per_perturbation: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the cells to keep: the controls and the ``kept`` perturbations'
    cells, each group drawn down (without replacement, seeded) to its cap if larger, so
    that a few huge groups do not dominate training."""
    rng = np.random.default_rng(seed)
    cell_idx = []
    for p in [CONTROL] + kept:
        idx = np.flatnonzero(labels == p)
        cap = max_control_cells if p == CONTROL else max_cells_per_perturbation
        if cap is not None and idx.size > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        cell_idx.append(idx)
    return np.sort(np.concatenate(cell_idx))


def _select_genes(mode: str, genes, z: np.ndarray | None, z_threshold: float, n_genes: int,
                  symbols: np.ndarray, name: str) -> np.ndarray:
    """Sorted column indices of the genes to keep.

    ``"responsive"``: the ``n_genes`` genes changed (``|z| > z_threshold``) by the most
    perturbations of ``z`` (kept perturbations, genes), ties broken by the summed ``|z|``;
    ``"hvg"``: all genes (the highly variable ones are chosen later, on the kept cells); a
    list: those of its symbols found in ``symbols`` (a warning names the others).
    """
    if mode == "responsive":
        n_changing = (np.abs(z) > z_threshold).sum(0)
        score = np.abs(z).sum(0)
        order = np.lexsort((-score, -n_changing))
        return np.sort(order[:n_genes])
    if mode == "hvg":
        return np.arange(len(symbols))
    wanted = [str(g) for g in genes]
    pos = {g: i for i, g in enumerate(symbols)}
    missing = [g for g in wanted if g not in pos]
    if missing:
        warnings.warn(f"{len(missing)} requested genes are not in {name} "
                      f"(e.g. {missing[:5]}); they are skipped.", stacklevel=3)
    gene_idx = np.array(sorted({pos[g] for g in wanted if g in pos}), dtype=np.int64)
    if gene_idx.size == 0:
        raise ValueError("None of the requested genes is in the file.")
    return gene_idx


def _read_cells(backed: AnnData, cell_idx: np.ndarray, gene_idx: np.ndarray, chunk_size: int) -> sp.csr_matrix:
    """Counts of the cells ``cell_idx`` and genes ``gene_idx``: CSR (cells, genes) float32."""
    blocks = [block[:, gene_idx] for _, block in _row_blocks(backed, cell_idx, chunk_size, np.float32)]
    return sp.vstack(blocks).tocsr()


def _reduced_anndata(X: sp.csr_matrix, obs: pd.DataFrame, labels: np.ndarray, symbols: np.ndarray,
                     changed: np.ndarray | None, gene_mode: str, n_genes: int, name: str) -> AnnData:
    """The reduced screen as AnnData, its counts checked to be raw.

    ``labels`` (cells,) become ``obs['perturbation']`` (first column); ``changed`` (kept
    perturbations, genes), when the genes were scored, gives ``var['n_perturbations_changing']``;
    with ``gene_mode="hvg"`` the ``n_genes`` highly variable genes are kept.
    """
    from .._validation import check_counts

    check_counts(X, f"the counts of {name}")
    obs.insert(0, "perturbation", categorical(labels))
    adata = AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(symbols)))
    adata.var_names_make_unique()
    if changed is not None and gene_mode != "hvg":
        adata.var["n_perturbations_changing"] = changed.sum(0)
    if gene_mode == "hvg":
        adata = preprocess(adata, min_counts_per_cell=0, min_cells_per_gene=1, n_top_genes=n_genes)
    return adata
