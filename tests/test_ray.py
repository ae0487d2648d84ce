"""The survey on a local Ray cluster: two nodes of one CPU each, bound to 127.0.0.1, shared by the module.

The same tiny survey runs once locally (the reference) and then on Ray: with the cache
shared by the nodes, with entries travelling back to the driver, with a worker killed
mid-extraction, and with a node removed mid-run. Each must end with the reference's rows
(same keys, top-1 equal) and a clean cache: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_family
from ray_faults import FAULT_ENV
from test_cli import zoo
from test_pixels import _image_folder

from zoo_survey.errors import ZooSurveyError, ZooSurveyFailure
from zoo_survey.features.cache import FeatureCache, scan
from zoo_survey.results.report import latest_rows
from zoo_survey.results.store import ResultStore, row_key
from zoo_survey.survey.options import resolve_options
from zoo_survey.survey.plan import plan_family
from zoo_survey.survey.ray_runner import (
    RayOptions,
    RayRunner,
    alive_nodes,
    cache_is_shared,
    check_reachable,
    connect,
    ray_options,
    scratch_folder,
)
from zoo_survey.survey.run import extract_all, run_survey
from zoo_survey.survey.runner import Hooks
from zoo_survey.survey.units import Workspace
from zoo_survey.zoo.registry import load_registry, registry_folders

# Read when ray is imported: every Ray address on this machine stays 127.0.0.1 (none is ever another interface).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parent.parent
SHARD_ROWS = 12  # over 4 shards of train, so a fault after the second shard lands mid-entry
# One survey, as the library takes it and as the command line gives it.
OPTS = resolve_options(device="cpu", image_size=32, max_train=64, max_test=32, workers=0, grid=(0.1, 1.0),
                       probes=("linear", "ncm", "fewshot"), shots=(2,), seeds=2, offline=True)
RUN_ARGS = ("--family", "tiny", "--ensemble", "1", "-d", "digits", "--max-train", "64", "--max-test", "32", "--image-size",
            "32", "--workers", "0", "--device", "cpu", "--grid", "0.1,1", "--probes", "linear,ncm,fewshot", "--shots", "2",
            "--seeds", "2", "--shard-rows", str(SHARD_ROWS), "--offline")


@pytest.fixture(scope="module")
def registry(pair_registry) -> Path:
    """Two checkpoints, so two actors (one per node) each take one: a hub snapshot and a local .pth."""
    return pair_registry


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, hub_cache):
    """Two Ray nodes of one CPU each on loopback, no dashboard; the driver connects to the head."""
    faults = tmp_path_factory.mktemp("ray-faults")
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_CACHE": str(hub_cache),
        "ZOO_SURVEY_ALLOWED_PATHS": str(tmp_path_factory.getbasetemp()),
        FAULT_ENV: str(faults),
        # the workers import this checkout's zoo_survey, and ray_faults from tests/
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        import ray
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        assert not ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
        node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 * 1024 * 1024}
        # A removed node is noticed in about a second (the default takes ~15 s: a test spends it waiting).
        health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_timeout_ms": 300,
                  "health_check_failure_threshold": 3}
        c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False, "_system_config": health})
        c.add_node(**node)
        ray.init(address=c.address, _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": "ray_faults.install", "env_vars": env})
        c.faults = faults
        c.node_args = node
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()


@pytest.fixture()
def two_nodes(cluster):
    """Two alive nodes before each test (the node-removal test takes one away)."""
    while len(alive_nodes()) < 2:
        cluster.add_node(**cluster.node_args)
    for f in cluster.faults.iterdir():
        f.unlink()
    return cluster


def _plan(registry: Path):
    reg = load_registry(registry_folders([registry]))
    return reg, plan_family(reg.family("tiny"), 1)


def _survey(registry: Path, tmp: Path, runner=None, hooks=None):
    reg, plan = _plan(registry)
    cache = FeatureCache(tmp / "cache", shard_rows=SHARD_ROWS)
    report = run_survey([plan], [reg.dataset("digits")], cache, tmp / "out" / "results.sqlite", OPTS, hooks, runner)
    return report, cache


def _ray(cluster, mode: str = "auto"):
    """The Ray runner over the module's cluster, as the CLI makes it (``connect`` reuses the connection)."""
    with connect("auto") as now:
        return RayRunner.factory(now, RayOptions("auto", cache=mode))


_REFERENCE: dict[str, object] = {}


