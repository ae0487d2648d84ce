"""Pipelined surveys and fair thread counts (issue 20, items 3 and 5).

- A comparison's probe units run as soon as its members' features are cached: locally, a probe
  unit runs before the last extraction unit, and the rows equal a run that probes only after
  extraction (same keys, same top-1, same predictions, same chosen hyper-parameters).
- The run reports how long the probes overlapped extraction.
- Thread counts follow the CPUs this process may use (affinity), and OpenMP waits passively.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo_survey.features.cache import FeatureCache
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.survey.options import RunOptions
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.ray_runner import worker_env
from zoo_survey.survey.run import run_survey
from zoo_survey.survey.runner import LocalRunner
from zoo_survey.survey.units import ExtractUnit
from zoo_survey.threads import WAIT_POLICY, thread_env
from zoo_survey.zoo.registry import load_registry, registry_folders

ROOT = Path(__file__).resolve().parent.parent
OPTS = RunOptions(probes=("linear", "ncm", "fewshot"), image_size=32, max_train=60, max_test=30, grid=(0.1, 1.0), shots=(2,),
                  seeds=2, offline=True, extract=ExtractOptions(workers=0))


class Recording(LocalRunner):
    """The local runner, noting the kind of each unit as it finishes: x (extraction) or p (probe)."""

    made: list[Recording] = []

    def __init__(self, ws, hooks=None):
        super().__init__(ws, hooks)
        self.order: list[str] = []
        Recording.made.append(self)

    def pipeline(self, extract, next_probe):
        for unit, result, span in super().pipeline(extract, next_probe):
            self.order.append("x" if isinstance(unit, ExtractUnit) else "p")
            yield unit, result, span


class Sequential(LocalRunner):
    """The local runner without ``pipeline``: every extraction unit, then the probes (the driver's fallback)."""

    pipeline = None


def test_probes_run_as_soon_as_their_features_exist_with_the_rows_of_a_run_that_waits(tiny_registry, tmp_path):
    reg = load_registry(registry_folders([tiny_registry]))
    plan, ds = plan_family(reg.family("tiny"), 2), reg.dataset("digits")
    cache = FeatureCache(tmp_path / "cache")
    Recording.made.clear()
    piped = run_survey([plan], [ds], cache, tmp_path / "piped.sqlite", OPTS, runner_factory=Recording)
    order = Recording.made[0].order
    assert order.count("x") == 3 * len(plan.checkpoints) and order.count("p") == piped.written == len(piped.rows) > 6
    last_x = len(order) - 1 - order[::-1].index("x")
    assert "p" in order[:last_x], order  # a probe unit ran before the last extraction unit
    t = piped.timings
    assert t.early_probe_units == order[:last_x].count("p") > 0
    assert 0 < t.overlap_s <= t.probe_s and t.overlap_s <= t.extract_s <= t.wall_s

    waited = run_survey([plan], [ds], cache, tmp_path / "waited.sqlite", OPTS, runner_factory=Sequential)
    assert waited.forward_batches == 0 and waited.written == piped.written
    assert (waited.timings.overlap_s, waited.timings.early_probe_units) == (0, 0) and waited.timings.probe_s > 0
    assert [r.row_key for r in waited.rows] == [r.row_key for r in piped.rows]  # the same keys, in the store's order
    theirs = {r.row_key: r for r in waited.rows}
    for r in piped.rows:
        w = theirs[r.row_key]
        assert (r.top1, r.hparams, r.n_train, r.n_test) == (w.top1, w.hparams, w.n_train, w.n_test), (r.comparison, r.probe)
        assert (r.predictions is None) == (w.predictions is None)
        if r.predictions is not None:
            assert np.array_equal(r.predictions, w.predictions)


def test_a_rerun_of_a_pipelined_survey_probes_nothing_and_says_so(tiny_registry, tmp_path):
    reg = load_registry(registry_folders([tiny_registry]))
    plan, ds = plan_family(reg.family("tiny"), 1), reg.dataset("digits")
    cache, store = FeatureCache(tmp_path / "cache"), tmp_path / "out.sqlite"
    first = run_survey([plan], [ds], cache, store, OPTS)
    Recording.made.clear()
    again = run_survey([plan], [ds], cache, store, OPTS, runner_factory=Recording)
    assert (again.written, again.skipped, again.forward_batches) == (0, first.written, 0)
    assert "p" not in Recording.made[0].order
    assert again.timings.probe_s == 0 and again.timings.overlap_s == 0


def _python(code: str, env: dict[str, str] | None = None) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                             "OMP_WAIT_POLICY")}
    full["PYTHONPATH"] = os.pathsep.join([str(ROOT), full.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**full, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_thread_counts_follow_the_cpus_this_process_may_use_not_the_machines():
    """Pinned to one CPU, the process counts one (os.cpu_count() still counts the machine's), its libraries get one
    thread each, torch too, and OpenMP waits passively; the user's own settings win."""
    code = (
        "import os, json; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from zoo_survey.threads import usable_cpus, configure\n"
        "from zoo_survey.features.extract import default_workers\n"
        "set_ = configure()\n"
        "import torch\n"
        "print(json.dumps({'usable': usable_cpus(), 'machine': os.cpu_count(), 'set': set_, 'torch': torch.get_num_threads(),"
        " 'workers': default_workers('cuda'), 'env': {k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS')}}))"
    )
    got = json.loads(_python(code))
    assert got["usable"] == 1 and got["torch"] == 1 and got["workers"] == 1
    assert got["set"] == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert got["env"] == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    mine = json.loads(_python(code, {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3",
                                     "OPENBLAS_NUM_THREADS": "3"}))
    assert mine["set"] == {} and mine["env"] == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}


def test_the_command_line_and_ray_workers_wait_passively():
    """The CLI sets the passive wait before any command runs (before torch loads); Ray workers get it in their
    environment; a user's OMP_WAIT_POLICY wins in both."""
    code = ("import os, sys; sys.argv = ['zoo-survey', '--help']\nfrom zoo_survey.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    assert _python(code) == "PASSIVE False"
    assert _python(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE False"
    assert worker_env({})["OMP_WAIT_POLICY"] == "PASSIVE" == WAIT_POLICY["OMP_WAIT_POLICY"]
    assert worker_env({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "OMP_WAIT_POLICY" not in thread_env({"OMP_WAIT_POLICY": "ACTIVE"})
    # one count the user set holds for the libraries they did not name (MKL at 2 beside OpenMP at 1 moved the
    # resumed pretraining's weights by 2e-4: test_pretrain's kill -9 test)
    assert thread_env({"OMP_NUM_THREADS": "1"}) == {"OMP_WAIT_POLICY": "PASSIVE", "MKL_NUM_THREADS": "1",
                                                    "OPENBLAS_NUM_THREADS": "1"}
