"""Survey: run plans over datasets: extract through the cache, probe, and write rows to the store.

``run_survey`` is what ``zoo-survey run`` calls; tests call it too. Checkpoints are
looped outside datasets, so each model is loaded once; probes then read only cached
features: an ensemble concatenates its members' weighted matrices, or averages their probes' outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .cache import FeatureCache
from .checkpoints import ResolvedCheckpoint, resolve
from .datasets import PreparedDataset, prepare
from .errors import ZooSurveyError, gather
from .extract import ExtractOptions
from .features import FeatureSource
from .plan import Comparison, Plan
from .probes import KNNProbe, LinearProbe, NCMProbe, ProbeResult
from .probes.linear import classification_metrics
from .probes.logme import logme
from .probes.fewshot import DEFAULT_SEEDS, DEFAULT_SHOTS, FEWSHOT_GRID, sample_shots
from .registry import CheckpointSpec, DatasetSpec
from .store import ResultRow, ResultStore, row_key

PROBES = ("linear", "knn", "ncm", "fewshot", "logme")


def make_probe(name: str, options: RunOptions, standardize: bool = True):
    """A fresh estimator for probe ``name`` (``--probes``); ``standardize=False`` for pre-weighted ensemble blocks."""
    if name == "linear":
        return LinearProbe(grid=options.grid, device=options.extract.device, standardize=standardize)
    if name == "knn":
        return KNNProbe(device=options.extract.device)
    if name == "fewshot":
        return LinearProbe(grid=options.grid or FEWSHOT_GRID, search="full", refit=False, device=options.extract.device,
                           standardize=standardize)
    return NCMProbe()


@dataclass(frozen=True)
class RunOptions:
    probes: tuple[str, ...] = ("linear",)
    image_size: int | None = None
    max_train: int | None = None
    max_test: int | None = None
    grid: tuple[float, ...] | None = None
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: int = DEFAULT_SEEDS
    offline: bool = False
    extract: ExtractOptions = field(default_factory=ExtractOptions)


@dataclass
class RunReport:
    """What a run did: rows written and skipped, forward batches run."""

    rows: list[ResultRow] = field(default_factory=list)
    written: int = 0
    skipped: int = 0
    forward_batches: int = 0
    notes: list[str] = field(default_factory=list)
    store: Path | None = None


class Hooks:
    """Progress callbacks; the CLI passes rich progress bars, tests pass nothing."""

    def stage(self, label: str, total: int) -> Callable[[int], None]:
        return lambda done: None


def run_survey(
    plans: Sequence[Plan],
    datasets: Sequence[DatasetSpec],
    cache: FeatureCache,
    store_path: Path,
    options: RunOptions,
    hooks: Hooks | None = None,
) -> RunReport:
    """Extract, probe and store every (comparison, dataset, probe) of ``plans`` in ``store_path``.

    Datasets are loaded and every checkpoint resolved before anything is written, so
    bad input (a missing weights file, an unknown split) stops the run with nothing done.

    >>> run_survey([plan_family(fam, 2)], [reg.dataset("digits")], cache, out / "results.sqlite", RunOptions())  # doctest: +SKIP
    """
    hooks = hooks or Hooks()
    for p in options.probes:
        if p not in PROBES:
            from .errors import unknown

            raise unknown("probe", p, PROBES)
    report = RunReport()
    checkpoints = list({spec.id: spec for plan in plans for spec in plan.checkpoints}.values())
    prepared, resolved, source = extract_all(checkpoints, datasets, cache, options, hooks, report)
    store = ResultStore(store_path)
    report.store = store.path

    # One unit of work: a comparison on a dataset, all its rows (they share the features). Two runs
    # sharing this store each take a unit's lock; a unit another run holds is left for the end,
    # when it is usually stored. The locks only save work: rows are INSERT OR IGNORE either way.
    units = [(plan, ds, comp) for plan in plans for ds in prepared.values() for comp in plan.comparisons]
    busy: list = []
    for wait, items in ((False, [(*u, None, None) for u in units]), (True, busy)):
        for plan, ds, comp, todo, unit in items:
            if todo is None:
                rows = [(s, row_key(_row_payload(comp, ds, *s, options, resolved))) for s in _settings(options, comp)]
                unit = row_key({"unit": sorted(k for _, k in rows)})  # the same for every run of this unit
                todo = [(s, k) for s, k in rows if not store.has(k)]
                report.skipped += len(rows) - len(todo)
            if not todo:
                continue
            with store.claim(unit, wait=wait) as mine:
                if not mine:
                    busy.append((plan, ds, comp, todo, unit))
                    continue
                data = None  # the comparison's features, read from the cache on first need
                for (probe, setting, seed), key in todo:
                    if store.has(key):  # the other run wrote it while we waited
                        report.skipped += 1
                        continue
                    data = data or _comparison_features(comp, ds, resolved, source)
                    tick = hooks.stage(f"{probe}{' ' + setting if setting else ''} probe · {comp.name} · {ds.spec.id}", 1)
                    row = _probe_row(key, plan, comp, ds, probe, setting, seed, options, resolved, data)
                    tick(1)
                    if store.put(row):
                        report.written += 1
                    else:
                        report.skipped += 1  # written meanwhile by a run that took no lock (e.g. on NFS)
    report.forward_batches = source.forward_batches
    keys = {
        row_key(_row_payload(c, ds, p, setting, seed, options, resolved))
        for plan in plans
        for ds in prepared.values()
        for c in plan.comparisons
        for p, setting, seed in _settings(options, c)
    }
    report.rows = [r for r in store.rows() if r.row_key in keys]
    return report


def extract_all(
    checkpoints: Sequence[CheckpointSpec],
    datasets: Sequence[DatasetSpec],
    cache: FeatureCache,
    options: RunOptions,
    hooks: Hooks | None = None,
    report: RunReport | None = None,
) -> tuple[dict[str, PreparedDataset], dict[str, ResolvedCheckpoint], FeatureSource]:
    """Fill the cache with every checkpoint's features on every split of ``datasets``.

    Datasets load and checkpoints resolve first (cheap: files and configs), and the cache
    must be writable, so bad input fails before any forward pass. ``zoo-survey extract``
    is this alone.
    """
    hooks = hooks or Hooks()
    report = report if report is not None else RunReport()
    prepared, resolved = prepare_inputs(checkpoints, datasets, options, report)
    cache.check_writable()
    source = FeatureSource(cache, options.extract, on_progress=_progress_adapter(hooks))
    for ckpt in resolved.values():  # checkpoints outside datasets: each model loads once
        for ds in prepared.values():
            for split in ("train", "val", "test"):
                source.get(ckpt, ds, split)
    report.forward_batches = source.forward_batches
    report.notes += source.notes + cache.repaired
    return prepared, resolved, source


def prepare_inputs(
    checkpoints: Sequence[CheckpointSpec], datasets: Sequence[DatasetSpec], options: RunOptions, report: RunReport | None = None
) -> tuple[dict[str, PreparedDataset], dict[str, ResolvedCheckpoint]]:
    """Load every dataset and resolve every checkpoint (downloading unless offline).

    Every input is tried and all problems are raised together (:func:`errors.gather`):
    offline, that is one message naming everything missing from the cache.
    """
    prepared: dict[str, PreparedDataset] = {}
    resolved: dict[str, ResolvedCheckpoint] = {}
    problems: list[ZooSurveyError] = []
    for spec in datasets:
        try:
            prepared[spec.id] = ds = prepare(spec, max_train=options.max_train, max_test=options.max_test, offline=options.offline)
        except ZooSurveyError as e:
            problems.append(e)
            continue
        if report is not None:
            report.notes += [f"{spec.id}: {n}" for n in ds.notes]
    for c in checkpoints:
        try:
            resolved[c.id] = resolve(c, offline=options.offline, image_size=options.image_size)
        except ZooSurveyError as e:
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
    from .datasets import hub_snapshot
    from .registry import HFSource

    prepared, resolved = prepare_inputs(checkpoints, datasets, RunOptions(offline=False))
    out = []
    for c in checkpoints:
        r = resolved[c.id]
        files = [r.weights] + [p for p in [r.weights.parent / "config.json"] if p.is_file() and p != r.weights]
        out.append(Fetched("checkpoint", c.id, c.source.type, r.revision, r.weights, sum(f.stat().st_size for f in files)))
    for d in datasets:
        ds, folder = prepared[d.id], None
        if isinstance(d.source, HFSource):
            folder, _ = hub_snapshot(d, offline=True)
        elif getattr(d.source, "path", None) is not None and Path(d.source.path).is_dir():
            folder = Path(d.source.path)
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


def _settings(options: RunOptions, comp: Comparison) -> list[tuple[str, str, int | None]]:
    """(probe, setting, seed) for every row a comparison gets: one per full-data probe, shots x seeds for few-shot."""
    out: list[tuple[str, str, int | None]] = []
    for p in options.probes:
        if p == "logme" and comp.combine == "average":
            continue  # a score of one feature matrix: output averaging has none
        if p == "fewshot":
            out += [(p, f"{k}-shot", seed) for k in options.shots for seed in range(options.seeds)]
        else:
            out.append((p, "", None))
    return out


def _row_payload(comp: Comparison, ds: PreparedDataset, probe: str, setting: str, seed: int | None, options: RunOptions, resolved) -> dict[str, Any]:
    return {
        "setting": setting,
        "seed": seed,
        "members": [resolved[m.id].key() for m in comp.members],
        "combine": comp.combine,
        "extract": options.extract.key(),
        "dataset": ds.spec.id,
        "fingerprint": ds.fingerprint,
        "splits": {k: [len(s), s.indices_digest()] for k, s in ds.splits.items()},
        "probe": probe,
        "grid": list(options.grid) if options.grid else "default",
    }


def weight_blocks(blocks: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate members' features with equal weight per member.

    Each member's block is standardized with its train statistics and scaled by
    1/sqrt(width), so every block has the same total variance (1) and a wider member
    does not dominate. A single model's block is returned as it is (its probe standardizes).
    """
    if len(blocks["train"]) == 1:
        return {s: b[0] for s, b in blocks.items()}
    out: dict[str, list[np.ndarray]] = {s: [] for s in blocks}
    for i, train in enumerate(blocks["train"]):
        mean, std = train.mean(0), train.std(0)
        std[std < 1e-6] = 1.0
        scale = 1.0 / np.sqrt(train.shape[1])
        for s in blocks:
            out[s].append(((blocks[s][i] - mean) / std * scale).astype(np.float32))
    return {s: np.concatenate(b, axis=1) for s, b in out.items()}


