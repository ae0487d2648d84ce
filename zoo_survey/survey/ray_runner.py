"""Run the units of work on a Ray cluster: extraction on an actor per checkpoint, probes as tasks; only execution.

The units are the ones :class:`~zoo_survey.survey.runner.LocalRunner` runs (:mod:`.units`,
pure ``run(workspace)``); only where they execute changes.

- **Extraction.** Units are grouped by checkpoint, one actor per group (``--ray-gpus-per-actor``,
  fractions share a GPU; ``--ray-cpus-per-actor``): it loads the model once and runs every
  dataset split through it. Ray places the actors as nodes have room (the costliest
  checkpoints asked for first); an actor is killed once its group is done, so the next one,
  or one Ray restarts elsewhere, finds room.
- **Probes** run as tasks, one per row. They get each dataset's splits (indices and labels,
  not images) and resolved checkpoints from the driver, and read features only.
- **The store.** Like every runner this one only executes: rows come back to the driver
  (:mod:`.driver`), which alone claims, skips, writes the SQLite file and counts. Probe
  units are taken from it while fewer than a window of groups is in flight.
- **The cache.** Each cache key belongs to one unit and every write is temp-then-rename, so
  Ray's at-least-once retries write the same files and no lock has to work across nodes.
  At the start every node writes a sentinel into the cache folder and lists what the
  others wrote. If every node sees every sentinel the cache is *shared*: actors write it
  and probe tasks read it directly. Otherwise (``--ray-cache driver``, or a node-local
  folder) actors extract into a scratch folder on their node and each finished entry
  travels back through Ray's object store to the driver, which writes it (checksums
  checked) and ships each group's features to its probe tasks the same way.
- **Faults.** Actors restart and their calls retry (``max_restarts``, ``max_task_retries``);
  probe tasks retry (``max_retries``); errors a retry can fix (a dropped connection, a
  timeout, an I/O error) are retried too (``retry_exceptions``). A restarted actor resumes
  an entry from its complete shards. Any other error in a unit stops the run with one line
  naming the unit and the node.

Ray is imported only inside functions: without ``--ray`` it is never imported.

>>> with connect("local") as cluster:                                       # doctest: +SKIP
...     run_survey(plans, datasets, cache, store, options, runner_factory=RayRunner.factory(cluster, RayOptions("local")))
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.datasets import PreparedDataset
from ..digests import string_digest
from ..errors import ZooSurveyError, ZooSurveyException, ZooSurveyFailure, shown
from ..features.cache import FeatureCache
from ..files import atomic_write
from ..results.store import ResultRow
from ..threads import WAIT_POLICY
from ..zoo.checkpoints import ResolvedCheckpoint
from .options import RunOptions
from .plan import Comparison
from .runner import Finished, Hooks, NodeTally, RunnerFactory
from .units import ExtractDone, ExtractUnit, ProbeUnit, Workspace

CACHE_MODES = ("auto", "shared", "driver")
RETRIES = 3  # restarts of an actor, retries of a call or task
GPUS_PER_PROBE = 0.25  # a probe task's share of a GPU on a CUDA run: four fit beside each other (a linear head is small)
SENTINELS = ".ray-sentinels"
_POLL_S = 0.5  # how often the driver refreshes the progress display while it waits
_UNAVAILABLE_TRIES = 180  # asks, a second apart, of an actor Ray is restarting (it notices a dead node in ~15-30 s)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """Where and how a run uses Ray: the cluster, the extraction actors' resources, the cache mode."""

    address: str  # "local", "auto", or the cluster's address (host:port)
    gpus_per_actor: float | None = None  # None: 1 on a CUDA run, else 0
    cpus_per_actor: float = 1.0
    cache: str = "auto"  # auto | shared | driver
    retries: int = RETRIES
    gpus_per_probe: float | None = None  # a probe task's GPU share on a CUDA run; None: GPUS_PER_PROBE


