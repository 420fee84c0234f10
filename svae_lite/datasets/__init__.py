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
``X`` as the models need. :func:`cap_cells` subsamples a screen to at most so many cells
per perturbation (the book's CI scale and the benchmarks use it with the same seed).
"""
from ._files import ENV_VAR, REGISTRY, ChecksumError, DownloadError, RegisteredFile, fetch, get_data_dir
from ._papalexi import PAPALEXI_IFNG_PATHWAY, papalexi2021
from ._perturbench import mcfaline2023, norman2019
from ._preprocess import cap_cells, preprocess, recover_counts
from ._replogle import replogle2022

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
    "cap_cells",
    "PAPALEXI_IFNG_PATHWAY",
]
