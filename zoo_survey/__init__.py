"""zoo-survey: survey model zoos for transfer, single large models against ensembles of smaller ones.

Data flows one way: registry -> plan -> extract -> cache -> probes -> store -> report.

>>> import zoo_survey as zs                                  # doctest: +SKIP
>>> res = zs.survey(family="efficientnet-lite", ensemble=2, datasets=["digits"])  # doctest: +SKIP
>>> res.to_pandas(), res.answer()                            # doctest: +SKIP
>>> X, y = zs.features("tf_efficientnet_lite0.pypi", "digits", split="train")  # doctest: +SKIP
>>> zs.load("zoo-survey-out")                                # doctest: +SKIP

Importing the package is light: the names below load their modules (and torch, timm, scikit-learn, pandas)
on first use. docs/python-api.md describes them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import SurveyResult, features, load, survey
    from .errors import NotCachedError, ZooSurveyError, ZooSurveyFailure

# name -> the submodule that defines it, imported on first access (PEP 562). ``survey`` and ``features`` are
# subpackages that are callable: calling them calls zoo_survey.api.survey / .features (see _callable.py).
_LAZY = {
    "survey": None,
    "features": None,
    "load": "api",
    "SurveyResult": "api",
    "ZooSurveyError": "errors",
    "ZooSurveyFailure": "errors",
    "NotCachedError": "errors",
}

__all__ = ["NotCachedError", "SurveyResult", "ZooSurveyError", "ZooSurveyFailure", "__version__", "features", "load", "survey"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        where = _LAZY[name]
        module = importlib.import_module(f".{where or name}", __name__)
        value = getattr(module, name) if where else module
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
