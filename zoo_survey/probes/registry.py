"""The probe registry: probe classes by name. The survey and the report look probes up here.

>>> PROBES.names()                                    # doctest: +SKIP
('linear', 'knn', 'ncm', 'fewshot', 'logme')
>>> PROBES.get("linear").presentation                 # doctest: +SKIP
'paired'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..errors import ZooSurveyError, unknown
from .base import PRESENTATIONS, Probe


class ProbeRegistry:
    """An explicit, ordered map of probe name to probe class; a duplicate name is an error.

    With ``group``, the probes installed packages declare under that entry-point group (see
    :mod:`zoo_survey.plugins`) join on the first lookup, after the built-in ones.
    """

    def __init__(self, probes: Iterable[type[Probe]] = (), *, group: str | None = None):
        self._probes: dict[str, type[Probe]] = {}
        for p in probes:
            self.register(p)
        self._group = group

    def _plugins(self) -> dict[str, type[Probe]]:
        """The map, with the entry-point group's probes loaded on the first call."""
        if self._group is not None:
            from ..plugins import describe, load_group

            found = list(load_group(self._group, Probe))  # all or none: a failure raises at every lookup
            self._group = None
            for ep, cls in found:
                try:
                    self.register(cls)
                except ZooSurveyError as e:
                    raise ZooSurveyError(f"plug-in {describe(ep)}: {e}") from None
        return self._probes

    def register(self, probe: type[Probe]) -> type[Probe]:
        """Add a probe class (usable as a class decorator); checks its declarations."""
        if not (isinstance(probe, type) and issubclass(probe, Probe)):
            raise ZooSurveyError(f"{probe!r} is not a Probe subclass")
        if not probe.name:
            raise ZooSurveyError(f"probe class {probe.__name__} has no name; set the class attribute `name`")
        if probe.name in self._probes:
            raise ZooSurveyError(f"a probe named {probe.name!r} is already registered ({self._probes[probe.name].__name__})")
        if probe.presentation not in PRESENTATIONS:
            raise ZooSurveyError(
                f"probe {probe.name!r}: presentation {probe.presentation!r} is not one of {sorted(PRESENTATIONS)}"
            )
        if probe.presentation == "ranking" and not probe.rank_against:
            raise ZooSurveyError(f"probe {probe.name!r}: a 'ranking' probe names the probe it ranks against (rank_against)")
        self._probes[probe.name] = probe
        return probe

    def unregister(self, name: str) -> None:
        self._probes.pop(name, None)

    @contextmanager
    def registered(self, probe: type[Probe]) -> Iterator[type[Probe]]:
        """Register ``probe`` for the ``with`` block only (tests, notebooks)."""
        self.register(probe)
        try:
            yield probe
        finally:
            self.unregister(probe.name)

    def get(self, name: str) -> type[Probe]:
        probes = self._plugins()
        if name not in probes:
            raise unknown("probe", name, probes)
        return probes[name]

    def find(self, name: str) -> type[Probe] | None:
        """The probe class, or None for a name no longer registered (rows of an old plug-in in a store)."""
        return self._plugins().get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._plugins())

    def __iter__(self) -> Iterator[type[Probe]]:
        return iter(tuple(self._plugins().values()))