@pytest.fixture()
def reference(registry, hub_env, tmp_path_factory):
    """The same survey run locally, once per module: its rows by key and its cache."""
    if not _REFERENCE:
        report, cache = _survey(registry, tmp_path_factory.mktemp("ray-reference"))
        assert report.written == len(report.rows) > 0 and report.forward_batches > 0
        _REFERENCE.update(rows={r.row_key: r for r in report.rows}, cache=cache)
    return _REFERENCE


def _entries(cache: FeatureCache) -> dict[str, np.ndarray]:
    """Every complete entry's features by its path below the root; verify re-checks every checksum."""
    entries = scan(cache, verify=True)
    assert entries and all(e.status == "complete" for e in entries), [(e.path, e.status, e.detail) for e in entries]
    assert not list(cache.root.rglob("*.incomplete"))
    out = {}
    for e in entries:
        m = json.loads((e.path / "manifest.json").read_text())
        out[str(e.path.relative_to(cache.root))] = np.concatenate([np.load(e.path / s["features"]) for s in m["shards"]])
    return out


def _same_as_reference(store: Path, cache: FeatureCache, reference) -> None:
    """Nothing lost, nothing duplicated: the reference's row keys exactly, top-1 equal, the same cache entries."""
    rows = ResultStore(store).rows()
    keys = [r.row_key for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(reference["rows"])
    for r in rows:
        ref = reference["rows"][r.row_key]
        assert (r.top1 is None) == (ref.top1 is None)
        if r.top1 is not None:
            assert abs(r.top1 - ref.top1) <= 1e-6, (r.comparison, r.probe, r.setting, r.seed, r.top1, ref.top1)
    mine, theirs = _entries(cache), _entries(reference["cache"])
    assert set(mine) == set(theirs)
    for k in mine:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


def _tsv_table(text: str, title: str) -> list[list[str]]:
    """The rows (header first) of the table under ``# title`` in TSV output."""
    lines = text.split(f"# {title}\n")[1].splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("#")), len(lines))
    return [line.split("\t") for line in lines[:end] if "\t" in line]