@dataclass(frozen=True)
class _Data:
    blocks: dict[str, list[np.ndarray]]  # split -> one matrix per member
    y: dict[str, np.ndarray]
    extract_seconds: float
    gflops: float | None  # counted at the run's resolution (None when an entry predates counting)


def _comparison_features(comp: Comparison, ds: PreparedDataset, resolved, source: FeatureSource) -> _Data:
    """The comparison's train / val / test matrices, one per member, from the cache."""
    mats: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    labels: dict[str, np.ndarray] = {}
    seconds = 0.0
    gflops: float | None = 0.0
    for m in comp.members:
        for split in mats:
            f = source.get(resolved[m.id], ds, split)
            if split == "train":
                counted = f.manifest.get("gflops")
                gflops = None if counted is None or gflops is None else gflops + counted
            if split in labels and not np.array_equal(labels[split], f.labels):
                raise ZooSurveyError(
                    f"ensemble {comp.name!r}: members disagree on the {split} samples of {ds.spec.id!r}; "
                    "they must use the same dataset and split"
                )
            labels[split] = f.labels
            mats[split].append(f.features)
            seconds += float(f.manifest.get("extract_seconds", 0.0))
    return _Data(mats, labels, seconds, gflops)


def _fit_score(probe: str, comp: Comparison, blocks: dict[str, list[np.ndarray]], y, options: RunOptions):
    """Fit and score ``probe`` on a comparison: (result, score, feature dim)."""
    if probe == "logme":  # a score from train+val alone: no training, no test
        X = weight_blocks(blocks)
        return ProbeResult(None, None, None, {}), logme(np.concatenate([X["train"], X["val"]]),
                                                        np.concatenate([y["train"], y["val"]])), X["train"].shape[1]
    if comp.combine == "average":  # output averaging: one probe per member, probabilities averaged
        probas, hps, notes = [], [], []
        for i in range(len(comp.members)):
            est = make_probe(probe, options).fit(blocks["train"][i], y["train"], blocks["val"][i], y["val"])
            probas.append(est.predict_proba(blocks["test"][i]))
            hps.append(est.score(blocks["test"][i], y["test"]).hparams)
            notes += list(getattr(est, "warnings_", ()))
        m = classification_metrics(np.mean(probas, axis=0), y["test"], est.classes_)
        return ProbeResult(m["top1"], m["mean_per_class"], m["top5"], {"members": hps}, tuple(notes)), None, sum(
            b.shape[1] for b in blocks["train"])
    X = weight_blocks(blocks)
    est = make_probe(probe, options, standardize=len(comp.members) == 1).fit(X["train"], y["train"], X["val"], y["val"])
    return est.score(X["test"], y["test"]), None, X["train"].shape[1]


