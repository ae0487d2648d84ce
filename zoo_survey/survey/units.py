"""Units of work: frozen specs with pure ``run`` functions. Runners only decide where they execute.

- :class:`ExtractUnit`: (checkpoint, dataset, split, options) -> one feature-cache entry.
- :class:`ProbeUnit`: (comparison, dataset, probe, setting, seed) -> one result row.
- :class:`SimilarityUnit`: (a plan's baseline and members, dataset) -> linear CKA of every pair.

A unit holds specs, not loaded data, so it can run in this process or on another
machine: :class:`Workspace` rebuilds (and memoises) what it needs there, prepares the
dataset and resolves the checkpoints, and checks that the data is the data the run
planned (the dataset fingerprint travels with the unit). Each cache key belongs to
exactly one extraction unit, and cache writes are atomic, so running a unit twice
(a retry) writes the same files.

>>> units = probe_units(plans, prepared, resolved, options)      # doctest: +SKIP
>>> row = units[0].run(Workspace(cache, options))                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..data.datasets import PreparedDataset, prepare
from ..digests import arrays_digest, remembered_hashes, string_digest
from ..errors import ZooSurveyError, ZooSurveyFailure
from ..features.cache import HASHES_FILE, FeatureCache
from ..features.source import FeatureSource
from ..probes import PROBES
from ..probes.combine import standardized_blocks
from ..probes.numerics import fit_threads, numerics
from ..probes.protocol import MemberFeatures, Setting
from ..results.stats import linear_cka
from ..results.store import ResultRow, SimilarityRow, row_key
from ..zoo.checkpoints import ResolvedCheckpoint, resolve
from ..zoo.registry import CheckpointSpec, DatasetSpec
from .controls import control_features, control_key, controlled
from .options import RunOptions
from .plan import Comparison, Plan

if TYPE_CHECKING:
    from ..probes.base import Probe

SPLITS = ("train", "val", "test")


class Workspace:
    """What units share inside one process: prepared datasets, resolved checkpoints, the feature source.

    The driver passes what it already prepared; a remote worker starts empty and fills it
    on first use. ``on_progress(label, done, total)`` reports extraction progress.
    """

    def __init__(
        self,
        cache: FeatureCache,
        options: RunOptions,
        prepared: Mapping[str, PreparedDataset] | None = None,
        resolved: Mapping[str, ResolvedCheckpoint] | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ):
        self.options = options
        self.prepared: dict[str, PreparedDataset] = dict(prepared or {})
        self.resolved: dict[str, ResolvedCheckpoint] = dict(resolved or {})
        self.source = FeatureSource(cache, options.extract, on_progress=on_progress)
        self._features: tuple[tuple[str, str], _ComparisonData] | None = None

    def dataset(self, spec: DatasetSpec, fingerprint: str | None = None) -> PreparedDataset:
        """``spec`` prepared with the run's sizes; ``fingerprint``, when given, must match (same data everywhere)."""
        if spec.id not in self.prepared:
            o = self.options
            with remembered_hashes(self.source.cache.root / HASHES_FILE):
                self.prepared[spec.id] = prepare(spec, max_train=o.max_train, max_test=o.max_test, offline=o.offline)
        ds = self.prepared[spec.id]
        if fingerprint is not None and ds.fingerprint != fingerprint:
            raise ZooSurveyFailure(
                f"dataset {spec.id!r} here has fingerprint {ds.fingerprint}, but the run planned {fingerprint}: "
                "this machine sees other data under that name; give every node the same copy"
            )
        return ds

    def checkpoint(self, spec: CheckpointSpec) -> ResolvedCheckpoint:
        if spec.id not in self.resolved:
            with remembered_hashes(self.source.cache.root / HASHES_FILE):  # weights' hashes, timm's configs
                self.resolved[spec.id] = resolve(spec, offline=self.options.offline, image_size=self.options.image_size)
        return self.resolved[spec.id]

    def comparison_features(self, comp: Comparison, spec: DatasetSpec, fingerprint: str) -> _ComparisonData:
        """The comparison's train / val / test matrices, one per member, from the cache (the last one is kept)."""
        key = (comp.name, spec.id)
        if self._features is None or self._features[0] != key:
            self._features = (key, _read_members(self, comp, self.dataset(spec, fingerprint)))
        return self._features[1]


