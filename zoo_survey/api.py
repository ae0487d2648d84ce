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
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import ZooSurveyError, unknown
from .features.cache import DEFAULT_SHARD_ROWS, FeatureCache, cache_root
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
from .survey.runner import Hooks, NodeTally, RunnerFactory, Timings
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
    timings: Timings = field(default_factory=Timings)  # wall, extraction, probe and overlap seconds (zero from load())

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
        """Extract (through the cache), probe, and store every row; ``runner``: where the units run (default here).

        Leaves the calling process's environment and thread counts alone (a notebook's torch is loaded already, and
        its other work is the caller's); ``zoo-survey`` sets them (:func:`zoo_survey.threads.configure`), and so can a
        script before it imports torch."""
        report = run_survey(self.plans, self.datasets, self.cache, self.store, self.options, hooks, runner)
        store = report.store or self.store
        return SurveyResult(report.rows, store, ResultStore(store).similarity(), report.written, report.skipped,
                            report.forward_batches, report.notes, report.where, self.cache.root, self.options.cpu_limits,
                            report.timings)


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
    cuda: bool | Callable[[], bool | None] | None = None,
    **options: Any,
) -> SurveyJob:
    """Check every argument of :func:`survey` and plan it, running nothing: the registry is read, the families and
    datasets looked up, the options resolved (:func:`~zoo_survey.survey.options.resolve_options`, which takes every
    keyword in ``options``: ``device``, ``image_size``, ``max_train``, ``full``, ``grid``, ``shots`` ...) and each
    family planned (:func:`~zoo_survey.survey.plan.plan_family`).

    ``cuda``: whether the machines that extract have a GPU (``None``: this one); a callable is asked once the
    registry names are checked (the CLI connects to a Ray cluster there and answers for it).
    """
    reg = open_registry(registry)
    fams = reg.select_families(_names(family, [DEFAULT_FAMILY]))
    ds_specs = reg.select_datasets(_names(datasets, DEFAULT_DATASETS))
    resolved = _resolve(options, probes=_names(probes, DEFAULT_PROBES), cuda=cuda() if callable(cuda) else cuda)
    named = members if members is None or isinstance(members, str) else list(members)
    plans = [plan_family(fam, ensemble, strategy, against=against, members=named, budget_by=budget_by,
                         allow_same_lineage=allow_same_lineage) for fam in fams]
    return SurveyJob(plans, ds_specs, resolved, FeatureCache(cache_root(_path(cache_dir)), shard_rows=shard_rows), Path(out))


def survey(*args: Any, hooks: Hooks | None = None, **kwargs: Any) -> SurveyResult:
    """Survey ``family``: its single largest checkpoint against an ensemble of ``ensemble`` smaller ones, on
    ``datasets``, with ``probes``; the same work and the same rows as ``zoo-survey run`` with the same arguments.

    Takes the parameters of :func:`prepare_survey` (its signature is this function's) and ``hooks``, which receive
    progress (see :class:`~zoo_survey.survey.runner.Hooks`). Features are cached (``cache_dir``, default
    ``$ZOO_SURVEY_CACHE`` or ``~/.cache/zoo-survey``) and rows stored in ``<out>/results.sqlite``; a rerun computes
    only what is missing. Names may be lists or comma-separated strings; ``family="all"`` surveys every family.
    ``ensemble`` defaults to the number of ``members`` when they are given, else 2; ``strategy`` to ``"explicit"``
    with members, else ``"smallest"``. On a CPU without ``full``, the CPU limits (96 px, 2,000 train / 1,000 test
    images) fill the sizes left ``None``.

    Bad input raises :class:`~zoo_survey.errors.ZooSurveyError` (a ``ValueError``) before any work, naming what is wrong.
    """
    return prepare_survey(*args, **kwargs).run(hooks)


def features(
    checkpoint: str,
    dataset: str,
    split: str = "train",
    *,
    registry: PathLike | Sequence[PathLike] = (),
    cache_dir: PathLike | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    hooks: Hooks | None = None,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``checkpoint``'s features on ``split`` (train, val or test, as a survey splits ``dataset``) and their labels:
    ``X`` float32 (n, feature_dim), ``y`` int64 (n,).

    The first call extracts the checkpoint's features on every split of the dataset into the feature cache, as
    ``zoo-survey extract`` does; later calls, and a survey with the same settings, read them from there.
    ``options`` are :func:`~zoo_survey.survey.options.resolve_options`' extraction settings (``device``,
    ``image_size``, ``max_train``, ``max_test``, ``full``, ``dtype``, ``feature_output`` ...), meaning what they mean
    for :func:`survey` (so on a CPU without ``full``, the CPU limits apply).
    """
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    reg = open_registry(registry)
    spec, ds_spec = reg.checkpoint(checkpoint), reg.dataset(dataset)
    cache = FeatureCache(cache_root(_path(cache_dir)), shard_rows=shard_rows)
    ws = extract_all([spec], [ds_spec], cache, _resolve(options), hooks).ws
    f = ws.source.get(ws.checkpoint(spec), ws.dataset(ds_spec), split)
    return f.features, f.labels


def _resolve(options: Mapping[str, Any], **fixed: Any) -> RunOptions:
    """:func:`resolve_options` over a caller's keywords; an unknown keyword is bad input naming the valid ones."""
    valid = set(inspect.signature(resolve_options).parameters) - set(fixed)
    wrong = sorted(set(options) - valid)
    if wrong:
        raise unknown("parameter", wrong[0], valid)
    given = {**options, "offline": offline_env(options.get("offline", False))}
    given = {k: v for k, v in given.items() if v is not None or k not in ("shots", "seeds")}  # None: the default
    return resolve_options(**given, **fixed)


def _with_options(func: Callable[..., Any], *, drop: Sequence[str] = (), extra: Sequence[inspect.Parameter] = ()) -> None:
    """Show ``func``'s own parameters plus :func:`resolve_options`' keywords in ``inspect.signature``/``help``/``?``:
    one list of options, in resolve_options, and every entry point shows all of it."""
    own = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in own} | set(drop)
    more = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(resolve_options).parameters.values()
            if p.name not in taken]
    func.__signature__ = inspect.signature(func).replace(parameters=[*own, *more, *extra])  # type: ignore[attr-defined]


_with_options(prepare_survey, drop=("probes", "cuda"))
_with_options(features, drop=("probes", "grid", "shots", "seeds", "fewshot_val", "cuda", "width_controls"))
survey.__signature__ = inspect.signature(prepare_survey).replace(  # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(prepare_survey).parameters.values() if p.name != "cuda"]
    + [inspect.Parameter("hooks", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Hooks | None")],
    return_annotation="SurveyResult")


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
