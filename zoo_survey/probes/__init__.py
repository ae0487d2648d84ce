"""Probes: estimators over feature matrices. They never touch images or models.

:data:`PROBES` is the registry the survey and the report read; see :mod:`.base` for the protocol and
:mod:`.protocol` for its light half (declarations, options), which is all that importing this package loads:
the estimator classes, and scikit-learn with them, load on first use. Installed packages add probes through the
``zoo_survey.probes`` entry-point group (:mod:`zoo_survey.plugins`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .protocol import DECLARED, ProbeConfig, ProbeInfo, ProbeOutcome, ProbeResult, Setting
from .registry import ProbeRegistry

if TYPE_CHECKING:
    from .base import ClassifierProbe, Probe, ProbeInputError, ProbeNotFittedError, validate_features
    from .fewshot import FewShotProbe
    from .linear import DEFAULT_GRID, LinearProbe
    from .logme import LogMEProbe
    from .neighbors import KNNProbe, NCMProbe

# The built-in probes (declared, imported on first fit), then the plug-ins' (entry-point group "zoo_survey.probes",
# read on the first lookup).
PROBES = ProbeRegistry(DECLARED.values(), group="zoo_survey.probes")

_LAZY = {
    "ClassifierProbe": "base", "Probe": "base", "ProbeInputError": "base", "ProbeNotFittedError": "base",
    "validate_features": "base", "FewShotProbe": "fewshot", "DEFAULT_GRID": "linear", "LinearProbe": "linear",
    "LogMEProbe": "logme", "KNNProbe": "neighbors", "NCMProbe": "neighbors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_GRID", "PROBES", "ClassifierProbe", "FewShotProbe", "KNNProbe", "LinearProbe", "LogMEProbe", "NCMProbe", "Probe",
    "ProbeConfig", "ProbeInfo", "ProbeInputError", "ProbeNotFittedError", "ProbeOutcome", "ProbeRegistry", "ProbeResult",
    "Setting", "validate_features",
]
