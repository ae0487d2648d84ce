"""Probes: estimators over feature matrices. They never touch images or models."""

from .linear import DEFAULT_GRID, LinearProbe, ProbeResult, validate_features
from .neighbors import KNNProbe, NCMProbe

__all__ = ["DEFAULT_GRID", "KNNProbe", "LinearProbe", "NCMProbe", "ProbeResult", "validate_features"]
