"""The driver: what a run does around its runner, the same for every runner.

A runner (:mod:`.runner`) only executes units. The driver counts what extraction did,
and for probes it skips stored rows, claims each group (a comparison on a dataset), writes
every row, counts, and shows progress. Two runs sharing a store each claim a group before
fitting its rows; a group another run holds is left for the end, when it is usually stored:
then the driver waits for it (with nothing of its own in flight, so two runs waiting on
each other's groups cannot both wait) and runs only what the other run left. The claim
only saves work: rows are inserted with INSERT OR IGNORE either way.

**Pipelined** (:func:`survey`): a group's probe units are handed to the runner as soon as
every extraction unit its members need has finished (each member's train, val and test
entries of that dataset), not after the last extraction. The driver times every unit and
reports the overlap: the seconds some probe ran while extraction was still going.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from ..results.store import ResultRow, ResultStore
from .runner import Hooks, Runner, RunReport, Timings
from .units import SPLITS, ExtractDone, ExtractUnit, ProbeUnit


def extract(runner: Runner, units: Sequence[ExtractUnit], hooks: Hooks, report: RunReport) -> None:
    """Run every extraction unit; count forward batches and keep each unit's notes."""
    report.where = runner.where
    tick = hooks.stage("extract units", len(units))
    for n, (_, done) in enumerate(runner.extract(units), 1):
        _count(report, done)
        tick(n)
    report.notes += [n for n in runner.notes if n not in report.notes]


def _count(report: RunReport, done: ExtractDone) -> None:
    report.forward_batches += done.forward_batches
    report.notes += done.notes


class _Prober:
    """The probe side of the driver: skip stored rows, claim a group before its units go out, store each row, count."""

    def __init__(self, store: ResultStore, hooks: Hooks, report: RunReport, total: int):
        self.store, self.report = store, report
        self.tick = hooks.stage("probe units", total)
        self.finished = 0
        self.held: dict[str, list[Any]] = {}  # group -> [its units still out, its claim]
        self.busy: list[list[ProbeUnit]] = []

    def skip(self, n: int) -> None:
        self.report.skipped += n
        self.finished += n
        self.tick(self.finished)

    def claimed(self, groups: Iterable[list[ProbeUnit]], wait: bool) -> Iterator[ProbeUnit]:
        """Each group's units not stored, once its claim is ours; a group another run holds goes to ``busy``."""
        for group in groups:
            todo = [u for u in group if not self.store.has(u.row_key)]
            self.skip(len(group) - len(todo))
            if not todo:
                continue
            claim = ExitStack()
            if not claim.enter_context(self.store.claim(todo[0].group, wait=wait)):
                claim.close()
                self.busy.append(todo)  # another run holds it: come back at the end, when it is usually stored
                continue
            left = [u for u in todo if not self.store.has(u.row_key)]  # the other run wrote them while we waited
            self.skip(len(todo) - len(left))
            if not left:
                claim.close()
                continue
            self.held[todo[0].group] = [len(left), claim]
            yield from left

    def put(self, unit: ProbeUnit, row: ResultRow) -> None:
        if self.store.put(row):
            self.report.written += 1
        else:
            self.report.skipped += 1  # written meanwhile by a run that took no lock (e.g. on NFS)
        self.finished += 1
        self.tick(self.finished)
        slot = self.held[unit.group]
        slot[0] -= 1
        if slot[0] == 0:
            slot[1].close()
            del self.held[unit.group]

    def store_rows(self, results: Iterator[tuple[ProbeUnit, ResultRow]]) -> None:
        for unit, row in results:
            self.put(unit, row)

    def finish(self, runner: Runner) -> None:
        """The groups other runs held: nothing of ours in flight now, wait for each, then do what it left."""
        while self.busy:
            self.store_rows(runner.probe(self.claimed([self.busy.pop(0)], wait=True)))

    def close(self) -> None:
        for _, claim in self.held.values():
            claim.close()
        self.held.clear()


def _groups(units: Sequence[ProbeUnit]) -> dict[str, list[ProbeUnit]]:
    by_group: dict[str, list[ProbeUnit]] = {}
    for u in units:
        by_group.setdefault(u.group, []).append(u)
    return by_group


