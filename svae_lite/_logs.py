"""One switch for the training chatter of Lightning and scvi-tools."""
from __future__ import annotations

import logging
import warnings

__all__ = ["quiet"]

#: Loggers that print per-run messages (GPU available..., tips, seed settings).
CHATTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi")
#: Warnings that say nothing about the user's data or model.
NOISE_WARNINGS = (".*does not have many workers.*", ".*GPU available but not used.*",
                  "IProgress not found", ".*sanity.*")


def quiet(all_warnings: bool = False) -> None:
    """Silence Lightning's and scvi-tools' informational logs and their routine warnings.

    Svae_lite's own warnings (:class:`svae_lite.SvaeLiteWarning`, about the user's data and
    parameters) still show, unless ``all_warnings=True`` silences every warning (benchmark
    worker processes, whose output is a table).
    """
    if all_warnings:
        warnings.filterwarnings("ignore")
    else:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        for pattern in NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import scvi

        scvi.settings.verbosity = logging.ERROR
    except ImportError:  # pragma: no cover
        pass