def ray_options(address: str | None, gpus_per_actor: float | None = None, cpus_per_actor: float | None = None,
                cache: str | None = None, device: str = "auto", gpus_per_probe: float | None = None) -> RayOptions | None:
    """Check the ``--ray`` flags (and ``--device`` beside them) before any work; ``None`` without ``--ray`` (the
    other flags then need it).

    >>> ray_options("local", gpus_per_actor=0.5)                       # doctest: +SKIP
    RayOptions(address='local', gpus_per_actor=0.5, cpus_per_actor=1.0, cache='auto', retries=3)
    """
    if address is None:
        given = [f for f, v in (("ray_gpus_per_actor", gpus_per_actor), ("ray_cpus_per_actor", cpus_per_actor),
                                ("ray_cache", cache), ("ray_gpus_per_probe", gpus_per_probe)) if v is not None]
        if given:
            raise ZooSurveyError(f"{', '.join(repr(g) for g in given)} only apply to a run on Ray; give 'ray' (local, auto "
                                 "or ADDRESS)", param=(*given, "ray"))
        return None
    if not (address in ("local", "auto") or ":" in address):
        raise ZooSurveyError(f"'ray' {shown(address)}: expected local (start Ray here), auto (the cluster this machine "
                             "belongs to) or a cluster address such as 10.0.0.1:6379", param="ray")
    if gpus_per_actor is not None and not (0 < gpus_per_actor <= 1 or float(gpus_per_actor).is_integer()):
        raise ZooSurveyError(f"'ray_gpus_per_actor' must be a fraction in (0, 1] or a whole number, got {gpus_per_actor}",
                             param="ray_gpus_per_actor")
    if gpus_per_probe is not None and not 0 < gpus_per_probe <= 1:
        raise ZooSurveyError(f"'ray_gpus_per_probe' must be a fraction in (0, 1], got {gpus_per_probe}",
                             param="ray_gpus_per_probe")
    if cpus_per_actor is not None and not cpus_per_actor > 0:
        raise ZooSurveyError(f"'ray_cpus_per_actor' must be positive, got {cpus_per_actor}", param="ray_cpus_per_actor")
    if cache is not None and cache not in CACHE_MODES:
        raise ZooSurveyError(f"'ray_cache' must be one of {', '.join(CACHE_MODES)}, got {shown(cache)}", param="ray_cache")
    check_device(device)
    if importlib.util.find_spec("ray") is None:
        raise ZooSurveyError("'ray' needs Ray, an optional extra: pip install 'zoo-survey[ray]'", param="ray")
    return RayOptions(address, gpus_per_actor, cpus_per_actor or 1.0, cache or "auto", gpus_per_probe=gpus_per_probe)


def check_device(device: str) -> None:
    """A run on Ray takes no GPU index: Ray gives each actor its GPUs."""
    if device.startswith("cuda:"):
        raise ZooSurveyError(f"device={device!r} with 'ray': Ray gives each actor its GPUs; use device='cuda' or 'auto'",
                             param=("device", "ray"))


# --------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class Node:
    """One machine of the cluster, as Ray reports it."""

    id: str
    host: str
    cpus: float
    gpus: float


def node_label(node_id: str, host: str) -> str:
    """``host:abc123``: the host and the start of Ray's node id (several nodes may share a host)."""
    return f"{host}:{node_id[:6]}"


