"""The driver: what a run does around its runner, the same for every runner.

A runner (:mod:`.runner`) only executes units. The driver counts what extraction did,
and for probes it skips stored rows, claims each group (a comparison on a dataset), writes
every row, counts, and shows progress. Two runs sharing a store each claim a group before
fitting its rows; a group another run holds is left for the end, when it is usually stored:
then the driver waits for it (with nothing of its own in flight, so two runs waiting on
each other's groups cannot both wait) and runs only what the other run left. The claim
only saves work: rows are inserted with INSERT OR IGNORE either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack

from ..results.store import ResultRow, ResultStore
from .runner import Hooks, Runner, RunReport
from .units import ExtractUnit, ProbeUnit


def extract(runner: Runner, units: Sequence[ExtractUnit], hooks: Hooks, report: RunReport) -> None:
    """Run every extraction unit; count forward batches and keep each unit's notes."""
    report.where = runner.where
    tick = hooks.stage("extract units", len(units))
    for n, (_, done) in enumerate(runner.extract(units), 1):
        report.forward_batches += done.forward_batches
        report.notes += done.notes
        tick(n)
    report.notes += [n for n in runner.notes if n not in report.notes]


def probe(runner: Runner, units: Sequence[ProbeUnit], store: ResultStore, hooks: Hooks, report: RunReport) -> None:
    """Run the probe units whose row is not stored, a claimed group at a time, and write each row as it comes."""
    report.where = runner.where
    tick = hooks.stage("probe units", len(units))
    finished = 0
    held: dict[str, list] = {}  # group -> [its units still out, its claim]
    busy: list[list[ProbeUnit]] = []

    def skip(n: int) -> None:
        nonlocal finished
        report.skipped += n
        finished += n
        tick(finished)

    def claimed(groups: Iterable[list[ProbeUnit]], wait: bool) -> Iterator[ProbeUnit]:
        """Each group's units not stored, once its claim is ours; a group another run holds goes to ``busy``."""
        for group in groups:
            todo = [u for u in group if not store.has(u.row_key)]
            skip(len(group) - len(todo))
            if not todo:
                continue
            claim = ExitStack()
            if not claim.enter_context(store.claim(todo[0].group, wait=wait)):
                claim.close()
                busy.append(todo)  # another run holds it: come back at the end, when it is usually stored
                continue
            left = [u for u in todo if not store.has(u.row_key)]  # the other run wrote them while we waited
            skip(len(todo) - len(left))
            if not left:
                claim.close()
                continue
            held[todo[0].group] = [len(left), claim]
            yield from left

    def store_rows(results: Iterator[tuple[ProbeUnit, ResultRow]]) -> None:
        nonlocal finished
        for unit, row in results:
            if store.put(row):
                report.written += 1
            else:
                report.skipped += 1  # written meanwhile by a run that took no lock (e.g. on NFS)
            finished += 1
            tick(finished)
            slot = held[unit.group]
            slot[0] -= 1
            if slot[0] == 0:
                slot[1].close()
                del held[unit.group]

    by_group: dict[str, list[ProbeUnit]] = {}
    for u in units:
        by_group.setdefault(u.group, []).append(u)
    try:
        store_rows(runner.probe(claimed(by_group.values(), wait=False)))
        while busy:  # nothing of ours in flight now: wait for the other run, then do what it left
            store_rows(runner.probe(claimed([busy.pop(0)], wait=True)))
    finally:
        for _, claim in held.values():
            claim.close()
    report.notes += [n for n in runner.notes if n not in report.notes]
