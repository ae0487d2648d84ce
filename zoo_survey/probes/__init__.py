"""Probes: estimators over feature matrices. They never touch images or models.

:data:`PROBES` is the registry the survey and the report read; see :mod:`.base` for the protocol. Installed
packages add probes through the ``zoo_survey.probes`` entry-point group (:mod:`zoo_survey.plugins`).
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

# The built-in probes, then the plug-ins' (entry-point group "zoo_survey.probes", read on the first lookup).
PROBES = ProbeRegistry([LinearProbe, KNNProbe, NCMProbe, FewShotProbe, LogMEProbe], group="zoo_survey.probes")

__all__ = [
    "DEFAULT_GRID", "PROBES", "ClassifierProbe", "FewShotProbe", "KNNProbe", "LinearProbe", "LogMEProbe", "NCMProbe", "Probe",
    "ProbeConfig", "ProbeInputError", "ProbeNotFittedError", "ProbeOutcome", "ProbeRegistry", "ProbeResult", "Setting", "validate_features",
]
