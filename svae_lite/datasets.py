"""Real single-cell perturbation screens as AnnData of raw counts.

Every loader returns an :class:`~anndata.AnnData` with raw integer UMI counts in ``X``
(cells x genes, ``float32`` CSR) and each cell's perturbation in ``obs['perturbation']``
(``"control"`` for non-targeting guides), ready for ``setup_anndata``:

=====================  =======================================================  =================
loader                 screen                                                   cells x genes
=====================  =======================================================  =================
:func:`papalexi2021`   THP-1 ECCITE-seq CRISPR knockout (25 targets + control)   20,729 x 299
:func:`norman2019`     K562 CRISPRa, 18 single + 15 double perturbations         3,375 x <= 500
:func:`mcfaline2023`   CRISPRi of 9 kinases in 3 glioblastoma lines              2,586 x <= 500
:func:`replogle2022`   K562 genome-wide CRISPRi (reduced from a local file)      user's file
=====================  =======================================================  =================

Where the files come from
-------------------------
The loaders build the AnnData from the *original* published files (an R ``.rda`` of the
``sceptredata`` package, the ``devel.h5ad`` of ``perturbench``), pinned to a commit and
checked against a SHA-256 (see :data:`REGISTRY`). They look for a file in one data
directory, chosen in this order:

1. the ``data_dir`` argument;
2. the environment variable ``SVAE_LITE_DATA``;
3. a per-user cache, ``pooch.os_cache("svae_lite")``.

A file found there must match its checksum (a mismatch raises :class:`ChecksumError`
rather than using, or silently overwriting, the file). A file not found there is downloaded
into that directory with :mod:`pooch` (``download=True``): the download goes to a temporary
file, is checked, and only then is moved into place, so a failed or corrupted download
never leaves a partial file behind (:class:`DownloadError` otherwise).

:func:`papalexi2021` can also read a ready-made conversion (``papalexi2021_thp1.h5ad``)
when one with the registered checksum sits in the data directory: it holds exactly the
same AnnData and skips parsing the ``.rda`` (about 4 s).

Preprocessing
-------------
:func:`preprocess` applies the usual quality control and, optionally, selects highly
variable genes on the counts (scanpy's ``flavor="seurat_v3"``), keeping raw counts in
``X`` as the models need.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = [
    "REGISTRY",
    "ENV_VAR",
    "RegisteredFile",
    "ChecksumError",
    "DownloadError",
    "get_data_dir",
    "fetch",
    "papalexi2021",
    "norman2019",
    "mcfaline2023",
    "replogle2022",
    "preprocess",
    "recover_counts",
    "PAPALEXI_IFNG_PATHWAY",
]

ENV_VAR = "SVAE_LITE_DATA"
CONTROL = "control"

#: Knocked-out genes of the Papalexi et al. (2021) screen that act in the IFN-gamma ->
#: JAK/STAT -> IRF1 -> PD-L1 pathway (the screen's main finding).
PAPALEXI_IFNG_PATHWAY = ("IFNGR1", "IFNGR2", "JAK2", "STAT1", "IRF1")


@dataclass(frozen=True)
class RegisteredFile:
    """One file the loaders can read: its name, SHA-256, where to download it (``None``
    for files made from the originals, which are only read when present), and size."""

    name: str
    sha256: str
    url: str | None
    size: int
    description: str


_SCEPTRE = "https://github.com/Katsevich-Lab/sceptredata/raw/ec722d5df90dfd34ace6cc9a5745ab6a5c2a6731"
_PERTURBENCH = "https://github.com/altoslabs/perturbench/raw/d357dfae3b50968e800e9f5f273ff145080ae67c"

#: The files the loaders know, by name (originals with a public URL, conversions without).
REGISTRY: dict[str, RegisteredFile] = {
    f.name: f
    for f in [
        RegisteredFile(
            "lowmoi_example_data.rda",
            "e3f8ad09bb4b1d0deeeec2850a2d96f8f5062fef31a9ab1cc080e60560421b6a",
            f"{_SCEPTRE}/data/lowmoi_example_data.rda",
            1_358_267,
            "Papalexi et al. 2021 THP-1 ECCITE-seq, sceptredata package (MIT license)",
        ),
        RegisteredFile(
            "devel.h5ad",
            "220998f5630c813228c8661c86dd52244b9ac87127511289af90e0d900d8429b",
            f"{_PERTURBENCH}/src/perturbench/data/resources/devel.h5ad",
            1_142_678,
            "Norman et al. 2019 and McFaline-Figueroa et al. 2023 subsets, perturbench "
            "(BSD-3-Clause license); log1p-normalized, counts recovered exactly",
        ),
        RegisteredFile(
            "papalexi2021_thp1.h5ad",
            "6bc0d005bbf81d10f318473b54e876013b955b43a58521951f779ebc42cc9282",
            None,
            3_208_874,
            "conversion of lowmoi_example_data.rda (same AnnData as papalexi2021())",
        ),
        RegisteredFile(
            "norman2019_k562_subset.h5ad",
            "a3760a68fb7df7eeaacc6095765d6b78eac04bbc4ee04623134d658bc3f0db73",
            None,
            330_972,
            "conversion of the norman19 cells of devel.h5ad",
        ),
        RegisteredFile(
            "mcfaline2023_gbm_subset.h5ad",
            "46a9a3b22d2edfeb50218965bfc192bd03c1294c4050901e2a057b9366fe4674",
            None,
            503_469,
            "conversion of the mcfaline23 cells of devel.h5ad",
        ),
    ]
}


class ChecksumError(ValueError):
    """A data file's SHA-256 differs from the registered one."""