@dataclass(frozen=True)
class _ComparisonData:
    blocks: dict[str, list[np.ndarray]]  # split -> one matrix per member
    labels: dict[str, np.ndarray]
    extract_seconds: float
    gmacs: float | None  # counted at the run's resolution (None when an entry predates counting)


def _read_members(ws: Workspace, comp: Comparison, ds: PreparedDataset) -> _ComparisonData:
    mats: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    labels: dict[str, np.ndarray] = {}
    seconds = 0.0
    gmacs: float | None = 0.0
    for m in comp.members:
        for split in SPLITS:
            f = ws.source.get(ws.checkpoint(m), ds, split)
            if split == "train":
                counted = f.manifest.get("gflops")  # GMACs, under the manifest's old field name
                gmacs = None if counted is None or gmacs is None else gmacs + counted
            if split in labels and not np.array_equal(labels[split], f.labels):
                raise ZooSurveyError(
                    f"ensemble {comp.name!r}: members disagree on the {split} samples of {ds.spec.id!r}; "
                    "they must use the same dataset and split"
                )
            labels[split] = f.labels
            mats[split].append(f.features)
            seconds += float(f.manifest.get("extract_seconds", 0.0))
    return _ComparisonData(mats, labels, seconds, gmacs)


@dataclass(frozen=True)
class ExtractDone:
    """What an extraction unit reports back: its cache entry and the forward batches it ran."""

    digest: str
    forward_batches: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ExtractUnit:
    """One checkpoint's features on one split of one dataset: exactly one cache entry."""

    checkpoint: CheckpointSpec
    dataset: DatasetSpec
    split: str
    fingerprint: str  # the dataset the run planned with

    @property
    def name(self) -> str:
        return f"extract {self.checkpoint.id} · {self.dataset.id}/{self.split}"

    def run(self, ws: Workspace) -> ExtractDone:
        """Fill (or find) the cache entry; a rerun after it is complete runs no forward."""
        before, notes_before = ws.source.forward_batches, len(ws.source.notes)
        ds = ws.dataset(self.dataset, self.fingerprint)
        f = ws.source.get(ws.checkpoint(self.checkpoint), ds, self.split)
        return ExtractDone(str(f.manifest.get("digest", "")), ws.source.forward_batches - before,
                           tuple(ws.source.notes[notes_before:]))


