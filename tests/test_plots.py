"""Plots: drawn in forked workers while the report's tables are built, the same files as drawn in one process; a
worker that fails is made up for by the parent, whose error (if the plot cannot be drawn at all) is the one raised."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report import filled  # noqa: F401 - the fixture: a tiny run's output folder (linear and few-shot rows)

from zoo_survey.errors import ZooSurveyError
from zoo_survey.results import plots
from zoo_survey.results.analysis import diversity_records, latest_rows
from zoo_survey.results.report import comparison_lines, diversity_of, diversity_points, primary_probe, write_report
from zoo_survey.results.stats import _crossed_draws, crossed_difference
from zoo_survey.results.store import ResultStore

NAMES = ("accuracy_vs_gmacs", "difference_heatmap", "gain_vs_diversity", "fewshot_curves")


def _inputs(out_dir: Path):
    store = ResultStore(out_dir / "results.sqlite", create=False)
    rows = store.rows()
    lines = comparison_lines(rows)
    points = diversity_points(diversity_of(lines, store.similarity()))
    assert points and diversity_points(diversity_records(lines, store.similarity())) == points  # the same, sans pandas
    return latest_rows(rows), lines, primary_probe(lines), points


def _pid_of_each_plot(monkeypatch, record: Path) -> None:
    """Each plot function notes the process that drew it in ``record``."""
    def noting(name: str, draw):
        def noted(*args):
            with record.open("a") as f:
                f.write(f"{name} {os.getpid()}\n")
            return draw(*args)
        return noted

    for name in ("accuracy_vs_gmacs", "difference_heatmap", "gain_vs_diversity", "seed_curves"):
        monkeypatch.setattr(plots, name, noting(name, getattr(plots, name)))


def test_plots_drawn_in_workers_are_the_plots_drawn_here(filled, tmp_path, monkeypatch):  # noqa: F811
    rows, lines, primary, diversity = _inputs(filled)
    record = tmp_path / "pids.txt"
    _pid_of_each_plot(monkeypatch, record)
    monkeypatch.setattr(plots, "plot_workers", lambda jobs: 0)
    here = plots.write_plots(rows, lines, primary, tmp_path / "here", diversity)
    monkeypatch.setattr(plots, "plot_workers", lambda jobs: 2)
    monkeypatch.setattr(plots, "HERE_FIRST", 0.0)  # this process draws its share too (it has no tables to build)
    finish = plots.start_plots(rows, lines, primary, tmp_path / "workers", diversity)
    forked = finish()
    assert [p.name for p in here] == [p.name for p in forked] == [f"{n}.png" for n in NAMES]
    pids = [line.split() for line in record.read_text().splitlines()]
    assert len(pids) == 8 and {pid for _, pid in pids[:4]} == {str(os.getpid())}  # the first four: drawn here
    drawn_by = {name: pid for name, pid in pids[4:]}
    assert len(drawn_by) == 4 and len(set(drawn_by.values())) == 3  # then by two workers and this process
    assert drawn_by["accuracy_vs_gmacs"] == drawn_by["seed_curves"] == str(os.getpid())  # here: 1st and 4th
    for a, b in zip(here, forked, strict=True):
        assert a.read_bytes() == b.read_bytes()  # the same pixels (the PNG has no date; the SVG has one)
        with Image.open(b) as im:
            im.verify()
        with Image.open(b) as im:
            assert im.format == "PNG" and min(im.size) > 200
        svg = b.with_suffix(".svg").read_text()
        assert svg.lstrip().startswith("<?xml") and svg.rstrip().endswith("</svg>")
    assert (tmp_path / "workers" / plots.INPUTS_FILE).is_file()  # the memo: written once every plot is


def test_a_plot_a_worker_failed_is_drawn_by_the_report_and_its_error_is_raised_there(filled, tmp_path, monkeypatch):  # noqa: F811
    parent = os.getpid()
    draw = plots.difference_heatmap

    def fails_in_a_worker(*args):
        if os.getpid() != parent:
            raise RuntimeError("a worker's failure")
        return draw(*args)

    monkeypatch.setattr(plots, "plot_workers", lambda jobs: 2)
    monkeypatch.setattr(plots, "difference_heatmap", fails_in_a_worker)
    store = ResultStore(filled / "results.sqlite", create=False)
    rows, similarity = store.rows(), store.similarity()
    paths = write_report(rows, filled, similarity=similarity)
    assert [p.name for p in paths[1:]] == [f"{n}.png" for n in NAMES]
    assert all(p.is_file() and p.with_suffix(".svg").is_file() for p in paths[1:])

    def always_fails(*args):
        raise ZooSurveyError("the heat map cannot be drawn")

    monkeypatch.setattr(plots, "difference_heatmap", always_fails)
    (filled / "plots" / plots.INPUTS_FILE).unlink()
    with pytest.raises(ZooSurveyError, match="the heat map cannot be drawn"):
        write_report(rows, filled, similarity=similarity)
    assert not (filled / "plots" / plots.INPUTS_FILE).exists()  # no memo: the next report draws them again


def test_no_workers_on_one_cpu_or_beside_other_threads(monkeypatch):
    import threading

    # Alone in this process (a thread another test left behind would count: patched until the real thread below)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr("zoo_survey.threads.usable_cpus", lambda: 1)
    assert plots.plot_workers(4) == 0
    monkeypatch.setattr("zoo_survey.threads.usable_cpus", lambda: 2)
    assert plots.plot_workers(4) == 1  # one worker beside this process
    monkeypatch.setattr("zoo_survey.threads.usable_cpus", lambda: 8)
    assert plots.plot_workers(4) == 3 and plots.plot_workers(1) == 0
    monkeypatch.undo()
    monkeypatch.setattr("zoo_survey.threads.usable_cpus", lambda: 8)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert plots.plot_workers(4) == 0  # a fork would copy the other thread's locks, perhaps held
    finally:
        stop.set()
        t.join()


def test_the_crossed_bootstrap_draws_once_per_shape_with_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(3)
    pairs = [(rng.random((4, 300)) < 0.6, rng.random((4, 300)) < p) for p in (0.5, 0.6, 0.7)]
    _crossed_draws.cache_clear()
    kept = [crossed_difference(a, b) for a, b in pairs]
    assert _crossed_draws.cache_info().misses == 1 and _crossed_draws.cache_info().hits == 2
    monkeypatch.setattr("zoo_survey.results.stats._CROSSED_MEMO_CELLS", 0)  # every call draws its own
    assert [crossed_difference(a, b) for a, b in pairs] == kept
    assert kept[0] != kept[2]