def _probe_row(key, plan, comp, ds, probe, setting, seed, options, resolved, data: _Data) -> ResultRow:
    blocks, y = dict(data.blocks), dict(data.y)
    notes: list[str] = []
    if probe == "fewshot":  # sample first: block weights then come from the k-shot examples alone
        idx, notes = sample_shots(y["train"], int(setting.split("-")[0]), seed)
        blocks["train"], y["train"] = [b[idx] for b in blocks["train"]], y["train"][idx]
    res, score, dim = _fit_score(probe, comp, blocks, y, options)
    return ResultRow(
        row_key=key,
        family=plan.family,
        comparison=comp.name,
        role=comp.role,
        members=[m.id for m in comp.members],
        combine=comp.combine,
        dataset=ds.spec.id,
        probe=probe,
        setting=setting,
        seed=seed,
        top1=res.top1,
        mean_per_class=res.mean_per_class,
        top5=res.top5,
        score=score,
        hparams=res.hparams,
        params_m=comp.params_m,
        gflops=round(data.gflops, 4) if data.gflops is not None else comp.gflops,
        feature_dim=int(dim),
        n_train=len(y["train"]),
        n_val=len(y["val"]),
        n_test=len(y["test"]),
        extract_seconds=round(data.extract_seconds, 3),
        warnings=list(res.warnings) + notes,
        provenance={
            "zoo_survey": __version__,
            "strategy": plan.strategy,
            "revisions": {m.id: resolved[m.id].revision for m in comp.members},
            "preprocessing": {m.id: resolved[m.id].key()["preprocessing"] for m in comp.members},
            "gflops": "counted at the run's resolution" if data.gflops is not None else "registry, at native resolution",
            "pretrain": {m.id: m.pretrain.model_dump() for m in comp.members},
            "dataset_fingerprint": ds.fingerprint,
            "dataset_revision": ds.revision,
            "dataset_notes": list(ds.notes),
            "extract": options.extract.key(),
        },
    )