def test_the_survey_on_ray_equals_the_local_run_row_for_row(two_nodes, registry, hub_env, tmp_path, reference,
                                                            monkeypatch, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = ("run", "--registry", str(registry), *RUN_ARGS, "--cache-dir", str(cache), "--out", str(out), "--ray", "auto")
    code, stdout, err = zoo(monkeypatch, capsys, *run, "--format", "tsv")
    assert code == 0, stdout + err
    assert "Ray (auto): 2 node(s), 2 CPU(s), 0 GPU(s)" in stdout and "not shared" not in stdout + err
    _same_as_reference(out / "results.sqlite", FeatureCache(cache), reference)
    # both nodes worked, one extraction actor each (one CPU each): the run's table and every row say where
    where = _tsv_table(stdout, "where it ran")
    assert where[0] == ["node", "host", "extraction units", "probe units", "retried", "failed"]
    assert [cells[2] for cells in where[1:]] == ["3", "3"]  # 2 checkpoints x 3 splits, a checkpoint per actor
    assert sum(int(cells[3]) for cells in where[1:]) == len(reference["rows"])
    stored = ResultStore(out / "results.sqlite").rows()
    assert {r.provenance["ran_on"]["node"][:6] for r in stored} <= {cells[0].rsplit(":", 1)[1] for cells in where[1:]}
    assert all(r.provenance["ran_on"]["resources"] == {"CPU": 1.0} for r in stored)  # a CPU run: each probe task one CPU
    assert re.search(r"Time: [\d.]+ s wall: extraction [\d.]+ s, probes [\d.]+ s, of which [\d.]+ s while extraction ran",
                     stdout), stdout
    code, stdout, err = zoo(monkeypatch, capsys, "report", "--out", str(out), "--format", "tsv")
    assert code == 0, stdout + err
    ran_on = _tsv_table(stdout, "where it ran")
    assert ran_on[0] == ["node", "host", "probes", "rows"]
    assert sum(int(cells[-1]) for cells in ran_on[1:]) == len(latest_rows(stored))
    code, stdout, err = zoo(monkeypatch, capsys, *run)  # a rerun: everything cached and stored, nothing scheduled
    done = f"0 result row(s) written, {len(reference['rows'])} already done; 0 forward batch(es) run"
    assert code == 0 and done in stdout, stdout + err
    code, stdout, err = zoo(monkeypatch, capsys, "cache", "verify", "--cache-dir", str(cache))
    assert code == 0, stdout + err


def test_a_worker_killed_mid_extraction_with_a_cache_the_nodes_do_not_share_loses_and_duplicates_nothing(
        two_nodes, registry, hub_env, tmp_path, reference):
    (two_nodes.faults / "kill").touch()
    report, cache = _survey(registry, tmp_path, _ray(two_nodes, mode="driver"))
    assert list(two_nodes.faults.glob("kill.taken-by-*")), "no worker met the fault"
    assert sum(t.retried for t in report.where.values()) >= 1  # the unit started again on the restarted actor
    _same_as_reference(report.store, cache, reference)  # every entry came back through the object store, whole
    scratch = scratch_folder(cache.root.absolute())
    features = [m for m in scratch.rglob("manifest.json") if ".pixels" not in m.parts]
    assert not features  # each node's copy was dropped once the driver had it; its decoded pixels stay, for reuse
    assert list(scratch.glob(".pixels/digits/*/*/manifest.json"))


@pytest.mark.parametrize("mode", ["shared", "driver"])
def test_probe_tasks_start_while_an_actor_still_extracts(two_nodes, registry, hub_env, tmp_path, reference, mode):
    """One checkpoint's features are cached before the run: its comparison's probe tasks go out at once, beside the
    other checkpoint's extraction actor, and the rows are the reference's."""
    reg, plan = _plan(registry)
    cache = FeatureCache(tmp_path / "cache", shard_rows=SHARD_ROWS)
    first = plan.baseline.members[0]
    extract_all([first], [reg.dataset("digits")], cache, OPTS)
    report, cache = _survey(registry, tmp_path, _ray(two_nodes, mode=mode))
    t = report.timings
    assert t.early_probe_units > 0, t  # handed to Ray before the last extraction unit came back
    assert t.overlap_s <= t.probe_s and t.extract_s <= t.wall_s
    assert sum(w.extract for w in report.where.values()) == 3  # the other checkpoint's three splits
    _same_as_reference(report.store, cache, reference)


def test_a_probe_task_asks_for_a_gpu_share_on_a_cuda_run_and_a_cpu_otherwise(two_nodes, tmp_path):
    """The request follows the run's device and ``gpus_per_probe``; a cluster without a GPU refuses a CUDA run's
    probe tasks in one line instead of leaving them pending."""
    with connect("auto") as cluster:
        def runner(device: str, share: float | None = None) -> RayRunner:
            opts = dataclasses.replace(OPTS, extract=dataclasses.replace(OPTS.extract, device=device))
            return RayRunner(Workspace(FeatureCache(tmp_path / "c"), opts), Hooks(), cluster,
                             RayOptions("auto", gpus_per_probe=share))

        assert runner("cpu").probe_resources() == {"num_cpus": 1.0, "num_gpus": 0.0}
        assert runner("cpu", 0.5).probe_resources() == {"num_cpus": 1.0, "num_gpus": 0.0}
        assert runner("cuda").probe_resources() == {"num_cpus": 1.0, "num_gpus": 0.25}
        assert runner("cuda", 0.5).probe_resources() == {"num_cpus": 1.0, "num_gpus": 0.5}
        with pytest.raises(ZooSurveyError, match="no node of the Ray cluster has 1 CPU\\(s\\) and 0.5 GPU\\(s\\) for a probe task"):
            runner("cuda", 0.5)._probe_task()
        task, window = runner("cpu")._probe_task()
        assert window == 4  # two groups per CPU-sized slot: 2 nodes of one CPU


class _Recorder(Hooks):
    """Keeps every per-node display the runner hands over."""

    def __init__(self) -> None:
        self.seen: list[dict[str, tuple[int, int, int, int]]] = []

    def nodes(self, tallies):
        self.seen.append({n: (t.extract + t.probe, t.running, t.failed, t.retried) for n, t in tallies.items()})


def test_jpeg_sources_key_alike_on_the_driver_the_actors_and_the_probe_tasks(two_nodes, registry, hub_env, tmp_path):
    """The feature key records who decodes JPEG rows, which depends on the images: a probe task, which has no
    images, gets the driver's answer, so it reads the entry the actor wrote (it would otherwise try to extract)."""
    _image_folder(tmp_path / "data" / "imgs", [(40, 30), (33, 33), (64, 48), (30, 40), (50, 50), (45, 35)], fmt="JPEG")
    write_family(tmp_path / "data", "ds", "datasets:\n  - {id: photos, source: {type: imagefolder, path: imgs}, num_classes: 2}\n")
    reg = load_registry(registry_folders([registry, tmp_path / "data"]))
    plan, photos = plan_family(reg.family("tiny"), 1), reg.dataset("photos")
    opts = dataclasses.replace(OPTS, extract=dataclasses.replace(OPTS.extract, jpeg="device"))
    local = run_survey([plan], [photos], FeatureCache(tmp_path / "local"), tmp_path / "local.sqlite", opts)
    cache = FeatureCache(tmp_path / "ray")
    on_ray = run_survey([plan], [photos], cache, tmp_path / "ray.sqlite", opts, None, _ray(two_nodes))
    assert on_ray.written == len(local.rows) > 0
    ours = {r.row_key: r.top1 for r in on_ray.rows}
    assert ours.keys() == {r.row_key for r in local.rows}
    assert all(r.top1 is None or abs(ours[r.row_key] - r.top1) <= 1e-6 for r in local.rows)
    keys = [json.loads((e.path / "manifest.json").read_text())["key"] for e in scan(cache)]
    assert keys and all(k["preprocess"]["decoder"] == "libjpeg" for k in keys)  # JPEG bytes, decoded per batch


def test_rows_another_run_writes_while_we_wait_for_its_claim_are_not_probed_again(two_nodes, registry, hub_env, tmp_path,
                                                                                   reference):
    """Another run holds the first group (a comparison on a dataset) until every other row is stored, then writes
    that group's rows and lets go: the Ray run, which was waiting for it, sees them and runs none of them."""
    rows = list(reference["rows"].values())
    first = [r for r in rows if (r.comparison, r.dataset) == (rows[0].comparison, rows[0].dataset)]
    group = row_key({"unit": sorted(r.row_key for r in first)})
    store_path = tmp_path / "out" / "results.sqlite"
    held, failed = threading.Event(), []

    def other_run() -> None:
        store = ResultStore(store_path)
        with store.claim(group) as mine:
            held.set()
            deadline = time.monotonic() + 240
            while len(store.rows()) < len(rows) - len(first) and time.monotonic() < deadline:
                time.sleep(0.2)
            failed.extend([] if mine and all(store.put(r) for r in first) else ["the other run could not write"])

    other = threading.Thread(target=other_run, daemon=True)
    other.start()
    assert held.wait(30)
    report, cache = _survey(registry, tmp_path, _ray(two_nodes))
    other.join(30)
    assert not failed and not other.is_alive()
    assert sum(t.probe for t in report.where.values()) == len(rows) - len(first)  # none of the other run's rows again
    assert report.skipped == len(first)
    _same_as_reference(store_path, cache, reference)


def test_a_node_removed_mid_run_loses_and_duplicates_nothing(two_nodes, registry, hub_env, tmp_path, reference):
    other = next(iter(two_nodes.worker_nodes))  # never the head: the driver is connected there
    victim = other.node_id
    assert victim in {n.id for n in alive_nodes()}
    (two_nodes.faults / "stall").write_text(victim)

    def remove_when_stalled() -> None:
        deadline = time.time() + 120
        while not (two_nodes.faults / "stalled").exists() and time.time() < deadline:
            time.sleep(0.05)
        two_nodes.remove_node(other, allow_graceful=False)

    remover = threading.Thread(target=remove_when_stalled)
    remover.start()
    hooks = _Recorder()
    try:
        report, cache = _survey(registry, tmp_path, _ray(two_nodes), hooks)
    finally:
        remover.join()
    assert (two_nodes.faults / "stalled").exists(), "no worker on the removed node reached the fault"
    assert victim not in {n.id for n in alive_nodes()}
    _same_as_reference(report.store, cache, reference)
    # the display showed units running on the lost node, then the rest done elsewhere
    assert any(seen.get(victim, (0, 0))[1] > 0 for seen in hooks.seen)
    assert sum(done for done, *_ in hooks.seen[-1].values()) == 6 + len(reference["rows"]), (hooks.seen[-4:], report.where)
    assert report.where[victim].extract < 3 and sum(t.retried for t in report.where.values()) >= 1


def test_an_error_in_a_unit_names_the_unit_and_the_node(two_nodes, registry, hub_env, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad-registry"
    bad.mkdir()
    (bad / "tiny.yaml").write_text((registry / "tiny.yaml").read_text().replace("feature_dim: 96", "feature_dim: 95"))
    (bad / "tiny_resnet.pth").symlink_to(registry / "tiny_resnet.pth")
    code, out, err = zoo(monkeypatch, capsys, "extract", "--registry", str(bad), "-f", "tiny", "--checkpoints",
                         "test_resnet.mine", "-d", "digits", "--max-train", "40", "--max-test", "20", "--image-size", "32",
                         "--workers", "0", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--offline",
                         "--ray", "auto")
    assert code == 1, out + err
    assert "error: extract test_resnet.mine · digits/" in err
    assert "on node " in err and "field 'feature_dim' is 95 but the model gives 96" in err
    assert "Traceback" not in err


def test_bad_input_is_reported_before_any_unit_is_scheduled(two_nodes, registry, hub_env, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad-registry"
    bad.mkdir()
    (bad / "tiny.yaml").write_text((registry / "tiny.yaml").read_text())  # its .pth is not beside it
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(bad), "-f", "tiny", "-k", "1", "-d", "digits",
                         "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                         "--offline", "--ray", "auto")
    assert code == 2 and "tiny_resnet.pth" in err, out + err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_cache_sharing_is_checked_on_every_node(two_nodes, tmp_path):
    assert cache_is_shared(tmp_path, alive_nodes()) == (True, "")
    assert not list(tmp_path.iterdir()) or [p.name for p in tmp_path.iterdir()] == []  # sentinels cleaned up
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    shared, why = cache_is_shared(blocked, alive_nodes())
    assert not shared and why.count("cannot write there") == 2


def test_connect_reuses_this_process_connection(two_nodes):
    import ray

    with connect("auto") as cluster:
        assert len(cluster.nodes) == 2 and cluster.cpus == 2
    assert ray.is_initialized()  # not ours to shut down


@pytest.mark.parametrize("args, message", [
    (("--ray-cache", "driver"), "--ray-cache only apply to a run on Ray"),
    (("--ray", "nowhere"), "expected local .*, auto .* or a cluster address"),
    (("--ray", "local", "--ray-gpus-per-actor", "1.5"), "a fraction in \\(0, 1\\] or a whole number"),
    (("--ray", "local", "--ray-cache", "nfs"), "--ray-cache must be one of auto, shared, driver"),
    (("--ray", "local", "--ray-gpus-per-probe", "2"), "--ray-gpus-per-probe must be a fraction in \\(0, 1\\]"),
    (("--ray-gpus-per-probe", "0.5"), "--ray-gpus-per-probe only apply to a run on Ray"),
    (("--ray", "local", "--device", "cuda:1"), "--device cuda:1 with --ray: Ray gives each actor its GPUs"),
])
def test_bad_ray_flags_are_one_line_before_any_work(monkeypatch, capsys, tmp_path, args, message):
    code, out, err = zoo(monkeypatch, capsys, "extract", "-d", "digits", "--cache-dir", str(tmp_path / "c"), *args)
    assert code == 2 and "error:" in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "c").exists()


def test_an_address_where_nothing_listens_fails_in_seconds_not_minutes():
    with socket.socket() as s:  # a loopback port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - t < 10
    with socket.socket() as srv:  # a listening head passes, with or without the client scheme
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        check_reachable(f"ray://127.0.0.1:{srv.getsockname()[1]}")
        check_reachable(f"127.0.0.1:{srv.getsockname()[1]}")


def test_ray_options_checks_without_importing_ray():
    assert ray_options(None) is None
    with pytest.raises(ZooSurveyError, match="only apply to a run on Ray"):
        ray_options(None, cpus_per_actor=2)
    assert ray_options("10.0.0.1:6379", gpus_per_actor=0.25) == RayOptions("10.0.0.1:6379", 0.25, 1.0, "auto")
    assert not issubclass(ZooSurveyFailure, ZooSurveyError)  # a failure is a RuntimeError, bad input a ValueError
    assert issubclass(ZooSurveyFailure, RuntimeError) and issubclass(ZooSurveyError, ValueError)


def test_without_ray_nothing_imports_ray(tmp_path, hub_env, tiny_registry):
    code = textwrap.dedent(f"""
        import sys
        from zoo_survey.cli import main
        sys.argv = ["zoo-survey", "run", "--registry", {str(tiny_registry)!r}, "-f", "tiny", "-k", "1", "-d", "digits",
                    "--max-train", "40", "--max-test", "20", "--image-size", "32", "--workers", "0", "--device", "cpu",
                    "--probes", "ncm", "--cache-dir", {str(tmp_path / "cache")!r}, "--out", {str(tmp_path / "out")!r},
                    "--offline"]
        try:
            main()
        except SystemExit as e:
            assert not e.code, e.code
        print("ray imported:", "ray" in sys.modules)
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(hub_env), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "result row(s) written" in out.stdout and "ray imported: False" in out.stdout
