"""Probes: estimators over feature matrices. They never touch images or models."""

from .linear import DEFAULT_GRID, LinearProbe, ProbeResult, validate_features

__all__ = ["DEFAULT_GRID", "LinearProbe", "ProbeResult", "validate_features"]
