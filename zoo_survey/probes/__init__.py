"""Probes: estimators over feature matrices. They never touch images or models.

:data:`PROBES` is the registry the survey and the report read; see :mod:`.base` for the protocol.
"""

from .base import (
    ClassifierProbe,
    Probe,
    ProbeConfig,
    ProbeInputError,
    ProbeNotFittedError,
    ProbeOutcome,
    ProbeResult,
    Setting,
    validate_features,
)
from .fewshot import FewShotProbe
from .linear import DEFAULT_GRID, LinearProbe
from .logme import LogMEProbe
from .neighbors import KNNProbe, NCMProbe
from .registry import ProbeRegistry

PROBES = ProbeRegistry([LinearProbe, KNNProbe, NCMProbe, FewShotProbe, LogMEProbe])

__all__ = [
    "DEFAULT_GRID", "PROBES", "ClassifierProbe", "FewShotProbe", "KNNProbe", "LinearProbe", "LogMEProbe", "NCMProbe", "Probe",
    "ProbeConfig", "ProbeInputError", "ProbeNotFittedError", "ProbeOutcome", "ProbeRegistry", "ProbeResult", "Setting", "validate_features",
]
