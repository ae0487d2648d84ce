"""Runners decide where units of work execute. :class:`LocalRunner` runs them in this process;
:class:`~zoo_survey.survey.ray_runner.RayRunner` runs the same units on a Ray cluster.

A runner takes extraction units (it fills the cache) and probe units (it returns rows
for the driver to store). The driver is the only writer of the results store.
Two runs sharing a store each claim a probe group (a comparison on a dataset) before
fitting its rows; a group another run holds is left for the end, when it is usually
stored. The claim only saves work: rows are inserted with INSERT OR IGNORE either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..results.store import ResultRow, ResultStore
from .units import ExtractUnit, ProbeUnit, Workspace


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
    """Where units run. ``ws`` is the driver's workspace: what it prepared and resolved, and its cache."""

    ws: Workspace

    def extract(self, units: Sequence[ExtractUnit], report: RunReport) -> None: ...

    def probe(self, units: Sequence[ProbeUnit], store: ResultStore, report: RunReport) -> None: ...


# How a run gets its runner: given the driver's workspace and the progress hooks. LocalRunner is one.
RunnerFactory = Callable[[Workspace, Hooks], Runner]


class LocalRunner:
    """Runs every unit here, in order, sharing one :class:`Workspace` (so each model loads once)."""

    def __init__(self, workspace: Workspace, hooks: Hooks | None = None):
        self.ws = workspace
        self.hooks = hooks or Hooks()

    def extract(self, units: Sequence[ExtractUnit], report: RunReport) -> None:
        for unit in units:
            done = unit.run(self.ws)
            report.forward_batches += done.forward_batches
            report.notes += done.notes

    def probe(self, units: Sequence[ProbeUnit], store: ResultStore, report: RunReport) -> None:
        groups: dict[str, list[ProbeUnit]] = {}
        for u in units:
            groups.setdefault(u.group, []).append(u)
        busy: list[list[ProbeUnit]] = []
        for todo in groups.values():
            todo_now = [u for u in todo if not store.has(u.row_key)]
            report.skipped += len(todo) - len(todo_now)
            if todo_now and not self._claim_and_run(todo_now, store, report, wait=False):
                busy.append(todo_now)
        for todo in busy:  # held by another run when we first came: wait for it, then do what it left
            self._claim_and_run(todo, store, report, wait=True)

    def _claim_and_run(self, units: list[ProbeUnit], store: ResultStore, report: RunReport, wait: bool) -> bool:
        with store.claim(units[0].group, wait=wait) as mine:
            if not mine:
                return False
            for u in units:
                if store.has(u.row_key):  # the other run wrote it while we waited
                    report.skipped += 1
                    continue
                tick = self.hooks.stage(u.name, 1)
                row = u.run(self.ws)
                tick(1)
                if store.put(row):
                    report.written += 1
                else:
                    report.skipped += 1  # written meanwhile by a run that took no lock (e.g. on NFS)
        return True