def alive_nodes() -> list[Node]:
    import ray

    return [Node(n["NodeID"], n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"),
                 float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")]


@dataclass(frozen=True)
class RayCluster:
    """The cluster a run connected to, as it was then (nodes may come and go during the run)."""

    address: str
    nodes: tuple[Node, ...]
    driver_node: str

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's ``HF_*`` and ``ZOO_SURVEY_*`` variables (offline mode, caches, allowed paths), for every
    worker, never a token; and OpenMP's passive wait (Ray sets each worker's thread count from its CPUs)."""
    environ = os.environ if environ is None else environ
    return {**{k: v for k, v in WAIT_POLICY.items() if k not in environ},
            **{k: v for k, v in environ.items() if k.startswith(("HF_", "ZOO_SURVEY_", "OMP_WAIT")) and "TOKEN" not in k}}


@contextmanager
def connect(address: str) -> Iterator[RayCluster]:
    """Connect to Ray for one run (or use the connection this process already has) and disconnect after.

    ``local`` starts Ray here with every visible GPU, bound to 127.0.0.1 and without the
    dashboard, and stops it after; ``auto`` and an address join a running cluster.
    """
    if address == "local":  # read when ray is imported: one machine, every Ray address 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                                  "runtime_env": {"env_vars": worker_env()}}
        try:
            if address == "local":
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local run reports nowhere
                ray.init(num_gpus=_visible_gpus(), include_dashboard=False, _node_ip_address="127.0.0.1", **kwargs)
            else:
                check_reachable(address)
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ZooSurveyError(
                f"ray={address!r}: cannot connect to a Ray cluster ({_first_line(e)}); start one with "
                "`ray start --head` (see docs/scale.md) or pass ray='local'", param="ray"
            ) from e
    try:
        yield RayCluster(address, tuple(alive_nodes()), ray.get_runtime_context().get_node_id())
    finally:
        if started:
            ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) that answers no TCP connection fails here, in seconds:
    ``ray.init`` would wait minutes for a head that is not there. ``auto`` is Ray's to resolve."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port}: {e.strerror or e}") from e


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------- is the cache shared?


def _sentinel_step(root: str, token: str, step: str) -> tuple[str, list[str] | str]:
    """On one node: write its sentinel, list the sentinels it sees, or remove its own. Errors come back as text."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    folder = Path(root) / SENTINELS / token
    try:
        if step == "write":
            atomic_write(folder / node, lambda f: f.write(node.encode()))
            return node, []
        if step == "read":
            return node, sorted(p.name for p in folder.iterdir() if not p.name.endswith(".incomplete"))
        (folder / node).unlink(missing_ok=True)
        for empty in (folder, folder.parent):
            try:
                empty.rmdir()
            except OSError:
                break  # another node's sentinel is still there, or the folder was never made here
        return node, []
    except (OSError, ZooSurveyFailure) as e:
        return node, _first_line(e)


def cache_is_shared(root: Path, nodes: Sequence[Node]) -> tuple[bool, str]:
    """Whether every node sees the same ``root``: each node writes a sentinel there, then each (and the
    driver) lists them. Returns the answer and, when not shared, why."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex[:12]
    step = _remote()["sentinel"]

    def everywhere(what: str) -> dict[str, list[str] | str]:
        refs = [step.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.id, soft=False)).remote(
            str(root), token, what) for n in nodes]
        return dict(ray.get(refs))

    hosts = {n.id: n.host for n in nodes}
    wrote = everywhere("write")
    seen = everywhere("read")
    folder = root / SENTINELS / token
    driver_sees = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    everywhere("clear")
    ids = set(hosts)
    problems = [f"{node_label(n, hosts[n])} cannot write there: {err}" for n, err in wrote.items() if isinstance(err, str)]
    problems += [f"{node_label(n, hosts[n])} cannot list it: {got}" for n, got in seen.items() if isinstance(got, str)]
    problems += [f"{node_label(n, hosts[n])} sees {len(set(got) & ids)} of {len(ids)} nodes' sentinels"
                 for n, got in seen.items() if isinstance(got, list) and not ids <= set(got)]
    if not ids <= set(driver_sees):
        problems.append(f"this machine sees {len(set(driver_sees) & ids)} of {len(ids)} nodes' sentinels")
    return not problems, "; ".join(problems)


# --------------------------------------------------------------------------- what runs on the workers


class RetryableUnitError(ZooSurveyFailure):
    """A unit failed in a way a retry can fix (a dropped connection, a timeout, an I/O error): Ray retries it."""


_RETRYABLE = (ConnectionError, TimeoutError, OSError)


def unit_error(name: str, node: str, host: str, e: BaseException) -> ZooSurveyException:
    """The error a failed unit raises on its worker: one line that names the unit and the node."""
    where = f"{name} on node {node_label(node, host)}"
    if isinstance(e, ZooSurveyException):  # its message already says what to do; keep bad input apart from failures
        err: ZooSurveyException = (ZooSurveyFailure if e.exit_code == ZooSurveyFailure.exit_code else ZooSurveyError)(
            f"{where}: {e}", param=e.params)
    elif isinstance(e, _RETRYABLE):
        err = RetryableUnitError(f"{where}: {type(e).__name__}: {_first_line(e)}")
    else:
        log.exception("%s failed", where)  # the traceback, in that node's Ray worker log
        err = ZooSurveyFailure(f"{where}: {type(e).__name__}: {_first_line(e)} (the traceback is in that node's Ray "
                               "worker log, under /tmp/ray/session_latest/logs)")
    err.node = node  # type: ignore[attr-defined]  # read back by the driver's tally; exceptions pickle their __dict__
    return err


def _here() -> tuple[str, str]:
    import ray

    return ray.get_runtime_context().get_node_id(), socket.gethostname()


def _tell(board: Any, uid: str, node: str) -> None:
    """Tell the progress board this unit started here (fire and forget: the display only)."""
    if board is not None:
        board.started.remote(uid, node)


class _Board:
    """Where each unit last started: workers tell it, the driver reads it for the per-node display."""

    def __init__(self) -> None:
        self.on: dict[str, str] = {}
        self.retried: dict[str, int] = {}  # per node: units that started there again

    def started(self, uid: str, node: str) -> None:
        if uid in self.on:
            self.retried[node] = self.retried.get(node, 0) + 1
        self.on[uid] = node

    def snapshot(self, in_flight: Collection[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Units running per node (of ``in_flight``, the driver's), and retried per node: as much to send as there
        are nodes and units in flight, however many units the run has done."""
        running: dict[str, int] = {}
        for node in (self.on.get(uid) for uid in in_flight):
            if node is not None:
                running[node] = running.get(node, 0) + 1
        return running, self.retried

    def node_of(self, uid: str) -> str | None:
        """Where the unit last started (for the error when Ray gives up on it)."""
        return self.on.get(uid)


def scratch_folder(root: Path | str) -> Path:
    """Where an actor extracts when the cache is not shared: a folder of its node, the same for every run on
    ``root``, so an actor restarted on that node resumes an entry from its complete shards."""
    return Path(tempfile.gettempdir()) / "zoo-survey-ray" / string_digest(str(root))


@dataclass(frozen=True)
class _Extracted:
    done: ExtractDone
    node: str
    host: str
    files: dict[str, bytes]  # the entry's files when it travels back to the driver; empty when the cache is shared
    repaired: tuple[str, ...]
    started: float  # when the unit started on its worker (time.time())


class _ExtractWorker:
    """A long-lived extraction actor: one workspace (so one model at a time, each loaded once, and each
    dataset prepared once) over the shared cache, or over a scratch folder of its node."""

    def __init__(self, root: str, shard_rows: int, options: RunOptions, ship: bool):
        self.node, self.host = _here()
        self.ship = ship
        self.ws = Workspace(FeatureCache(scratch_folder(root) if ship else Path(root), shard_rows), options)

    def run(self, unit: ExtractUnit, uid: str, board: Any) -> _Extracted:
        started = time.time()
        _tell(board, uid, self.node)
        cache = self.ws.source.cache
        before = len(cache.repaired)
        files: dict[str, bytes] = {}
        try:
            done = unit.run(self.ws)
            if self.ship:
                key = self.ws.source.key(self.ws.checkpoint(unit.checkpoint), self.ws.dataset(unit.dataset, unit.fingerprint),
                                         unit.split)
                files = cache.export_entry(key)
                shutil.rmtree(cache.path(key), ignore_errors=True)  # it lives on in the driver's cache
        except Exception as e:
            raise unit_error(unit.name, self.node, self.host, e) from e
        return _Extracted(done, self.node, self.host, files, tuple(cache.repaired[before:]), started)


class _NoImages:
    """A probe task gets each split's indices and labels, not its images: it reads features only."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, i: int) -> Any:
        raise ZooSurveyFailure("a probe task needed images: a cache entry vanished between extraction and probing; "
                               "rerun to extract it again")

    def raw(self, i: int) -> Any:
        return self[i]

    def encoded(self, i: int) -> bytes | None:
        return self[i]


def _without_images(ds: PreparedDataset) -> PreparedDataset:
    return dataclasses.replace(ds, splits={k: dataclasses.replace(s, images=_NoImages()) for k, s in ds.splits.items()})


@dataclass(frozen=True)
class _ProbeContext:
    """What every probe task of a run shares, put in the object store once."""

    token: str
    root: str
    shard_rows: int
    prepared: dict[str, PreparedDataset]  # without images
    resolved: dict[str, ResolvedCheckpoint]
    decoders: dict[tuple[str, str, str], str]  # the driver's FeatureSource.decoders: a task cannot look at images


class _ProbeWorkspace(Workspace):
    """A worker's workspace for probe tasks: the driver's datasets and checkpoints, features from the shared
    cache or, when the driver shipped them, from the object store."""

    def __init__(self, ctx: _ProbeContext, options: RunOptions):
        super().__init__(FeatureCache(Path(ctx.root), ctx.shard_rows), options, ctx.prepared, ctx.resolved)
        self.source.decoders.update(ctx.decoders)
        self.shipped: dict[tuple[str, str], Any] = {}

    def comparison_features(self, comp: Comparison, spec: Any, fingerprint: str) -> Any:
        data = self.shipped.get((comp.name, spec.id))
        return data if data is not None else super().comparison_features(comp, spec, fingerprint)


_PROBE_WS: dict[str, _ProbeWorkspace] = {}  # per worker process: the current run's workspace (features memoised)


def _probe_task(unit: ProbeUnit, uid: str, ctx: _ProbeContext, data: Any, board: Any
                ) -> tuple[str, ResultRow, str, str, tuple[float, float]]:
    """One probe unit on a worker; its row comes back with where it ran in its provenance, and when it ran."""
    started = time.time()
    node, host = _here()
    _tell(board, uid, node)
    try:
        ws = _PROBE_WS.get(ctx.token)
        if ws is None:
            _PROBE_WS.clear()
            ws = _PROBE_WS[ctx.token] = _ProbeWorkspace(ctx, unit.options)
        ws.shipped = {} if data is None else {(unit.comparison.name, unit.dataset.id): data}
        row = unit.run(ws)
    except Exception as e:
        raise unit_error(unit.name, node, host, e) from e
    import ray

    # what Ray gave this task (RayRunner.probe_resources asked for it): {"CPU": 1.0}, or a GPU share and a CPU
    given = {k: float(v) for k, v in sorted(ray.get_runtime_context().get_assigned_resources().items())
             if not k.startswith(("node:", "bundle_group_"))}
    ran_on = {"runner": "ray", "node": node, "host": host, "resources": given}
    return uid, dataclasses.replace(row, provenance={**row.provenance, "ran_on": ran_on}), node, host, (started, time.time())


def _ready(pending: Mapping[Any, Any]) -> list[Any]:
    """The finished refs among ``pending``: waits up to :data:`_POLL_S` for one, then takes every other one done."""
    import ray

    if not pending:
        return []
    ready, rest = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
    if ready and rest:
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
        ready += more
    return ready


@functools.cache
def _remote() -> dict[str, Any]:
    import ray

    return {"sentinel": ray.remote(num_cpus=0)(_sentinel_step), "probe": ray.remote(_probe_task),
            "extract": ray.remote(_ExtractWorker), "board": ray.remote(_Board)}


# --------------------------------------------------------------------------- the driver


class RayRunner:
    """Runs units on a Ray cluster (see the module docstring); the same interface as ``LocalRunner``.

    >>> runner = RayRunner.factory(cluster, RayOptions("auto"))   # doctest: +SKIP
    >>> run_survey(plans, datasets, cache, store_path, options, runner_factory=runner)   # doctest: +SKIP
    """

    def __init__(self, ws: Workspace, hooks: Hooks, cluster: RayCluster, options: RayOptions):
        check_device(ws.options.extract.device)
        self.ws, self.hooks, self.cluster, self.options = ws, hooks, cluster, options
        self.cache = ws.source.cache
        self.root = self.cache.root.absolute()
        on_gpu = ws.options.extract.device.startswith("cuda")
        self.gpus = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if on_gpu else 0.0)
        self.where: dict[str, NodeTally] = {}  # what ran on which node, as results arrive
        self.notes: list[str] = []
        self._hosts = {n.id: n.host for n in cluster.nodes}
        self._shared: bool | None = None
        self._board_actor: Any = None
        self._probe_ctx: Any = None  # the run's _ProbeContext in the object store, once a probe unit has gone out
        self._uids = itertools.count()

    @classmethod
    def factory(cls, cluster: RayCluster, options: RayOptions) -> RunnerFactory:
        """What ``run_survey(runner_factory=...)`` and ``extract_all(runner_factory=...)`` take."""
        return functools.partial(cls, cluster=cluster, options=options)

    # ---- shared state

    def shared(self) -> bool:
        """Whether workers write and read the cache themselves (decided once per run, see the module docstring)."""
        if self._shared is None:
            if self.options.cache == "auto":
                self._shared, why = cache_is_shared(self.root, alive_nodes())
                if not self._shared:
                    self.notes.append(f"the feature cache {self.root} is not shared by every node ({why}): finished "
                                        "entries travel back through Ray's object store and this machine writes them")
            else:
                self._shared = self.options.cache == "shared"
        return self._shared

    def _board(self) -> Any:
        if self._board_actor is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # On the driver's node, which the run cannot outlive (a soft affinity may place it elsewhere).
            here = NodeAffinitySchedulingStrategy(self.cluster.driver_node, soft=False)
            self._board_actor = _remote()["board"].options(num_cpus=0, scheduling_strategy=here,
                                                           max_restarts=self.options.retries).remote()
        return self._board_actor

    def _tally(self, node: str, host: str | None = None) -> NodeTally:
        if node not in self.where:
            if host is None and node not in self._hosts:
                self._hosts.update({n.id: n.host for n in alive_nodes()})
            self.where[node] = NodeTally(host or self._hosts.get(node, "?"))
        return self.where[node]

    def _show(self, in_flight: Collection[str]) -> None:
        """Refresh running and retried per node from the board, and hand the tallies to the display."""
        import ray

        try:
            running, retried = ray.get(self._board().snapshot.remote(list(in_flight)), timeout=5)
        except Exception:  # the display only: a slow or restarting board skips a refresh
            return
        for t in self.where.values():
            t.running = t.retried = 0
        for node, n in running.items():
            self._tally(node).running = n
        for node, n in retried.items():
            self._tally(node).retried = n
        self.hooks.nodes(self.where)

    def _started_on(self, uid: str) -> str | None:
        """The node where the unit last started, as the board knows it (None if it cannot say in time)."""
        import ray

        try:
            return ray.get(self._board().node_of.remote(uid), timeout=5)
        except Exception:  # the error message only: a lost board leaves the node out
            return None

    def _slots(self, cpus: float, gpus: float) -> int:
        """How many workers of this size the cluster's nodes hold at once."""
        nodes = alive_nodes()
        fits = [min(int(n.cpus // cpus + 1e-9), int(n.gpus // gpus + 1e-9) if gpus else 1 << 30) for n in nodes]
        return sum(fits)

    def _fail(self, e: Exception, unit_name: str, node: str | None) -> ZooSurveyException:
        """The one-line error for a unit that failed for good (its own error, or Ray's after the retries)."""
        import ray

        cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) else e
        if isinstance(cause, ZooSurveyException):
            self._tally(getattr(cause, "node", node) or "?").failed += 1
            return cause
        where = f" on node {node_label(node, self._hosts.get(node, '?'))}" if node else ""
        if node:
            self._tally(node).failed += 1
        return ZooSurveyFailure(
            f"{unit_name}{where}: Ray gave up after {self.options.retries} retries ({type(cause).__name__}: "
            f"{_first_line(cause)}); rerun the same command to resume from what finished"
        )

    # ---- extraction

    def _key(self, unit: ExtractUnit):
        return self.ws.source.key(self.ws.checkpoint(unit.checkpoint), self.ws.dataset(unit.dataset, unit.fingerprint),
                                  unit.split)

    def extract(self, units: Sequence[ExtractUnit]) -> Iterator[tuple[ExtractUnit, ExtractDone]]:
        """Each checkpoint's units on an actor of its own (see :meth:`pipeline`), with no probe beside them."""
        for unit, done, _ in self.pipeline(units, lambda: None):
            yield unit, done  # type: ignore[misc]

    def probe(self, units: Iterable[ProbeUnit]) -> Iterator[tuple[ProbeUnit, ResultRow]]:
        """Each unit as a task (see :meth:`pipeline`), taken from ``units`` as the window has room."""
        todo = iter(units)
        for unit, row, _ in self.pipeline((), lambda: next(todo, None)):
            yield unit, row  # type: ignore[misc]

    def pipeline(self, units: Sequence[ExtractUnit], next_probe: Callable[[], ProbeUnit | None]) -> Iterator[Finished]:
        """Extraction and probes together, in one loop over what Ray returns.

        Extraction: each checkpoint's units on an actor of its own (one model load), costliest first;
        Ray places each actor when a node has room (a finished one is killed at once), restarts it, and
        retries its calls. Probes: each unit a task, asked of ``next_probe`` (the driver gives one only once
        its features are cached) while fewer than a window of groups is in flight (claims held, features
        shipped), so probe tasks run while later actors still extract; each group's features go to the
        object store once when the cache is not shared."""
        import ray

        todo = []
        for u in units:
            key = self._key(u)
            if self.cache.get(key) is None:
                todo.append(u)
            else:  # a cached entry schedules nothing
                now = time.time()
                yield u, ExtractDone(key.digest, 0, ()), (now, now)
        ship = not self.shared() if todo else False
        board = self._board() if todo else None
        groups: dict[str, list[ExtractUnit]] = {}
        for u in todo:
            groups.setdefault(u.checkpoint.id, []).append(u)
        cpus = self.options.cpus_per_actor
        if todo and self._slots(cpus, self.gpus) < 1:
            raise ZooSurveyError(
                f"no node of the Ray cluster has {cpus:g} CPU(s) and {self.gpus:g} GPU(s) for an extraction actor; "
                "lower 'ray_cpus_per_actor' / 'ray_gpus_per_actor', or add nodes", param=("ray_cpus_per_actor", "ray_gpus_per_actor")
            )
        worker = _remote()["extract"].options(num_cpus=cpus, num_gpus=self.gpus, max_restarts=self.options.retries,
                                             max_task_retries=self.options.retries, scheduling_strategy="SPREAD")
        actors: dict[int, Any] = {}  # group -> its actor, until the group is done
        left: dict[int, int] = {}
        pending: dict[Any, tuple[int, ExtractUnit, str]] = {}
        again: list[tuple[float, int, ExtractUnit, str]] = []  # (when, group, unit, uid): asked again once restarted
        asked: dict[str, int] = {}
        probing: dict[Any, tuple[ProbeUnit, str]] = {}
        shipped: dict[str, Any] = {}  # group -> its features in the object store, while the group is in flight
        task: Any = None
        window = 0
        waiting: ProbeUnit | None = None

        def submit(g: int, u: ExtractUnit, uid: str) -> None:
            asked[uid] = asked.get(uid, 0) + 1
            pending[actors[g].run.options(retry_exceptions=[RetryableUnitError]).remote(u, uid, board)] = (g, u, uid)

        def top_up() -> None:
            """Submit probe units while fewer than ``window`` groups are in flight."""
            nonlocal task, window, waiting, ship
            flying = {u.group for u, _ in probing.values()}
            while True:
                waiting = waiting or next_probe()
                if waiting is None:
                    return
                if task is None:  # the first probe unit: what every task shares, once
                    task, window = self._probe_task()
                    ship = not self.shared()
                if waiting.group not in flying and len(flying) >= window:
                    return
                u, waiting = waiting, None
                if ship and u.group not in shipped:
                    shipped[u.group] = ray.put(self.ws.comparison_features(u.comparison, u.dataset, u.fingerprint))
                uid = f"p{next(self._uids)}"
                probing[task.remote(u, uid, self._probe_ctx, shipped.get(u.group), self._board())] = (u, uid)
                flying.add(u.group)

        # The costliest checkpoints first, so the last actor to finish has a small one.
        ordered = sorted(groups.values(), key=lambda g: -(g[0].checkpoint.gmacs or 1.0) * len(g))
        try:
            for g, group in enumerate(ordered):
                actors[g], left[g] = worker.remote(str(self.root), self.cache.shard_rows, self.ws.options, ship), len(group)
                for i, u in enumerate(group):
                    submit(g, u, f"x{g}.{i}")
            while True:
                top_up()
                if not (pending or again or probing):
                    return
                now = time.monotonic()
                for item in [a for a in again if a[0] <= now]:
                    again.remove(item)
                    submit(*item[1:])
                ready = _ready({**pending, **probing})
                for ref in ready:
                    if ref in probing:
                        punit, uid = probing.pop(ref)
                        try:
                            _, row, node, host, span = ray.get(ref)
                        except Exception as e:
                            raise self._fail(e, punit.name, self._started_on(uid)) from None
                        self._tally(node, host).probe += 1
                        yield punit, row, span
                        continue
                    g, unit, uid = pending.pop(ref)
                    try:
                        got: _Extracted = ray.get(ref)
                    except ray.exceptions.ActorUnavailableError as e:
                        # Its worker or node died and Ray restarts the actor (max_restarts); until Ray has noticed, each
                        # call fails at once. A unit is idempotent: ask again shortly, for as long as the actor lives.
                        if asked[uid] > _UNAVAILABLE_TRIES:
                            raise self._fail(e, unit.name, self._started_on(uid)) from None
                        again.append((now + 1.0, g, unit, uid))
                        continue
                    except Exception as e:
                        raise self._fail(e, unit.name, self._started_on(uid)) from None
                    left[g] -= 1
                    if left[g] == 0:
                        ray.kill(actors.pop(g))  # free its resources now: the next group's actor (or a restarted one) needs them
                    yield unit, self._extracted(unit, got), (got.started, time.time())
                if not ready and not pending and not probing:
                    time.sleep(_POLL_S)
                flying = {u.group for u, _ in probing.values()}
                shipped = {g: data for g, data in shipped.items() if g in flying}
                self._show({uid for _, _, uid in pending.values()} | {a[3] for a in again} | {uid for _, uid in probing.values()})
        finally:
            for a in actors.values():
                ray.kill(a)
            for ref in probing:
                ray.cancel(ref)
            self._show(())

    def _extracted(self, unit: ExtractUnit, got: _Extracted) -> ExtractDone:
        key = self._key(unit)
        if got.done.digest != key.digest:
            raise ZooSurveyFailure(
                f"{unit.name} on node {node_label(got.node, got.host)} made cache entry {got.done.digest[:20]}, but this "
                f"machine expects {key.digest[:20]}: that node resolves the checkpoint differently (weights revision or "
                "preprocessing); give every node the same files"
            )
        if got.files:
            self.cache.import_entry(key, got.files)
        self._tally(got.node, got.host).extract += 1
        repaired = tuple(f"{node_label(got.node, got.host)}: {n}" for n in got.repaired)
        return dataclasses.replace(got.done, notes=got.done.notes + repaired)

    # ---- probes

    def probe_resources(self) -> dict[str, float]:
        """What a probe task asks Ray for: on a CUDA run a share of a GPU (``gpus_per_probe``) and a CPU to drive
        it; otherwise one CPU."""
        on_gpu = self.ws.options.extract.device.startswith("cuda")
        share = self.options.gpus_per_probe if self.options.gpus_per_probe is not None else GPUS_PER_PROBE
        return {"num_cpus": 1.0, "num_gpus": share if on_gpu else 0.0}

    def _probe_task(self) -> tuple[Any, int]:
        """The probe task, with its resources, and how many groups may be in flight; puts the run's probe context
        (each dataset's splits without images, the resolved checkpoints) in the object store once."""
        import ray

        res = self.probe_resources()
        if self._slots(res["num_cpus"], res["num_gpus"]) < 1:
            raise ZooSurveyError(
                f"no node of the Ray cluster has {res['num_cpus']:g} CPU(s) and {res['num_gpus']:g} GPU(s) for a probe "
                "task; lower 'ray_gpus_per_probe', or add nodes", param="ray_gpus_per_probe")
        decoders = {}  # what the tasks' keys need from the images, looked at here (memoised: extraction did)
        for ds in self.ws.prepared.values():
            decoders.update({(ds.fingerprint, s, ds.splits[s].indices_digest()): self.ws.source.decoder(ds, s) for s in ds.splits})
        self._probe_ctx = ray.put(_ProbeContext(uuid.uuid4().hex, str(self.root), self.cache.shard_rows,
                                                {k: _without_images(v) for k, v in self.ws.prepared.items()},
                                                dict(self.ws.resolved), decoders))
        task = _remote()["probe"].options(**res, max_retries=self.options.retries, retry_exceptions=[RetryableUnitError])
        return task, max(2, 2 * self._slots(res["num_cpus"], res["num_gpus"]))  # groups in flight
