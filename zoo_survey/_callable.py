"""Two public functions share their names with subpackages: :func:`zoo_survey.survey` with the package
``zoo_survey.survey`` (plans, units, runners) and :func:`zoo_survey.features` with ``zoo_survey.features`` (the
extract engine and the cache).

Python keeps one attribute per name on ``zoo_survey``, and importing a subpackage sets it to the package, so a
function there would be replaced (or would hide the package from ``import zoo_survey.survey.run as m`` and from
``monkeypatch``). Instead each of the two packages is made callable: ``zoo_survey.survey(...)`` calls
:func:`zoo_survey.api.survey`, and ``zoo_survey.survey.plan`` is still the module. ``inspect.signature`` and
``help`` find the function through ``__wrapped__``; :mod:`zoo_survey.api` is imported on the first call only.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(package: str, function: str) -> None:
    """Calling the (already imported) module ``package`` calls ``zoo_survey.api.<function>``."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module("zoo_survey.api"), function)(*args, **kwargs)

        @property
        def __wrapped__(self) -> Any:  # read by inspect.signature / help / IPython's ``?``
            return getattr(importlib.import_module("zoo_survey.api"), function)

    CallablePackage.__call__.__doc__ = f"Call :func:`zoo_survey.api.{function}`."
    sys.modules[package].__class__ = CallablePackage
