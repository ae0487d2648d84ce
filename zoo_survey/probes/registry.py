"""The probe registry: probes by name. The survey and the report look probes up here.

The registry holds each probe's declarations (:class:`~.protocol.ProbeInfo`: name, summary, presentation, ...),
which the CLI and the report read without importing scikit-learn; :meth:`ProbeRegistry.get` gives the estimator
class, importing a shipped probe's module on first use.

>>> PROBES.names()                                    # doctest: +SKIP
('linear', 'knn', 'ncm', 'fewshot', 'logme')
>>> PROBES.info("linear").presentation                # doctest: +SKIP
'paired'
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ZooSurveyError, unknown
from .protocol import DECLARED, PRESENTATIONS, ProbeConfig, ProbeInfo, Setting, declared_settings

if TYPE_CHECKING:
    from .base import Probe


class ProbeRegistry:
    """An explicit, ordered map of probe name to its declarations and class; a duplicate name is an error.

    Entries are probe classes, or :class:`ProbeInfo` with a ``target`` ("module:Class") imported on first
    :meth:`get`. With ``group``, the probes installed packages declare under that entry-point group (see
    :mod:`zoo_survey.plugins`) join on the first lookup, after the built-in ones.
    """

    def __init__(self, probes: Iterable[type[Probe] | ProbeInfo] = (), *, group: str | None = None):
        self._infos: dict[str, ProbeInfo] = {}
        self._classes: dict[str, type[Probe]] = {}
        for p in probes:
            self.register(p)
        self._group = group

    def _plugins(self) -> dict[str, ProbeInfo]:
        """The map, with the entry-point group's probes loaded on the first call (scikit-learn only when there are some).
        All or none: a plug-in that fails raises at every lookup, not only the first."""
        if self._group is not None:
            from importlib.metadata import entry_points

            if entry_points(group=self._group):
                from ..plugins import describe, load_group
                from .base import Probe

                found = list(load_group(self._group, Probe))
                clash = [(ep, cls) for ep, cls in found if getattr(cls, "name", "") in self._infos or not getattr(cls, "name", "")]
                for ep, cls in clash:
                    try:
                        self.register(cls)
                    except ZooSurveyError as e:
                        raise ZooSurveyError(f"plug-in {describe(ep)}: {e}") from None
                for _, cls in found:
                    self.register(cls)
            self._group = None
        return self._infos

    def register(self, probe: Any) -> Any:
        """Add a probe class (usable as a class decorator), or a :class:`ProbeInfo` naming where its class lives;
        checks the declarations."""
        if isinstance(probe, ProbeInfo):
            info, cls = probe, None
        else:
            from .base import Probe

            if not (isinstance(probe, type) and issubclass(probe, Probe)):
                raise ZooSurveyError(f"{probe!r} is not a Probe subclass")
            if not probe.name:
                raise ZooSurveyError(f"probe class {probe.__name__} has no name; set the class attribute `name`")
            info, cls = ProbeInfo.of(probe), probe
        if info.name in self._infos:
            raise ZooSurveyError(f"a probe named {info.name!r} is already registered ({self._infos[info.name].target})")
        if info.presentation not in PRESENTATIONS:
            raise ZooSurveyError(f"probe {info.name!r}: presentation {info.presentation!r} is not one of {sorted(PRESENTATIONS)}")
        if info.presentation == "ranking" and not info.rank_against:
            raise ZooSurveyError(f"probe {info.name!r}: a 'ranking' probe names the probe it ranks against (rank_against)")
        self._infos[info.name] = info
        if cls is not None:
            self._classes[info.name] = cls
        return probe

    def unregister(self, name: str) -> None:
        self._infos.pop(name, None)
        self._classes.pop(name, None)

    @contextmanager
    def registered(self, probe: type[Probe]) -> Iterator[type[Probe]]:
        """Register ``probe`` for the ``with`` block only (tests, notebooks)."""
        self.register(probe)
        try:
            yield probe
        finally:
            self.unregister(probe.name)

    def info(self, name: str) -> ProbeInfo:
        """The probe's declarations; an unknown name raises, with close matches. Imports no estimator."""
        infos = self._plugins()
        if name not in infos:
            raise unknown("probe", name, infos)
        return infos[name]

    def get(self, name: str) -> type[Probe]:
        """The estimator class (a shipped probe's module is imported here, with scikit-learn)."""
        info = self.info(name)
        if name not in self._classes:
            module, _, attr = info.target.partition(":")
            self._classes[name] = getattr(importlib.import_module(module), attr)
        return self._classes[name]

    def loaded(self, name: str) -> type[Probe] | None:
        """The class, if it is imported or was registered as a class (a plug-in's, a test's); None otherwise."""
        return self._classes.get(name)

    def settings(self, name: str, config: ProbeConfig) -> tuple[Setting, ...]:
        """The probe's settings for the run's options: its class's, or for a shipped probe whose class is not
        imported yet, its declared ones (:func:`~.protocol.declared_settings`), so no estimator is imported."""
        info = self.info(name)
        if name not in self._classes and DECLARED.get(name) is info:
            return declared_settings(name, config)
        return self.get(name).settings(config)

    def find(self, name: str) -> ProbeInfo | None:
        """The declarations, or None for a name no longer registered (rows of an old plug-in in a store)."""
        return self._plugins().get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._plugins())

    def __iter__(self) -> Iterator[ProbeInfo]:
        return iter(tuple(self._plugins().values()))
