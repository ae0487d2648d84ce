"""The public Python API: :func:`survey`, :func:`features` and :func:`load` (``import zoo_survey as zs``).

``zoo-survey run`` is :func:`prepare_survey` then :meth:`SurveyJob.run`, which is what :func:`survey` does; the
command line adds only its flags, progress bars and printing. So a survey from a notebook writes the same rows
to the same store as the command with the same arguments, and either reads what the other cached.

>>> import zoo_survey as zs                                                            # doctest: +SKIP
>>> res = zs.survey(datasets=["digits"], probes=["linear"], image_size=32, max_train=200, max_test=100)  # doctest: +SKIP
>>> res.to_pandas()[["comparison", "role", "top1"]]                                    # doctest: +SKIP
>>> X, y = zs.features("tf_efficientnet_lite0.pypi", "digits", split="train")          # doctest: +SKIP

This module imports no torch, timm, scikit-learn or pandas: they load on first use.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import ZooSurveyError, unknown
from .features.cache import DEFAULT_SHARD_ROWS, FeatureCache, cache_root
from .probes.base import DEFAULT_SEEDS, DEFAULT_SHOTS
from .results.store import STORE_NAME, ResultRow, ResultStore, SimilarityRow
from .survey.options import (
    DEFAULT_DATASETS,
    DEFAULT_FAMILY,
    DEFAULT_OUT,
    DEFAULT_PROBES,
    RunOptions,
    offline_env,
    resolve_options,
)
from .survey.plan import Plan, plan_family
from .survey.run import extract_all, run_survey
from .survey.runner import Hooks, NodeTally, RunnerFactory
from .survey.units import SPLITS
from .zoo.registry import DatasetSpec, Registry, load_registry, registry_folders

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["SurveyJob", "SurveyResult", "features", "load", "open_registry", "prepare_survey", "survey"]

# A list of names, or one string of comma-separated names (as on the command line).
Names = Union[str, Sequence[str]]
PathLike = Union[str, Path]


def _names(value: Names | None, default: Sequence[str]) -> list[str]:
    if value is None:
        return list(default)
    items = value.split(",") if isinstance(value, str) else value
    return [n.strip() for n in items if n.strip()]


def open_registry(registry: PathLike | Sequence[PathLike] = ()) -> Registry:
    """The shipped registry, then ``$ZOO_SURVEY_REGISTRY``, then the folders in ``registry`` (one or several)."""
    extra = [registry] if isinstance(registry, (str, Path)) else list(registry)
    return load_registry(registry_folders([Path(p) for p in extra]))


@dataclass
class SurveyResult:
    """A survey's rows, one per (comparison, dataset, probe, setting, seed), and where they are stored.

    ``survey()`` fills the counts of the run (rows written and skipped, forward batches); ``load()`` leaves them 0.
    """

    rows: list[ResultRow]
    store: Path
    similarity: list[SimilarityRow] = field(default_factory=list, repr=False)  # linear CKA between the models
    written: int = 0
    skipped: int = 0
    forward_batches: int = 0
    notes: list[str] = field(default_factory=list)
    where: dict[str, NodeTally] = field(default_factory=dict)  # on a Ray cluster: what ran on which node
    cache: Path | None = None  # the feature cache the run used (None: loaded from a store)
    cpu_limits: Mapping[str, int] = field(default_factory=dict)  # the CPU limits the run took (empty: none)

    def to_pandas(self) -> pd.DataFrame:
        """One row per store row, in the store's order: its fields, then ``hparams.<key>`` and ``provenance.<key>``
        columns (one level: a value that is itself a mapping, such as ``provenance.revisions``, stays a dict).
        Accuracies are fractions (0.84 is 84%); ``gmacs`` is the store's ``gflops`` column (it holds multiply-accumulates).
        The per-image predictions are not columns (see ``rows``)."""
        import pandas as pd

        skip = {"hparams", "provenance", "predictions", "test_labels"}
        names = [f.name for f in fields(ResultRow) if f.name not in skip]
        records = []
        for r in self.rows:
            rec: dict[str, Any] = {n: getattr(r, n) for n in names}
            rec.update({f"hparams.{k}": v for k, v in r.hparams.items()})
            rec.update({f"provenance.{k}": v for k, v in r.provenance.items()})
            records.append(rec)
        extra = sorted({k for rec in records for k in rec} - set(names))
        hp = [k for k in extra if k.startswith("hparams.")]
        frame = pd.DataFrame.from_records(records, columns=names + hp + [k for k in extra if k not in hp])
        return frame.rename(columns={"gflops": "gmacs"})

    def answer(self) -> pd.DataFrame:
        """The per-family answer: one row per family (see :func:`zoo_survey.results.analysis.answer_frame`)."""
        from .results.analysis import answer_frame

        return answer_frame(self.rows, self.similarity)

    def _summary(self) -> str:
        def few(values: Sequence[str]) -> str:
            values = sorted(set(values))
            return ", ".join(values[:4]) + (f", ... ({len(values)})" if len(values) > 4 else "")

        rs = self.rows
        text = (f"{len(rs)} row(s): families {few([r.family for r in rs]) or '-'}; datasets {few([r.dataset for r in rs]) or '-'}; "
                f"probes {few([r.probe for r in rs]) or '-'}")
        if self.cache is not None:
            text += f"; {self.written} written, {self.skipped} already stored, {self.forward_batches} forward batch(es)"
        if self.cpu_limits:
            text += "; CPU limits " + ", ".join(f"{k}={v}" for k, v in self.cpu_limits.items())
        return text

    def __repr__(self) -> str:
        return f"<SurveyResult {self._summary()}; store {self.store}>"

    def _repr_html_(self) -> str:
        head = f"<p><b>SurveyResult</b>: {html.escape(self._summary())}<br>store <code>{html.escape(str(self.store))}</code></p>"
        answer = self.answer()
        return head + (answer.to_html(index=False) if len(answer) else "")


@dataclass
class SurveyJob:
    """A survey with its inputs checked and its plans made, not yet run (the CLI prints the plans in between)."""

    plans: list[Plan]
    datasets: list[DatasetSpec]
    options: RunOptions
    cache: FeatureCache
    out: Path

    @property
    def store(self) -> Path:
        return self.out / STORE_NAME

    def run(self, hooks: Hooks | None = None, runner: RunnerFactory | None = None) -> SurveyResult:
        """Extract (through the cache), probe, and store every row; ``runner``: where the units run (default here)."""
        report = run_survey(self.plans, self.datasets, self.cache, self.store, self.options, hooks, runner)
        store = report.store or self.store
        return SurveyResult(report.rows, store, ResultStore(store).similarity(), report.written, report.skipped,
                            report.forward_batches, report.notes, report.where, self.cache.root, self.options.cpu_limits)


def prepare_survey(
    family: Names = DEFAULT_FAMILY,
    ensemble: int | None = None,
    strategy: str | None = None,
    datasets: Names | None = None,
    probes: Names | None = None,
    *,
    members: Names | None = None,
    against: str | None = None,
    budget_by: str = "params",
    allow_same_lineage: bool = False,
    registry: PathLike | Sequence[PathLike] = (),
    out: PathLike = DEFAULT_OUT,
    cache_dir: PathLike | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    device: str = "auto",
    image_size: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    full: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    dtype: str = "float32",
    compile: bool = False,
    bad_images: str = "fail",
    feature_output: str = "entry",
    pixel_route: str = "tensor",
    offline: bool = False,
    allow_heavy: bool = False,
    grid: Sequence[float] | None = None,
    shots: Sequence[int] | None = None,
    seeds: int | None = None,
    fewshot_val: str = "shots",
    cuda: bool | Callable[[], bool | None] | None = None,
) -> SurveyJob:
    """Check every argument of :func:`survey` and plan it, running nothing: the registry is read, the families and
    datasets looked up, the options resolved (:func:`~zoo_survey.survey.options.resolve_options`) and each family
    planned (:func:`~zoo_survey.survey.plan.plan_family`).

    ``cuda``: whether the machines that extract have a GPU (``None``: this one); a callable is asked once the
    registry names are checked (the CLI connects to a Ray cluster there and answers for it).
    """
    offline = offline_env(offline)
    reg = open_registry(registry)
    fams = reg.select_families(_names(family, [DEFAULT_FAMILY]))
    ds_specs = reg.select_datasets(_names(datasets, DEFAULT_DATASETS))
    options = resolve_options(
        device=device, image_size=image_size, max_train=max_train, max_test=max_test, full=full, batch_size=batch_size,
        workers=workers, dtype=dtype, compile=compile, bad_images=bad_images, feature_output=feature_output, pixel_route=pixel_route,
        offline=offline, allow_heavy=allow_heavy, probes=_names(probes, DEFAULT_PROBES), grid=grid,
        shots=DEFAULT_SHOTS if shots is None else shots, seeds=DEFAULT_SEEDS if seeds is None else seeds,
        fewshot_val=fewshot_val, cuda=cuda() if callable(cuda) else cuda,
    )
    named = members if members is None or isinstance(members, str) else list(members)
    plans = [plan_family(fam, ensemble, strategy, against=against, members=named, budget_by=budget_by,
                         allow_same_lineage=allow_same_lineage) for fam in fams]
    return SurveyJob(plans, ds_specs, options, FeatureCache(cache_root(_path(cache_dir)), shard_rows=shard_rows), Path(out))


def survey(
    family: Names = DEFAULT_FAMILY,
    ensemble: int | None = None,
    strategy: str | None = None,
    datasets: Names | None = None,
    probes: Names | None = None,
    *,
    members: Names | None = None,
    against: str | None = None,
    budget_by: str = "params",
    allow_same_lineage: bool = False,
    registry: PathLike | Sequence[PathLike] = (),
    out: PathLike = DEFAULT_OUT,
    cache_dir: PathLike | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    device: str = "auto",
    image_size: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    full: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    dtype: str = "float32",
    compile: bool = False,
    bad_images: str = "fail",
    feature_output: str = "entry",
    pixel_route: str = "tensor",
    offline: bool = False,
    allow_heavy: bool = False,
    grid: Sequence[float] | None = None,
    shots: Sequence[int] | None = None,
    seeds: int | None = None,
    fewshot_val: str = "shots",
    hooks: Hooks | None = None,
) -> SurveyResult:
    """Survey ``family``: its single largest checkpoint against an ensemble of ``ensemble`` smaller ones, on
    ``datasets``, with ``probes``; the same work and the same rows as ``zoo-survey run`` with the same arguments.

    Features are cached (``cache_dir``, default ``$ZOO_SURVEY_CACHE`` or ``~/.cache/zoo-survey``) and rows stored in
    ``<out>/results.sqlite``; a rerun computes only what is missing. Names may be lists or comma-separated
    strings; ``family="all"`` surveys every family. ``ensemble`` defaults to the number of ``members`` when they
    are given, else 2; ``strategy`` to ``"explicit"`` with members, else ``"smallest"``. On a CPU without ``full``,
    the CPU limits (96 px, 2,000 train / 1,000 test images) fill the sizes left ``None``. ``hooks`` receives
    progress (see :class:`~zoo_survey.survey.runner.Hooks`).

    Bad input raises :class:`~zoo_survey.errors.ZooSurveyError` before any work, naming what is wrong.
    """
    job = prepare_survey(
        family, ensemble, strategy, datasets, probes, members=members, against=against, budget_by=budget_by,
        allow_same_lineage=allow_same_lineage, registry=registry, out=out, cache_dir=cache_dir, shard_rows=shard_rows,
        device=device, image_size=image_size, max_train=max_train, max_test=max_test, full=full, batch_size=batch_size,
        workers=workers, dtype=dtype, compile=compile, bad_images=bad_images, feature_output=feature_output, pixel_route=pixel_route,
        offline=offline, allow_heavy=allow_heavy, grid=grid, shots=shots, seeds=seeds, fewshot_val=fewshot_val,
    )
    return job.run(hooks)


def features(
    checkpoint: str,
    dataset: str,
    split: str = "train",
    *,
    registry: PathLike | Sequence[PathLike] = (),
    cache_dir: PathLike | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    device: str = "auto",
    image_size: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    full: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    dtype: str = "float32",
    compile: bool = False,
    bad_images: str = "fail",
    feature_output: str = "entry",
    pixel_route: str = "tensor",
    offline: bool = False,
    allow_heavy: bool = False,
    hooks: Hooks | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``checkpoint``'s features on ``split`` (train, val or test, as a survey splits ``dataset``) and their labels:
    ``X`` float32 (n, feature_dim), ``y`` int64 (n,).

    The first call extracts the checkpoint's features on every split of the dataset into the feature cache, as
    ``zoo-survey extract`` does; later calls, and a survey with the same settings, read them from there. The
    settings mean what they mean for :func:`survey` (so on a CPU without ``full``, the CPU limits apply).
    """
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    offline = offline_env(offline)
    reg = open_registry(registry)
    spec, ds_spec = reg.checkpoint(checkpoint), reg.dataset(dataset)
    options = resolve_options(
        device=device, image_size=image_size, max_train=max_train, max_test=max_test, full=full, batch_size=batch_size,
        workers=workers, dtype=dtype, compile=compile, bad_images=bad_images, feature_output=feature_output, pixel_route=pixel_route,
        offline=offline, allow_heavy=allow_heavy,
    )
    cache = FeatureCache(cache_root(_path(cache_dir)), shard_rows=shard_rows)
    ws = extract_all([spec], [ds_spec], cache, options, hooks).ws
    f = ws.source.get(ws.checkpoint(spec), ws.dataset(ds_spec), split)
    return f.features, f.labels


def load(out: PathLike = DEFAULT_OUT) -> SurveyResult:
    """The rows of an existing store: ``out`` is a survey's output folder (or its ``results.sqlite``)."""
    path = Path(out)
    if path.is_dir() or not path.suffix:
        path = path / STORE_NAME
    if not path.is_file():
        raise ZooSurveyError(f"no results store at {path}; run a survey with out={str(out)!r} first, or pass the folder it wrote")
    store = ResultStore(path, create=False)
    return SurveyResult(store.rows(), store.path, store.similarity())


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)