def probe(runner: Runner, units: Sequence[ProbeUnit], store: ResultStore, hooks: Hooks, report: RunReport) -> None:
    """Run the probe units whose row is not stored, a claimed group at a time, and write each row as it comes."""
    report.where = runner.where
    prober = _Prober(store, hooks, report, len(units))
    try:
        prober.store_rows(runner.probe(prober.claimed(_groups(units).values(), wait=False)))
        prober.finish(runner)
    finally:
        prober.close()
    report.notes += [n for n in runner.notes if n not in report.notes]


def _needs(unit: ProbeUnit) -> set[tuple[str, str, str]]:
    """The extraction units (checkpoint, dataset, split) a probe unit reads."""
    return {(m.id, unit.dataset.id, s) for m in unit.comparison.members for s in SPLITS}


def _ident(unit: ExtractUnit) -> tuple[str, str, str]:
    return unit.checkpoint.id, unit.dataset.id, unit.split


def survey(runner: Runner, extract_units: Sequence[ExtractUnit], probe_units: Sequence[ProbeUnit], store: ResultStore,
           hooks: Hooks, report: RunReport) -> None:
    """Extraction and probes, pipelined: a group's probe units go to the runner once its features are cached.

    A runner without ``pipeline`` runs every extraction unit, then the probe units. Either way
    ``report.timings`` says how long each phase ran and how long they overlapped.
    """
    report.where = runner.where
    clock = _Clock()
    pipeline = getattr(runner, "pipeline", None)
    if pipeline is None:
        extract(runner, extract_units, hooks, report)
        clock.extract_end = time.time()
        probe(runner, probe_units, store, hooks, report)
        report.timings = clock.timings(probe_start=clock.extract_end)
        return
    tick = hooks.stage("extract units", len(extract_units))
    prober = _Prober(store, hooks, report, len(probe_units))
    by_group = _groups(probe_units)
    order = {g: i for i, g in enumerate(by_group)}
    known = {_ident(u) for u in extract_units}
    missing = {g: _needs(us[0]) & known for g, us in by_group.items()}  # a group is ready once its set is empty
    waiting_on: dict[tuple[str, str, str], list[str]] = {}
    for g, need in missing.items():
        for ident in need:
            waiting_on.setdefault(ident, []).append(g)
    ready = deque(g for g, need in missing.items() if not need)
    out: Iterator[ProbeUnit] = iter(())
    extracted = 0

    def next_probe() -> ProbeUnit | None:
        """The next probe unit whose features are all cached (its group claimed), or None when none is ready now."""
        nonlocal out
        while True:
            unit = next(out, None)
            if unit is not None:
                if extracted < len(extract_units):
                    clock.early += 1
                return unit
            if not ready:
                return None
            out = prober.claimed([by_group[ready.popleft()]], wait=False)

    try:
        for unit, result, span in pipeline(extract_units, next_probe):
            if isinstance(unit, ExtractUnit):
                extracted += 1
                _count(report, result)
                tick(extracted)
                clock.extract_end = max(clock.extract_end, span[1])
                ident, done = _ident(unit), []
                for g in waiting_on.pop(ident, []):
                    missing[g].discard(ident)
                    if not missing[g]:
                        done.append(g)
                ready.extend(sorted(done, key=order.__getitem__))  # the plan's order among groups ready together
            else:
                clock.probe_spans.append(span)
                prober.put(unit, result)
        prober.finish(runner)
    finally:
        prober.close()
    report.notes += [n for n in runner.notes if n not in report.notes]
    report.timings = clock.timings()


class _Clock:
    """Spans (wall-clock start, end) of the units a run ran, and what they add up to."""

    def __init__(self) -> None:
        self.start = time.time()
        self.extract_end = self.start
        self.probe_spans: list[tuple[float, float]] = []
        self.early = 0

    def timings(self, probe_start: float | None = None) -> Timings:
        end = time.time()
        if probe_start is not None:  # not pipelined: the probes ran from the end of extraction to now
            self.probe_spans = [(probe_start, end)]
        probes = _union(self.probe_spans)
        overlap = sum(max(0.0, min(b, self.extract_end) - a) for a, b in probes)
        return Timings(wall_s=round(end - self.start, 3), extract_s=round(self.extract_end - self.start, 3),
                       probe_s=round(sum(b - a for a, b in probes), 3), overlap_s=round(overlap, 3),
                       early_probe_units=self.early)


def _union(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping spans merged: the times at least one ran."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
