"""Survey: check every input, then extract through the cache, probe, and write rows to the store.

``run_survey`` is what ``zoo-survey run`` calls; tests call it too. It builds the units
of work (:mod:`.units`) and hands them to a runner (:mod:`.runner`), which only executes them:
extraction units in order, checkpoints outermost so each model loads once, and each comparison's
probe units, which read only cached features, as soon as its members' features are cached
(pipelined: they run while later checkpoints extract). The driver (:mod:`.driver`) alone claims, skips, writes the
results store, counts and shows progress, the same for every runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.datasets import PreparedDataset, prepare
from ..digests import remembered_hashes
from ..errors import ZooSurveyError, ZooSurveyException, gather
from ..features.cache import HASHES_FILE, FeatureCache
from ..results.store import ResultStore
from ..zoo.checkpoints import ResolvedCheckpoint, resolve
from ..zoo.registry import CheckpointSpec, DatasetSpec
from . import driver
from .options import RunOptions
from .plan import Plan
from .runner import Hooks, LocalRunner, Runner, RunnerFactory, RunReport
from .units import Workspace, extract_units, probe_units, similarity_units


def run_survey(
    plans: Sequence[Plan],
    datasets: Sequence[DatasetSpec],
    cache: FeatureCache,
    store_path: Path,
    options: RunOptions,
    hooks: Hooks | None = None,
    runner_factory: RunnerFactory | None = None,
) -> RunReport:
    """Extract, probe and store every (comparison, dataset, probe, setting) of ``plans`` in ``store_path``.

    Datasets are loaded and every checkpoint resolved before anything is written, so
    bad input (a missing weights file, an unknown split) stops the run with nothing done.
    ``runner_factory`` says where units run: :class:`LocalRunner` (the default, this process)
    or ``RayRunner.factory(...)`` (:mod:`.ray_runner`, a Ray cluster); the rows are the same.

    >>> run_survey([plan_family(fam)], [reg.dataset("digits")], cache, out / "results.sqlite", resolve_options())  # doctest: +SKIP
    """
    report = RunReport()
    hooks = hooks or Hooks()
    checkpoints = list({spec.id: spec for plan in plans for spec in plan.checkpoints}.values())
    runner = _start(checkpoints, datasets, cache, options, hooks, report, runner_factory)
    store = ResultStore(store_path)
    report.store = store.path
    units = probe_units(plans, runner.ws.prepared, runner.ws.resolved, options)
    driver.survey(runner, extract_units(checkpoints, runner.ws.prepared), units, store, hooks, report)
    for sim in similarity_units(plans, runner.ws.prepared, runner.ws.resolved, options):
        if not all(store.has_similarity(key) for _, _, key in sim.pairs):  # cheap: test features, on the driver
            store.put_similarity(sim.run(runner.ws))
    report.notes += [n for n in cache.repaired if n not in report.notes]  # entries found damaged while probing
    keys = {u.row_key for u in units}
    report.rows = [r for r in store.rows() if r.row_key in keys]
    return report


def extract_all(
    checkpoints: Sequence[CheckpointSpec],
    datasets: Sequence[DatasetSpec],
    cache: FeatureCache,
    options: RunOptions,
    hooks: Hooks | None = None,
    report: RunReport | None = None,
    runner_factory: RunnerFactory | None = None,
) -> Runner:
    """Fill the cache with every checkpoint's features on every split of ``datasets``; returns the runner.

    Datasets load and checkpoints resolve first (cheap: files and configs), and the cache
    must be writable, so bad input fails before any forward pass and before a runner
    schedules any unit. ``zoo-survey extract`` is this alone.
    """
    hooks = hooks or Hooks()
    report = report if report is not None else RunReport()
    runner = _start(checkpoints, datasets, cache, options, hooks, report, runner_factory)
    driver.extract(runner, extract_units(checkpoints, runner.ws.prepared), hooks, report)
    report.notes += cache.repaired
    return runner


def _start(checkpoints: Sequence[CheckpointSpec], datasets: Sequence[DatasetSpec], cache: FeatureCache, options: RunOptions,
           hooks: Hooks, report: RunReport, runner_factory: RunnerFactory | None) -> Runner:
    """Check every input (nothing is written or scheduled before), then make the runner."""
    check_heavy(checkpoints, options)
    with remembered_hashes(cache.root / HASHES_FILE):  # a local dataset's files are hashed once, not every run
        prepared, resolved = prepare_inputs(checkpoints, datasets, options, report)
        cache.check_writable()  # inside: a first run's hashes and metadata are remembered once the folder exists
    return (runner_factory or LocalRunner)(Workspace(cache, options, prepared, resolved, _progress_adapter(hooks)), hooks)


def check_heavy(checkpoints: Sequence[CheckpointSpec], options: RunOptions) -> None:
    """A CPU run refuses multi-GB checkpoints (ViT-g, SigLIP so400m) unless ``options.allow_heavy``: one line naming them."""
    heavy = [c for c in checkpoints if c.heavy]
    if heavy and options.extract.device == "cpu" and not options.allow_heavy:
        named = ", ".join(f"{c.id} ({c.params_m:,.0f} M params, about {c.download_gb:.1f} GB)" for c in heavy)
        raise ZooSurveyError(
            f"{len(heavy)} checkpoint(s) too heavy for a CPU run: {named}; run on a GPU (device='cuda'), leave them out "
            "('against' / 'members', 'checkpoints', or a smaller 'ensemble'), or pass allow_heavy=True",
            param=("device", "against", "members", "checkpoints", "ensemble", "allow_heavy"),
        )


def prepare_inputs(
    checkpoints: Sequence[CheckpointSpec], datasets: Sequence[DatasetSpec], options: RunOptions, report: RunReport | None = None
) -> tuple[dict[str, PreparedDataset], dict[str, ResolvedCheckpoint]]:
    """Load every dataset and resolve every checkpoint (downloading unless offline).

    Every input is tried and all problems are raised together (:func:`errors.gather`):
    offline, that is one message naming everything missing from the cache.
    """
    prepared: dict[str, PreparedDataset] = {}
    resolved: dict[str, ResolvedCheckpoint] = {}
    problems: list[ZooSurveyException] = []
    for spec in datasets:
        try:
            prepared[spec.id] = ds = prepare(spec, max_train=options.max_train, max_test=options.max_test, offline=options.offline)
        except ZooSurveyException as e:
            problems.append(e)
            continue
        if report is not None:
            report.notes += [f"{spec.id}: {n}" for n in ds.notes]
    for c in checkpoints:
        try:
            resolved[c.id] = resolve(c, offline=options.offline, image_size=options.image_size)
        except ZooSurveyException as e:
            problems.append(e)
    if problems:
        raise gather(problems)
    return prepared, resolved


@dataclass(frozen=True)
class Fetched:
    """One input ``zoo-survey prefetch`` made local: what it is, its revision, where, how big."""

    kind: str  # "checkpoint" or "dataset"
    id: str
    source: str
    revision: str
    path: Path | None
    bytes: int


def prefetch(checkpoints: Sequence[CheckpointSpec], datasets: Sequence[DatasetSpec]) -> list[Fetched]:
    """Download every checkpoint and dataset a run over these would need into the local caches.

    Hub files land in the Hugging Face hub cache (``HF_HUB_CACHE``); copy it to a machine
    without internet and run there with ``--offline``. Each dataset is also loaded once,
    so a wrong split or column name shows up here, not on the offline machine.
    """
    prepared, resolved = prepare_inputs(checkpoints, datasets, RunOptions(offline=False))
    out = []
    for c in checkpoints:
        r = resolved[c.id]
        files = [r.weights] + [p for p in [r.weights.parent / "config.json"] if p.is_file() and p != r.weights]
        out.append(Fetched("checkpoint", c.id, c.source.type, r.revision, r.weights, sum(f.stat().st_size for f in files)))
    for d in datasets:
        ds, folder = prepared[d.id], d.source.local_folder(d)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder else 0
        out.append(Fetched("dataset", d.id, d.source.type, ds.revision, folder, size))
    return out


def _progress_adapter(hooks: Hooks) -> Callable[[str, int, int], None]:
    bars: dict[str, Callable[[int], None]] = {}

    def on_progress(label: str, done: int, total: int) -> None:
        if label not in bars:
            bars[label] = hooks.stage(f"extract · {label}", total)
        bars[label](done)

    return on_progress
