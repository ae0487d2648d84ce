"""The driver alone claims, skips, writes and counts, whatever the runner: a fake runner that only maps units to rows
(the reference run's, in a shuffled order, several groups at once) gets the same store and counts as the local one."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.results.store import ResultStore, row_key
from zoo_survey.survey.options import RunOptions
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.run import run_survey
from zoo_survey.zoo.registry import load_registry, registry_folders

OPTS = RunOptions(probes=("ncm", "fewshot"), image_size=32, max_train=60, max_test=30, shots=(2,), seeds=2, offline=True,
                  extract=ExtractOptions(workers=0))


class Shuffled:
    """A runner that executes nothing of its own: each probe unit's row is the reference's. It takes ``batch``
    units at a time (so several groups are in flight) and gives their rows back in a shuffled order."""

    def __init__(self, ws, hooks, rows, batch=4, meanwhile=None):
        self.ws, self.rows, self.batch, self.meanwhile = ws, rows, batch, meanwhile
        self.where, self.notes, self.asked = {}, [], []

    def extract(self, units):
        for u in units:
            yield u, u.run(self.ws)  # the cache is filled: no forward pass

    def probe(self, units):
        todo, rng = iter(units), random.Random(0)
        while batch := list(itertools.islice(todo, self.batch)):
            self.asked += batch
            rng.shuffle(batch)
            for u in batch:
                if self.meanwhile is not None:
                    self.meanwhile(u)
                yield u, self.rows[u.row_key]


@pytest.fixture()
def setup(tiny_registry, tmp_path):
    reg = load_registry(registry_folders([tiny_registry]))
    plan, ds = plan_family(reg.family("tiny"), 2), reg.dataset("digits")
    cache = FeatureCache(tmp_path / "cache")
    ref = run_survey([plan], [ds], cache, tmp_path / "ref.sqlite", OPTS)
    assert ref.written == len(ref.rows) > 6 and ref.skipped == 0
    rows = {r.row_key: r for r in ref.rows}

    def run(store, **kw):
        made = []

        def factory(ws, hooks):
            made.append(Shuffled(ws, hooks, rows, **kw))
            return made[0]

        report = run_survey([plan], [ds], cache, store, OPTS, runner_factory=factory)
        return report, made[0]

    return rows, run


def _stored_once(store, rows) -> None:
    got = ResultStore(store).rows()
    assert sorted(r.row_key for r in got) == sorted(rows)  # every row, each once
    assert all(r.top1 == rows[r.row_key].top1 for r in got)


def test_rows_in_any_order_from_any_runner_are_stored_once_and_counted(setup, tmp_path):
    rows, run = setup
    store = tmp_path / "out.sqlite"
    report, runner = run(store)
    assert (report.written, report.skipped, report.forward_batches) == (len(rows), 0, 0)
    assert sorted(u.row_key for u in runner.asked) == sorted(rows)
    _stored_once(store, rows)
    assert {r.row_key for r in report.rows} == set(rows)
    again, runner = run(store)  # a rerun: every row stored, the runner is given nothing
    assert (again.written, again.skipped, runner.asked) == (0, len(rows), [])


def test_a_row_another_run_wrote_meanwhile_is_counted_skipped_not_stored_twice(setup, tmp_path):
    rows, run = setup
    store = tmp_path / "out.sqlite"
    other = ResultStore(store)
    first = next(iter(rows))

    def meanwhile(unit):  # another run (one that took no lock) stores this row while ours is running it
        if unit.row_key == first:
            assert other.put(rows[first])

    report, _ = run(store, meanwhile=meanwhile)
    assert (report.written, report.skipped) == (len(rows) - 1, 1)
    _stored_once(store, rows)


def test_a_group_another_run_holds_is_left_for_the_end_and_not_run_again(setup, tmp_path):
    """Another run holds one group until every other row is stored, then writes that group's rows and lets go: the
    driver, which waited for it, re-checks the store and hands the runner none of them."""
    rows, run = setup
    store_path = tmp_path / "out.sqlite"
    ref = list(rows.values())
    mine = [r for r in ref if (r.comparison, r.dataset) == (ref[0].comparison, ref[0].dataset)]
    group = row_key({"unit": sorted(r.row_key for r in mine)})
    held, failed = threading.Event(), []

    def other_run() -> None:
        store = ResultStore(store_path)
        with store.claim(group) as ours:
            held.set()
            deadline = time.monotonic() + 120
            while len(store.rows()) < len(ref) - len(mine) and time.monotonic() < deadline:
                time.sleep(0.05)
            failed.extend([] if ours and all(store.put(r) for r in mine) else ["the other run could not write"])

    thread = threading.Thread(target=other_run, daemon=True)
    thread.start()
    assert held.wait(30)
    report, runner = run(store_path)
    thread.join(30)
    assert not failed and not thread.is_alive()
    assert {u.row_key for u in runner.asked} == set(rows) - {r.row_key for r in mine}
    assert (report.written, report.skipped) == (len(ref) - len(mine), len(mine))
    _stored_once(store_path, rows)
