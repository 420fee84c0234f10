"""The data directory, the registry of known files and their verified download."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

logger = logging.getLogger(__name__)

ENV_VAR = "SVAE_LITE_DATA"


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


def check_source(source: str, allowed: tuple[str, ...]) -> str:
    """``source`` (which file a loader builds from) if it is one of ``allowed``."""
    if source not in allowed:
        raise ValueError(f"source={source!r}: choose one of {allowed}.")
    return source


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        digest = file_sha256(path)
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
    return download_file(entry, directory, downloader)


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


def _writable_directory(entry: RegisteredFile, directory: Path) -> None:
    """Create ``directory`` if needed; :class:`DownloadError` if it cannot be written to."""
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


def download_file(entry: RegisteredFile, directory: Path, downloader=None) -> Path:
    """Download ``entry`` into ``directory`` with pooch and return its path.

    pooch writes to a temporary file and moves it into place only once its SHA-256 matches,
    so a failed or corrupt download leaves nothing behind; its errors are turned into
    :class:`ChecksumError` / :class:`DownloadError` that say what to do next.
    """
    import pooch
    import requests

    if downloader is None and entry.url.startswith("file://"):
        downloader = _copy_from_file_url
    _writable_directory(entry, directory)
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
