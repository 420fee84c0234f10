"""svae_lite: sparse mechanism shift models of single-cell perturbation screens.

Lopez et al., "Learning Causal Representations of Single Cells via Sparse Mechanism Shift
Modeling", CLeaR 2023 (arXiv:2211.03553).
"""
from . import ceiling, datasets, metrics
from ._logs import quiet
from ._validation import SvaeLiteWarning
from .models import VAE, BetaVAE, ShiftModel, SVAE, SVAEPlus, iVAE
from .simulate import decoder_proportions, simulate

__version__ = "0.1.0"

__all__ = ["simulate", "decoder_proportions", "ceiling", "quiet", "SvaeLiteWarning", "datasets", "metrics", "VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus", "ShiftModel"]
