"""Plug-ins: probes, dataset sources and checkpoint sources that installed packages declare as entry points.

A package adds one line per class to its ``pyproject.toml``; nothing in zoo-survey is edited::

    [project.entry-points."zoo_survey.probes"]
    centroid = "my_package.probes:CentroidProbe"

    [project.entry-points."zoo_survey.dataset_sources"]
    synthetic = "my_package.sources:SyntheticSource"

    [project.entry-points."zoo_survey.checkpoint_sources"]
    my-store = "my_package.sources:MyStoreSource"

The registries (:data:`zoo_survey.probes.PROBES`, :data:`zoo_survey.sources.DATASET_SOURCES`,
:data:`zoo_survey.sources.CHECKPOINT_SOURCES`) read their group on their first lookup, never at
``import zoo_survey``. A plug-in that fails to import, or names something that is not the right kind of class,
stops the lookup with one line naming its package and entry point (see docs/architecture.md, "Plug-ins").
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points

from .errors import ZooSurveyError

PROBE_GROUP = "zoo_survey.probes"
DATASET_SOURCE_GROUP = "zoo_survey.dataset_sources"
CHECKPOINT_SOURCE_GROUP = "zoo_survey.checkpoint_sources"


def describe(ep: EntryPoint) -> str:
    """``entry point 'name = module:attr' of package 'dist'`` (the package where known)."""
    dist = ep.dist.name if ep.dist is not None else "an unknown package"
    return f"entry point {ep.name!r} = {ep.value!r} in group {ep.group!r} (package {dist!r})"


def load_group(group: str, base: type) -> Iterator[tuple[EntryPoint, type]]:
    """Each entry point of ``group`` loaded: (entry point, class), in a stable order (by name, then value).

    Raises a one-line :class:`~zoo_survey.errors.ZooSurveyError` for a plug-in that cannot be imported or that
    is not a subclass of ``base``.
    """
    for ep in sorted(entry_points(group=group), key=lambda e: (e.name, e.value)):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - any import failure of third-party code is the plug-in's problem
            raise ZooSurveyError(
                f"plug-in {describe(ep)} failed to load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "fix or uninstall that package"
            ) from e
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise ZooSurveyError(
                f"plug-in {describe(ep)} names {obj!r}, which is not a {base.__module__}.{base.__qualname__} subclass; "
                "fix the entry point or uninstall that package"
            )
        yield ep, obj
