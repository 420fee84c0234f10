"""svae_lite: sparse mechanism shift models of single-cell perturbation screens.

Lopez et al., "Learning Causal Representations of Single Cells via Sparse Mechanism Shift
Modeling", CLeaR 2023 (arXiv:2211.03553).
"""
from . import datasets, metrics
from ._logs import quiet
from ._validation import SvaeLiteWarning
from .models import VAE, BetaVAE, ShiftModel, SVAE, SVAEPlus, iVAE
from .simulate import simulate

__version__ = "0.1.0"

__all__ = ["simulate", "quiet", "SvaeLiteWarning", "datasets", "metrics", "VAE", "BetaVAE", "iVAE", "SVAE", "SVAEPlus", "ShiftModel"]
