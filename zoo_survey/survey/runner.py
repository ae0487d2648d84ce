"""Runners decide where units of work execute; they only execute. :class:`LocalRunner` runs them in this
process; :class:`~zoo_survey.survey.ray_runner.RayRunner` runs the same units on a Ray cluster.

A runner maps units to results, yielded as each finishes (in any order): extraction units
to :class:`~zoo_survey.survey.units.ExtractDone` (it fills the cache), probe units to
rows. Everything else is the driver's (:mod:`.driver`), the same for every runner:
claiming probe groups, skipping stored rows, writing the store, counting, progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..results.store import ResultRow
from .units import ExtractDone, ExtractUnit, ProbeUnit, Workspace


@dataclass
class NodeTally:
    """What ran on one machine of a cluster: units done, running now, failed, and started more than once."""

    host: str
    extract: int = 0
    probe: int = 0
    running: int = 0
    failed: int = 0
    retried: int = 0


class Hooks:
    """Progress callbacks; the CLI passes rich progress bars, tests pass nothing."""

    def stage(self, label: str, total: int) -> Callable[[int], None]:
        return lambda done: None

    def nodes(self, tallies: Mapping[str, NodeTally]) -> None:
        """A cluster runner's units per node (keyed by node), each time the counts change."""


@dataclass
class RunReport:
    """What a run did: rows written and skipped, forward batches run, notes for the user, and (on a cluster)
    what ran on which node."""

    rows: list[ResultRow] = field(default_factory=list)
    written: int = 0
    skipped: int = 0
    forward_batches: int = 0
    notes: list[str] = field(default_factory=list)
    store: Path | None = None
    where: dict[str, NodeTally] = field(default_factory=dict)


class Runner(Protocol):
    """Where units run. ``ws`` is the driver's workspace: what it prepared and resolved, and its cache.

    ``extract`` and ``probe`` yield ``(unit, result)`` as units finish. ``probe`` may take
    its units lazily: it asks for the next one only when it has room, and the driver
    claims a group as its first unit is asked for. ``where`` is what ran on which node (a
    cluster runner fills it as results arrive); ``notes`` are the runner's own notes for
    the user.
    """

    ws: Workspace
    where: dict[str, NodeTally]
    notes: list[str]

    def extract(self, units: Sequence[ExtractUnit]) -> Iterator[tuple[ExtractUnit, ExtractDone]]: ...

    def probe(self, units: Iterable[ProbeUnit]) -> Iterator[tuple[ProbeUnit, ResultRow]]: ...


# How a run gets its runner: given the driver's workspace and the progress hooks. LocalRunner is one.
RunnerFactory = Callable[[Workspace, Hooks], Runner]


class LocalRunner:
    """Runs every unit here, in order, sharing one :class:`Workspace` (so each model loads once)."""

    def __init__(self, workspace: Workspace, hooks: Hooks | None = None):
        self.ws = workspace
        self.where: dict[str, NodeTally] = {}
        self.notes: list[str] = []

    def extract(self, units: Sequence[ExtractUnit]) -> Iterator[tuple[ExtractUnit, ExtractDone]]:
        for unit in units:
            yield unit, unit.run(self.ws)

    def probe(self, units: Iterable[ProbeUnit]) -> Iterator[tuple[ProbeUnit, ResultRow]]:
        for unit in units:  # the next unit is asked for once the driver has stored this one's row
            yield unit, unit.run(self.ws)