@dataclass(frozen=True)
class ProbeUnit:
    """One probe setting on one comparison and dataset: exactly one result row, keyed by ``row_key``."""

    family: str
    strategy: str
    budget_by: str | None
    comparison: Comparison
    dataset: DatasetSpec
    fingerprint: str
    probe_name: str  # the class (``probe``) is looked up when the unit runs: deciding a row is stored imports none
    setting: Setting
    options: RunOptions
    row_key: str
    group: str  # every row of this comparison on this dataset (they share features): the unit two runs claim
    kind: str = ""  # the family's pretraining kind (recorded in the row's provenance for the report)
    # the class when it was already loaded where the units were made (a plug-in, or a probe registered in a notebook):
    # it travels with the unit to a Ray worker, where that registration is not; a shipped probe is looked up by name
    probe_class: type[Probe] | None = None

    @property
    def probe(self) -> type[Probe]:
        return self.probe_class or PROBES.get(self.probe_name)

    @property
    def name(self) -> str:
        label = f" {self.setting.label}" if self.setting.label else ""
        seed = f" seed {self.setting.seed}" if self.setting.seed is not None else ""
        return f"{self.probe_name}{label}{seed} probe · {self.comparison.name} · {self.dataset.id}"

    def features(self, ws: Workspace) -> MemberFeatures:
        """What the probe is given: the comparison's cached member features, and for a width-matched control their
        projection (fitted here: call it under :func:`~zoo_survey.probes.base.fit_threads`, as :meth:`run` does)."""
        comp = self.comparison
        data = ws.comparison_features(comp, self.dataset, self.fingerprint)
        feats = MemberFeatures(data.blocks, data.labels, comp.combine)
        if comp.project:
            ds = ws.dataset(self.dataset, self.fingerprint)
            width = ws.source.get(ws.checkpoint(comp.width_of), ds, "train").features.shape[1]  # type: ignore[arg-type]
            feats = control_features(comp, feats, int(width))
        return feats

    def run(self, ws: Workspace) -> ResultRow:
        """Fit and score the probe on the cached member features; returns the row (the caller stores it)."""
        comp, ds = self.comparison, ws.dataset(self.dataset, self.fingerprint)
        data = ws.comparison_features(comp, self.dataset, self.fingerprint)
        with fit_threads():  # every probe, plugins too, with the same thread count on any runner (issue 22)
            out = self.probe.run(self.features(ws), self.setting, self.options.probe_config)
        resolved = {m.id: ws.checkpoint(m) for m in comp.members}
        return ResultRow(
            row_key=self.row_key,
            family=self.family,
            comparison=comp.name,
            role=comp.role,
            members=[m.id for m in comp.members],
            combine=comp.combine,
            dataset=ds.spec.id,
            probe=self.probe.name,
            setting=self.setting.label,
            seed=self.setting.seed,
            top1=out.top1,
            mean_per_class=out.mean_per_class,
            top5=out.top5,
            score=out.score,
            hparams=out.hparams,
            params_m=comp.params_m,
            gflops=round(data.gmacs, 4) if data.gmacs is not None else comp.gmacs,  # the store's column: GMACs
            feature_dim=out.feature_dim,
            n_train=out.n_train,
            n_val=out.n_val,
            n_test=out.n_test,
            extract_seconds=round(data.extract_seconds, 3),
            warnings=list(out.warnings),
            test_key=test_key(ds, data.labels["test"]),
            predictions=out.predictions,
            test_labels=data.labels["test"] if out.predictions is not None else None,
            provenance={
                "zoo_survey": __version__,
                "strategy": self.strategy,
                "budget_by": self.budget_by,
                "revisions": {m: r.revision for m, r in resolved.items()},
                "preprocessing": {m: r.key()["preprocessing"] for m, r in resolved.items()},
                "gflops": "counted at the run's resolution" if data.gmacs is not None else "registry, at native resolution",
                "pretrain": {m.id: {**m.pretrain.model_dump(), "emacs": m.pretrain_emacs} for m in comp.members},
                "lineage": {m.id: m.lineage for m in comp.members},
                "feature_output": {m.id: self.options.extract.feature_output_for(m.feature_output) for m in comp.members},
                "family_kind": self.kind,
                "dataset_fingerprint": ds.fingerprint,
                "dataset_revision": ds.revision,
                "dataset_notes": list(ds.notes),
                "extract": self.options.extract.key(),
                # what else could move its numbers; extract_device: this run's (cached features may be older)
                "numerics": {**numerics(self.options.probe_config.device), "extract_device": self.options.extract.device},
            },
        )


def test_key(ds: PreparedDataset, labels: np.ndarray) -> str:
    """Names the test images a row was scored on exactly (the data, the selected images, the labels of those that
    decoded): rows with one key can be paired image by image."""
    return string_digest(f"{ds.fingerprint}:{ds.splits['test'].indices_digest()}:{arrays_digest(labels)}", 32)


CKA_MAX_ROWS = 10_000  # test rows CKA is computed on (a seeded subsample beyond this)
CKA_SEED = 0


@dataclass(frozen=True)
class SimilarityUnit:
    """Linear CKA (debiased) between every pair of a plan's single models on one dataset's test features:
    the members' diversity, and each member's similarity to the baseline (the report's "why")."""

    family: str
    models: tuple[CheckpointSpec, ...]  # baseline first, then the members
    dataset: DatasetSpec
    fingerprint: str
    sim_key: str

    @property
    def name(self) -> str:
        return f"CKA · {self.family} · {self.dataset.id}"

    @property
    def pairs(self) -> list[tuple[str, str, str]]:
        """(a, b, key) of every pair of models, each once."""
        ids = [m.id for m in self.models]
        return [(a, b, row_key({"pair": [a, b], "of": self.sim_key})) for i, a in enumerate(ids) for b in ids[i + 1:]]

    def run(self, ws: Workspace) -> list[SimilarityRow]:
        ds = ws.dataset(self.dataset, self.fingerprint)
        feats = {m.id: ws.source.get(ws.checkpoint(m), ds, "test") for m in self.models}
        first = next(iter(feats.values()))
        for mid, f in feats.items():
            if not np.array_equal(f.indices, first.indices):
                raise ZooSurveyError(f"CKA on {ds.spec.id!r}: {mid} has other test rows than {self.models[0].id}")
        rows = np.arange(len(first.indices))
        if len(rows) > CKA_MAX_ROWS:
            rows = np.sort(np.random.default_rng(CKA_SEED).choice(rows, CKA_MAX_ROWS, replace=False))
        # Like for like (issue 19): each model's test features standardized as its probe sees them (train+val
        # statistics, the refit's); linear CKA is not invariant to per-column scale.
        seen = {m.id: standardized_blocks([feats[m.id].features[rows]], [np.concatenate(
            [ws.source.get(ws.checkpoint(m), ds, s).features for s in ("train", "val")])]) for m in self.models}
        return [SimilarityRow(key, self.family, ds.spec.id, a, b, linear_cka(seen[a], seen[b]), len(rows))
                for a, b, key in self.pairs]