class DownloadError(OSError):
    """A data file could not be downloaded (unreachable URL, no permission to write...)."""


# ---------------------------------------------------------------------------- files
def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory where loaders look for (and download) data files.

    ``data_dir`` if given, else the environment variable ``SVAE_LITE_DATA``, else the
    per-user cache ``pooch.os_cache("svae_lite")``. The directory need not exist yet.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("svae_lite"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy_from_file_url(url: str, output_file, pooch_obj=None) -> None:
    """pooch downloader for ``file://`` URLs (a local mirror of the originals)."""
    src = url2pathname(urlparse(url).path)
    if not os.path.exists(src):
        raise FileNotFoundError(f"no file at {src}")
    if isinstance(output_file, (str, os.PathLike)):
        shutil.copyfile(src, output_file)
    else:
        with open(src, "rb") as fh:
            shutil.copyfileobj(fh, output_file)


def fetch(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
          downloader=None) -> Path:
    """Path of a registered data file, verified against its SHA-256; downloads it if absent.

    Parameters
    ----------
    name
        A key of :data:`REGISTRY`, e.g. ``"lowmoi_example_data.rda"``.
    data_dir
        Directory to look in and download to (see :func:`get_data_dir`).
    download
        Download the file from its registered URL when it is not in ``data_dir``.
    downloader
        A pooch downloader (callable ``(url, output_file, pooch)``); default: pooch's
        HTTP downloader (a copy for ``file://`` URLs).

    Raises
    ------
    ChecksumError
        The file in ``data_dir``, or the downloaded one, has another SHA-256. A downloaded
        file with a wrong checksum is deleted; a file already in ``data_dir`` is left as is.
    DownloadError
        The URL could not be reached or the directory could not be written.
    FileNotFoundError
        The file is absent and cannot be downloaded (``download=False`` or no URL).
    """
    if name not in REGISTRY:
        raise KeyError(f"{name!r} is not a registered data file; known: {sorted(REGISTRY)}.")
    entry = REGISTRY[name]
    directory = get_data_dir(data_dir)
    path = directory / name
    if path.is_file():
        digest = _sha256(path)
        if digest != entry.sha256:
            where = f"from {entry.url}" if entry.url else "from its original (see svae_lite.datasets.REGISTRY)"
            raise ChecksumError(
                f"{path} has SHA-256 {digest}, but {name} should have {entry.sha256}. The file "
                f"is corrupt or a different version. Delete it and call again to download it "
                f"{where}, or point {ENV_VAR} / data_dir at a directory with the right file."
            )
        return path
    if entry.url is None or not download:
        why = ("it is made from the originals and has no download URL" if entry.url is None
               else "download=False")
        raise FileNotFoundError(
            f"{name} is not in {directory} and {why}. Set the environment variable {ENV_VAR} "
            f"(or data_dir=) to the directory that holds it"
            + (f", or allow the download from {entry.url}." if entry.url else ".")
        )
    return _download(entry, directory, downloader)


def _download(entry: RegisteredFile, directory: Path, downloader=None) -> Path:
    import pooch
    import requests

    if downloader is None and entry.url.startswith("file://"):
        downloader = _copy_from_file_url
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(
            f"Cannot create the data directory {directory} to download {entry.name} ({err}). "
            f"Set {ENV_VAR} or data_dir= to a writable directory."
        ) from err
    if not os.access(directory, os.W_OK):
        raise DownloadError(
            f"The data directory {directory} is not writable, so {entry.name} cannot be "
            f"downloaded into it from {entry.url}. Set {ENV_VAR} or data_dir= to a writable "
            "directory, or put the file there yourself."
        )
    logger.info("Downloading %s from %s to %s", entry.name, entry.url, directory)
    try:
        got = pooch.retrieve(entry.url, known_hash=f"sha256:{entry.sha256}", fname=entry.name,
                             path=directory, downloader=downloader, progressbar=False)
    except ValueError as err:
        if "hash" in str(err).lower():
            raise ChecksumError(
                f"The file downloaded from {entry.url} does not have the SHA-256 registered for "
                f"{entry.name} ({entry.sha256}); it was deleted and nothing was written to "
                f"{directory}. The server may have changed the file or the download was "
                "corrupted: try again, or download it by hand and check it with `sha256sum`."
            ) from err
        raise
    except (requests.exceptions.RequestException, OSError) as err:
        raise DownloadError(
            f"Could not download {entry.name} from {entry.url} ({type(err).__name__}: {err}). "
            f"Check the internet connection, or download the file by hand into {directory} "
            f"(or the directory named by {ENV_VAR}). Nothing was written to {directory}."
        ) from err
    return Path(got)


# ---------------------------------------------------------------------------- helpers
def recover_counts(X, max_multiplier: int = 20, tol: float = 1e-6) -> sp.csr_matrix:
    """Raw counts from ``log1p(normalize_total(counts))`` values, exactly.

    Each cell's ``expm1(X)`` is its counts times one unknown factor. Dividing by the cell's
    smallest nonzero value gives the counts when that value is one UMI; otherwise the
    quotients are fractions with a small common denominator ``k`` (the smallest count), and
    multiplying by the smallest such ``k`` gives integers again.

    Parameters
    ----------
    X
        (cells, genes) log1p-normalized values, dense or sparse.

    Returns
    -------
    CSR matrix (cells, genes), float32, of integer counts.

    Raises
    ------
    ValueError
        If some cell's values are not integers up to a factor ``k <= max_multiplier``.
    """
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    X.eliminate_zeros()
    X.data = np.expm1(X.data)
    bad = []
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        if s == e:
            continue
        v = X.data[s:e] / X.data[s:e].min()
        for k in range(1, max_multiplier + 1):
            w = v * k
            if np.abs(w - np.round(w)).max() < tol:
                X.data[s:e] = np.round(w)
                break
        else:
            bad.append(i)
    if bad:
        raise ValueError(
            f"{len(bad)} cells (e.g. rows {bad[:5]}) are not log1p-normalized counts: their "
            f"expm1 values are not integers up to a common factor <= {max_multiplier}."
        )
    return X.astype(np.float32)


def _categorical(values) -> pd.Categorical:
    return pd.Categorical(np.asarray(values, dtype=object))


def _drop_empty_genes(adata: AnnData) -> AnnData:
    keep = np.asarray(adata.X.sum(0)).ravel() > 0
    if keep.all():
        return adata
    logger.info("Dropping %d genes without counts", int((~keep).sum()))
    return adata[:, keep].copy()


def _check_source(source: str, allowed: tuple[str, ...]) -> str:
    if source not in allowed:
        raise ValueError(f"source={source!r}: choose one of {allowed}.")
    return source


def _read_h5ad(path: Path) -> AnnData:
    import anndata as ad

    return ad.read_h5ad(path)


# ---------------------------------------------------------------------------- Papalexi
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
    _check_source(source, ("auto", "original", "converted"))
    conv = "papalexi2021_thp1.h5ad"
    if source == "converted" or (source == "auto" and (get_data_dir(data_dir) / conv).is_file()):
        adata = _read_h5ad(fetch(conv, data_dir, download=False))
    else:
        adata = _papalexi_from_rda(fetch("lowmoi_example_data.rda", data_dir, download=download))
    adata.uns["svae_lite_loader"] = "papalexi2021"
    return adata


def _read_rda(path: Path) -> dict:
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


def _papalexi_from_rda(path: Path) -> AnnData:
    obj = _read_rda(path)
    data = obj["lowmoi_example_data"] if "lowmoi_example_data" in obj else next(iter(obj.values()))
    resp, grna = data["response_matrix"], data["grna_matrix"]
    X = _dgt_to_csr(resp, transpose=True)  # cells x genes
    G = _dgt_to_csr(grna, transpose=True)  # cells x gRNAs
    genes = [str(g) for g in resp.Dimnames[0]]
    grnas = np.array([str(g) for g in grna.Dimnames[0]], dtype=object)
    cells = [f"cell{i}" for i in range(X.shape[0])]
    Gd = G.toarray()
    total = Gd.sum(1)
    if (total == 0).any():
        raise ValueError(f"{int((total == 0).sum())} cells of {path.name} have no gRNA UMIs.")
    best = Gd.argmax(1)
    top = Gd[np.arange(len(best)), best]
    targets = data["grna_target_data_frame"]
    target_of = dict(zip(targets["grna_id"].astype(str), targets["grna_target"].astype(str)))
    guide = grnas[best]
    pert = np.array([target_of[g] for g in guide], dtype=object)
    pert[pert == "non-targeting"] = CONTROL
    obs = pd.DataFrame(
        {
            "perturbation": _categorical(pert),
            "guide": _categorical(guide),
            "guide_umis": top.astype(np.int64),
            "guide_frac": (top / total).astype(np.float32),
            "replicate": _categorical(np.asarray(data["extra_covariates"]["bio_rep"]).astype(str)),
        },
        index=pd.Index(cells),
    )
    adata = AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    adata.uns["source"] = {
        "dataset": "Papalexi et al. 2021, Nature Genetics, THP-1 ECCITE-seq CRISPR knockout "
                   "screen (gene-downsampled low-MOI example)",
        "obtained_from": "sceptredata R package (Katsevich-Lab/sceptredata, commit ec722d5, "
                         "data/lowmoi_example_data.rda), MIT license",
        "processing": "cells x genes raw UMI counts; each cell labelled by its most abundant "
                      "gRNA; non-targeting gRNAs -> 'control'",
    }
    return adata


# ---------------------------------------------------------------------------- devel.h5ad
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


def _from_devel(dataset: str, data_dir, source: str, download: bool, drop_empty_genes: bool) -> AnnData:
    conv, title = _DEVEL_SOURCES[dataset]
    _check_source(source, ("original", "converted"))
    if source == "converted":
        adata = _read_h5ad(fetch(conv, data_dir, download=False))
    else:
        devel = _read_h5ad(fetch("devel.h5ad", data_dir, download=download))
        sub = devel[devel.obs["dataset"].astype(str).to_numpy() == dataset]
        o = sub.obs
        obs = pd.DataFrame(
            {
                "perturbation": _categorical(o["perturbation"].astype(str)),
                "perturbation_type": _categorical(o["perturbation_type"].astype(str)),
                "cell_type": _categorical(o["cell_type"].astype(str)),
                "dose": _categorical(o["dose"].astype(str)),
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
    if drop_empty_genes:
        adata = _drop_empty_genes(adata)
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
    adata = _from_devel("norman19", data_dir, source, download, drop_empty_genes)
    adata.uns["svae_lite_loader"] = "norman2019"
    return adata


def mcfaline2023(data_dir: str | os.PathLike | None = None, source: str = "original",
                 download: bool = True, drop_empty_genes: bool = True) -> AnnData:
    """McFaline-Figueroa et al. (2023, Cell Genomics): CRISPRi of 9 kinases in 3
    glioblastoma cell lines.

    A subset of 2,586 cells: ``control`` + 9 knocked-down genes in each of A172, T98G and
    U87MG (``obs['cell_type']``), 500 genes (those without counts here are dropped unless
    ``drop_empty_genes=False``). ``source`` as in :func:`norman2019`.
    """
    adata = _from_devel("mcfaline23", data_dir, source, download, drop_empty_genes)
    adata.uns["svae_lite_loader"] = "mcfaline2023"
    return adata


# ---------------------------------------------------------------------------- Replogle
_REPLOGLE_URL = ("https://plus.figshare.com/articles/dataset/_Mapping_information-rich_genotype-"
                 "phenotype_landscapes_with_genome-scale_Perturb-seq_Replogle_et_al_2022_"
                 "processed_Perturb-seq_datasets/20029387")


def _group_sums(adata, codes: np.ndarray, n_groups: int, genes: np.ndarray | None, chunk_size: int,
                target_sum: float = 1e4):
    """One pass over ``adata.X`` (backed or in memory): per-group sum and sum of squares of
    log1p(counts / library * target_sum), (groups, genes), float64."""
    G = adata.n_vars if genes is None else len(genes)
    s1 = np.zeros((n_groups, G))
    s2 = np.zeros((n_groups, G))
    for start in range(0, adata.n_obs, chunk_size):
        stop = min(start + chunk_size, adata.n_obs)
        c = codes[start:stop]
        rows = np.flatnonzero(c >= 0)
        if rows.size == 0:
            continue
        block = adata.X[start:stop]
        block = sp.csr_matrix(block, dtype=np.float64)[rows]
        lib = np.asarray(block.sum(1)).ravel()
        lib[lib == 0] = 1.0
        block = sp.diags(target_sum / lib) @ block
        if genes is not None:
            block = block[:, genes]
        block = block.tocsr()
        block.data = np.log1p(block.data)
        ind = sp.csr_matrix((np.ones(rows.size), (c[rows], np.arange(rows.size))), shape=(n_groups, rows.size))
        s1 += np.asarray((ind @ block).todense())
        sq = block.copy()
        sq.data **= 2
        s2 += np.asarray((ind @ sq).todense())
    return s1, s2


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
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Download K562_gwps_raw_singlecell_01.h5ad (or "
            f"K562_essential_raw_singlecell_01.h5ad) from {_REPLOGLE_URL} and pass its path."
        )
    backed = ad.read_h5ad(path, backed="r")
    try:
        if "gene" not in backed.obs:
            raise KeyError(
                f"{path.name} has no obs['gene'] column (the targeted gene of each cell); "
                f"columns: {list(backed.obs.columns)[:12]}. Is it a Replogle et al. 2022 file?"
            )
        target = backed.obs["gene"].astype(str).to_numpy()
        if "non-targeting" not in set(target):
            raise ValueError(f"{path.name} has no 'non-targeting' cells in obs['gene'] to use as controls.")
        symbols = (backed.var["gene_name"].astype(str).to_numpy() if "gene_name" in backed.var
                   else backed.var_names.astype(str).to_numpy())
        labels = np.where(target == "non-targeting", CONTROL, target)
        counts = pd.Series(labels).value_counts()
        eligible = [p for p in counts.index if p != CONTROL and counts[p] >= min_cells_per_perturbation]
        stats = None
        if isinstance(perturbations, str):
            if perturbations != "strong":
                raise ValueError(f"perturbations={perturbations!r}: use 'strong' or a list of genes.")
        else:
            wanted = [str(p) for p in perturbations]
            missing = sorted(set(wanted) - set(counts.index))
            if missing:
                warnings.warn(f"{len(missing)} requested perturbations are not in {path.name} "
                              f"(e.g. {missing[:5]}); they are skipped.", stacklevel=2)
            eligible = [p for p in dict.fromkeys(wanted) if p in counts.index and p != CONTROL]
        if isinstance(genes, str) and genes not in ("responsive", "hvg"):
            raise ValueError(f"genes={genes!r}: use 'responsive', 'hvg' or a list of genes.")
        if perturbations == "strong" or (isinstance(genes, str) and genes == "responsive"):
            groups = [CONTROL] + eligible
            index = {p: i for i, p in enumerate(groups)}
            codes = np.array([index.get(p, -1) for p in labels], dtype=np.int64)
            s1, s2 = _group_sums(backed, codes, len(groups), None, chunk_size)
            n = np.bincount(codes[codes >= 0], minlength=len(groups)).astype(float)[:, None]
            mean = s1 / n
            var = np.maximum(s2 / n - mean**2, 0) * n / np.maximum(n - 1, 1)
            se = np.sqrt(var[1:] / n[1:] + var[:1] / n[:1])
            z = (mean[1:] - mean[:1]) / np.where(se > 0, se, np.inf)
            changed = np.abs(z) > z_threshold
            n_de = pd.Series(changed.sum(1), index=eligible)
            stats = {"z": z, "changed": changed}
            if perturbations == "strong":
                strong = n_de[n_de >= min_de_genes].sort_values(ascending=False, kind="stable")
                if n_perturbations is not None:
                    strong = strong.iloc[:n_perturbations]
                if strong.empty:
                    raise ValueError(
                        f"No perturbation changes >= {min_de_genes} genes at |z| > {z_threshold}. "
                        "Lower min_de_genes or z_threshold, or pass perturbations= explicitly."
                    )
                kept = list(strong.index)
            else:
                kept = eligible
        else:
            kept = eligible
            n_de = None
        if not kept:
            raise ValueError("No perturbation left to keep: check perturbations= and min_cells_per_perturbation.")
        # cells: controls and kept perturbations, optionally subsampled per group
        rng = np.random.default_rng(seed)
        cell_idx = []
        for p in [CONTROL] + kept:
            idx = np.flatnonzero(labels == p)
            cap = max_control_cells if p == CONTROL else max_cells_per_perturbation
            if cap is not None and idx.size > cap:
                idx = np.sort(rng.choice(idx, cap, replace=False))
            cell_idx.append(idx)
        cell_idx = np.sort(np.concatenate(cell_idx))
        # genes
        if isinstance(genes, str) and genes == "responsive":
            rows = [eligible.index(p) for p in kept]
            n_changing = stats["changed"][rows].sum(0)
            score = np.abs(stats["z"][rows]).sum(0)
            order = np.lexsort((-score, -n_changing))
            gene_idx = np.sort(order[:n_genes])
        elif isinstance(genes, str):  # hvg, chosen below on the kept cells
            gene_idx = np.arange(backed.n_vars)
        else:
            wanted = [str(g) for g in genes]
            pos = {g: i for i, g in enumerate(symbols)}
            missing = [g for g in wanted if g not in pos]
            if missing:
                warnings.warn(f"{len(missing)} requested genes are not in {path.name} "
                              f"(e.g. {missing[:5]}); they are skipped.", stacklevel=2)
            gene_idx = np.array(sorted({pos[g] for g in wanted if g in pos}), dtype=np.int64)
            if gene_idx.size == 0:
                raise ValueError("None of the requested genes is in the file.")
        # read the kept cells block by block (backed datasets are read contiguously)
        blocks = []
        for start in range(0, backed.n_obs, chunk_size):
            stop = min(start + chunk_size, backed.n_obs)
            sel = cell_idx[(cell_idx >= start) & (cell_idx < stop)] - start
            if sel.size == 0:
                continue
            block = sp.csr_matrix(backed.X[start:stop], dtype=np.float32)[sel][:, gene_idx]
            blocks.append(block)
        X = sp.vstack(blocks).tocsr()
        obs = backed.obs.iloc[cell_idx].copy()
        var_names = pd.Index(symbols[gene_idx])
    finally:
        if backed.isbacked:
            backed.file.close()
    from ._validation import check_counts

    check_counts(X, f"the counts of {path.name}")
    obs.insert(0, "perturbation", pd.Categorical(
        np.where(obs["gene"].astype(str).to_numpy() == "non-targeting", CONTROL, obs["gene"].astype(str).to_numpy()).astype(object)))
    var = pd.DataFrame(index=var_names)
    adata = AnnData(X=X, obs=obs, var=var)
    adata.var_names_make_unique()
    if stats is not None and not (isinstance(genes, str) and genes == "hvg"):
        rows = [eligible.index(p) for p in kept]
        adata.var["n_perturbations_changing"] = stats["changed"][rows][:, gene_idx].sum(0)
    if isinstance(genes, str) and genes == "hvg":
        adata = preprocess(adata, min_counts_per_cell=0, min_cells_per_gene=1, n_top_genes=n_genes)
    adata.uns["svae_lite_reduction"] = {
        "file": path.name,
        "perturbations": "list" if not isinstance(perturbations, str) else perturbations,
        "genes": "list" if not isinstance(genes, str) else genes,
        "n_perturbations": len(kept),
        "n_genes": adata.n_vars,
        "min_cells_per_perturbation": min_cells_per_perturbation,
        "min_de_genes": min_de_genes,
        "z_threshold": z_threshold,
        "changed_genes_per_perturbation": ({k: int(v) for k, v in n_de[kept].items()}
                                           if n_de is not None else {}),
    }
    adata.uns["svae_lite_loader"] = "replogle2022"
    return adata


# ---------------------------------------------------------------------------- preprocessing
def preprocess(adata: AnnData, min_counts_per_cell: int = 1, min_genes_per_cell: int = 0,
               min_cells_per_gene: int = 1, max_mito_fraction: float | None = None,
               n_top_genes: int | None = None, min_cells_per_perturbation: int | None = None,
               perturbation_key: str = "perturbation", control: str = CONTROL) -> AnnData:
    """Quality control and gene selection that keep raw counts in ``X``; returns a copy.

    In order: drop cells with fewer than ``min_counts_per_cell`` UMIs or
    ``min_genes_per_cell`` detected genes, or (if ``max_mito_fraction``) a larger share of
    mitochondrial (``MT-``) UMIs; drop genes detected in fewer than ``min_cells_per_gene``
    cells; keep the ``n_top_genes`` highly variable genes (scanpy,
    ``flavor="seurat_v3"``, computed on the counts; needs ``scikit-misc``); drop
    perturbation groups with fewer than ``min_cells_per_perturbation`` cells (never the
    controls). ``adata`` itself is not modified.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``uns['svae_lite_preprocess']`` (parameters and
    how many cells/genes each step removed).
    """
    import scanpy as sc

    from ._validation import check_counts

    check_counts(adata.X, "adata.X")
    a = adata.copy()
    report = {"n_cells_in": int(a.n_obs), "n_genes_in": int(a.n_vars)}
    X = a.X
    tot = np.asarray(X.sum(1)).ravel()
    ngenes = np.asarray((X > 0).sum(1)).ravel()
    keep = (tot >= min_counts_per_cell) & (ngenes >= min_genes_per_cell)
    if max_mito_fraction is not None:
        mito = a.var_names.str.upper().str.startswith("MT-")
        frac = np.asarray(X[:, mito].sum(1)).ravel() / np.maximum(tot, 1)
        keep &= frac <= max_mito_fraction
    report["cells_removed_qc"] = int((~keep).sum())
    a = a[keep].copy()
    detected = np.asarray((a.X > 0).sum(0)).ravel()
    gkeep = detected >= min_cells_per_gene
    report["genes_removed_qc"] = int((~gkeep).sum())
    a = a[:, gkeep].copy()
    if n_top_genes is not None and n_top_genes < a.n_vars:
        sc.pp.highly_variable_genes(a, n_top_genes=int(n_top_genes), flavor="seurat_v3")
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
    report["n_genes_hvg"] = int(a.n_vars)
    if min_cells_per_perturbation is not None:
        if perturbation_key not in a.obs:
            raise KeyError(f"adata.obs has no column {perturbation_key!r}.")
        lab = a.obs[perturbation_key].astype(str)
        counts = lab.value_counts()
        small = [p for p in counts.index if counts[p] < min_cells_per_perturbation and p != control]
        report["perturbations_removed"] = small
        a = a[~lab.isin(small).to_numpy()].copy()
        if hasattr(a.obs[perturbation_key], "cat"):
            a.obs[perturbation_key] = a.obs[perturbation_key].cat.remove_unused_categories()
    report["n_cells_out"], report["n_genes_out"] = int(a.n_obs), int(a.n_vars)
    a.uns["svae_lite_preprocess"] = {
        **report,
        "params": {k: v for k, v in {
            "min_counts_per_cell": min_counts_per_cell, "min_genes_per_cell": min_genes_per_cell,
            "min_cells_per_gene": min_cells_per_gene, "max_mito_fraction": max_mito_fraction,
            "n_top_genes": n_top_genes, "min_cells_per_perturbation": min_cells_per_perturbation,
        }.items() if v is not None},
    }
    logger.info("preprocess: %s", report)
    return a
