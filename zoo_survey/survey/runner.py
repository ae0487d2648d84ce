"""Runners decide where units of work execute; they only execute. :class:`LocalRunner` runs them in this
process; :class:`~zoo_survey.survey.ray_runner.RayRunner` runs the same units on a Ray cluster.

A runner maps units to results, yielded as each finishes (in any order): extraction units
to :class:`~zoo_survey.survey.units.ExtractDone` (it fills the cache), probe units to
rows. Everything else is the driver's (:mod:`.driver`), the same for every runner:
claiming probe groups, skipping stored rows, writing the store, counting, progress.

A runner that has ``pipeline`` runs both kinds together: the driver hands it a probe unit
as soon as the unit's features are cached, so probes run while extraction goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Union

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


@dataclass(frozen=True)
class Timings:
    """How long a run's phases took, in wall seconds: the whole run, extraction (from the start to the last
    extraction unit's end), probes (while at least one probe unit ran), and the overlap (probes running while
    extraction still went on). ``early_probe_units``: probe units handed out before every extraction unit was done."""

    wall_s: float = 0.0
    extract_s: float = 0.0
    probe_s: float = 0.0
    overlap_s: float = 0.0
    early_probe_units: int = 0

    def summary(self) -> str:
        return (f"{self.wall_s:.1f} s wall: extraction {self.extract_s:.1f} s, probes {self.probe_s:.1f} s, "
                f"of which {self.overlap_s:.1f} s while extraction ran")


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
    timings: Timings = field(default_factory=Timings)


# What a pipelined runner yields: a finished unit, its result, and when it ran (wall clock, ``time.time()``).
Finished = Union[tuple[ExtractUnit, ExtractDone, tuple[float, float]], tuple[ProbeUnit, ResultRow, tuple[float, float]]]


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


class PipelinedRunner(Runner, Protocol):
    """A runner that runs extraction and probes together (the driver checks for ``pipeline``).

    ``pipeline`` yields each unit as it finishes, extraction and probe units alike, with
    when it ran. ``next_probe()`` gives a probe unit whose features are cached, or None
    when none is ready now; the runner asks again after each result it yields (a finished
    extraction may make a group ready). Once every extraction unit has been yielded, None
    means no probe unit is left.
    """

    def pipeline(self, extract: Sequence[ExtractUnit], next_probe: Callable[[], ProbeUnit | None]) -> Iterator[Finished]: ...


# How a run gets its runner: given the driver's workspace and the progress hooks. LocalRunner is one.
RunnerFactory = Callable[[Workspace, Hooks], Runner]


class LocalRunner:
    """Runs every unit here, in order, sharing one :class:`Workspace` (so each model loads once).

    Pipelined, it runs an extraction unit, then every probe unit that it made ready, then the
    next extraction unit: one model and one comparison's features in memory at a time.
    """

    def __init__(self, workspace: Workspace, hooks: Hooks | None = None):
        self.ws = workspace
        self.where: dict[str, NodeTally] = {}
        self.notes: list[str] = []

    def extract(self, units: Sequence[ExtractUnit]) -> Iterator[tuple[ExtractUnit, ExtractDone]]:
        for unit in units:
            yield unit, unit.run(self.ws)

    def pipeline(self, extract: Sequence[ExtractUnit], next_probe: Callable[[], ProbeUnit | None]) -> Iterator[Finished]:
        def probes() -> Iterator[Finished]:
            while (p := next_probe()) is not None:  # asked again once the driver has stored this one's row
                start = time.time()
                row = p.run(self.ws)
                yield p, row, (start, time.time())

        for unit in extract:
            start = time.time()
            done = unit.run(self.ws)
            yield unit, done, (start, time.time())
            yield from probes()
        yield from probes()

    def probe(self, units: Iterable[ProbeUnit]) -> Iterator[tuple[ProbeUnit, ResultRow]]:
        for unit in units:  # the next unit is asked for once the driver has stored this one's row
            yield unit, unit.run(self.ws)