def similarity_units(
    plans: Sequence[Plan],
    prepared: Mapping[str, PreparedDataset],
    resolved: Mapping[str, ResolvedCheckpoint],
    options: RunOptions,
) -> list[SimilarityUnit]:
    """One CKA unit per (plan, dataset): the baseline and the ensemble's members."""
    out = []
    for plan in plans:
        models = (plan.baseline.members[0], *plan.ensemble.members)
        for ds in prepared.values():
            key = row_key({"cka": [resolved[m.id].key() for m in models], "extract": [options.extract.key(m.feature_output) for m in models],
                           "fingerprint": ds.fingerprint, "test": ds.splits["test"].indices_digest(),
                           "max_rows": CKA_MAX_ROWS, "seed": CKA_SEED, "estimator": "linear CKA, debiased HSIC",
                           "features": "standardized, train+val statistics"})
            out.append(SimilarityUnit(plan.family, models, ds.spec, ds.fingerprint, key))
    return out


def extract_units(checkpoints: Sequence[CheckpointSpec], prepared: Mapping[str, PreparedDataset]) -> list[ExtractUnit]:
    """Every (checkpoint, dataset, split), checkpoints outermost: a runner that keeps its model loads each once."""
    return [ExtractUnit(c, ds.spec, split, ds.fingerprint)
            for c in checkpoints for ds in prepared.values() for split in SPLITS]


def _row_payload(comp: Comparison, ds: PreparedDataset, probe: str, setting: Setting, options: RunOptions,
                 resolved: Mapping[str, ResolvedCheckpoint]) -> dict[str, Any]:
    """What determines a row (its key); see docs/architecture.md, 'Row key'."""
    return {
        "setting": setting.label,
        "seed": setting.seed,
        "members": [resolved[m.id].key() for m in comp.members],
        "combine": comp.combine,
        "extract": [options.extract.key(m.feature_output) for m in comp.members],
        "dataset": ds.spec.id,
        "fingerprint": ds.fingerprint,
        "splits": {k: [len(s), s.indices_digest()] for k, s in ds.splits.items()},
        "probe": probe,
        "grid": list(options.grid) if options.grid else "default",
        **control_key(comp, resolved, options),  # width-matched controls only: the projection and the width matched
        # A concatenation the probe standardizes itself, refit on train+val like a single model (issue 19); rows of the
        # earlier rule (blocks weighted on train only) keep their keys and are not mistaken for these.
        **({"blocks": "probe-standardized"} if comp.combine == "concat" and len(comp.members) > 1
           and PROBES.info(probe).concat_input == "raw" else {}),
    }


def probe_units(
    plans: Sequence[Plan],
    prepared: Mapping[str, PreparedDataset],
    resolved: Mapping[str, ResolvedCheckpoint],
    options: RunOptions,
) -> list[ProbeUnit]:
    """Every row the plans ask for, in order: plan, dataset, comparison, probe, setting."""
    out = []
    for plan in plans:
        for ds in prepared.values():
            for comp in plan.comparisons:
                todo = [(p, s) for p in options.probes for s in PROBES.settings(p, options.probe_config)
                        if comp.combine in PROBES.info(p).combines and controlled(comp, PROBES.info(p), options)]
                keys = [row_key(_row_payload(comp, ds, p, s, options, resolved)) for p, s in todo]
                group = row_key({"unit": sorted(keys)})  # the same for every run of this comparison on this dataset
                out += [ProbeUnit(plan.family, plan.strategy, plan.budget_by, comp, ds.spec, ds.fingerprint, p, s, options, k,
                                  group, plan.kind, PROBES.loaded(p))
                        for (p, s), k in zip(todo, keys, strict=True)]
    return out
