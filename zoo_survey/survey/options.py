"""Run options: every knob of a run resolved in one place, for the CLI, the benchmarks and the tests.

:func:`resolve_options` turns what a user typed (``--device auto``, no ``--image-size``,
``--probes linear,fewshot``) into a frozen :class:`RunOptions`: the device, the CPU
limits (a CPU run without ``--full`` caps the resolution and the number of images),
batch size, workers, and the probe settings, each checked with a clear message.

>>> opts = resolve_options(device="cpu")             # doctest: +SKIP
>>> opts.image_size, opts.max_train, opts.cpu_limits  # doctest: +SKIP
(96, 2000, {'image_size': 96, 'max_train': 2000, 'max_test': 1000})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ZooSurveyError, shown, unknown
from ..features.extract import ExtractOptions, default_batch_size, default_workers, resolve_device
from ..probes import PROBES
from ..probes.protocol import DEFAULT_SEEDS, DEFAULT_SHOTS, SELECTIONS, ProbeConfig
from .defaults import CPU_LIMITS, DEFAULT_DATASETS, DEFAULT_FAMILY, DEFAULT_OUT, DEFAULT_PROBES, offline_env  # noqa: F401 - re-exported


@dataclass(frozen=True)
class RunOptions:
    """Everything a run needs besides what to run (plans, datasets) and where (cache, store)."""

    probes: tuple[str, ...] = ("linear",)
    image_size: int | None = None
    max_train: int | None = None
    max_test: int | None = None
    grid: tuple[float, ...] | None = None
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: int = DEFAULT_SEEDS
    fewshot_val: str = "shots"
    offline: bool = False
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    cpu_limits: Mapping[str, int] = field(default_factory=dict)  # the CPU limits this run took (empty: none)
    allow_heavy: bool = False  # run multi-GB checkpoints (CheckpointSpec.heavy) on a CPU too
    width_controls: bool = True  # the width-matched control rows of each ensemble (issue 19; survey/controls.py)

    @property
    def probe_config(self) -> ProbeConfig:
        return ProbeConfig(grid=self.grid, shots=self.shots, seeds=self.seeds, device=self.extract.device,
                           fewshot_val=self.fewshot_val)


def resolve_options(
    *,
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
    probes: Sequence[str] = DEFAULT_PROBES,
    grid: Sequence[float] | None = None,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: int = DEFAULT_SEEDS,
    fewshot_val: str = "shots",
    cuda: bool | None = None,
    width_controls: bool = True,
) -> RunOptions:
    """Resolve a run's options; on a CPU without ``full``, :data:`CPU_LIMITS` fill the sizes left unset.

    ``cuda``: whether the machines that extract have a GPU (a Ray cluster's answer); ``None``: this one.
    ``width_controls``: probe each ensemble's width-matched controls too (its concatenation projected to the
    baseline's width by PCA and by a random projection; docs/statistics.md); False skips those rows.
    """
    dev = resolve_device(device, cuda)
    probe_names = tuple(dict.fromkeys(probes))
    if not probe_names:
        raise ZooSurveyError(f"'probes' is empty; name at least one of {', '.join(PROBES.names())}", param="probes")
    for p in probe_names:
        PROBES.info(p)  # an unknown name raises, with close matches (no estimator is imported)
    if grid is not None:
        grid = tuple(float(g) for g in grid)
        if not grid or any(not g > 0 for g in grid):
            raise ZooSurveyError(f"'grid' values must be positive (they are inverse regularization strengths C); got {shown(list(grid))}",
                                 param="grid")
    shots = tuple(sorted(set(int(s) for s in shots)))
    if not shots or shots[0] < 1:
        raise ZooSurveyError(f"'shots' values must be at least 1 (examples per class); got {shown(list(shots))}", param="shots")
    if seeds < 1:
        raise ZooSurveyError(f"'seeds' must be at least 1, got {seeds}", param="seeds")
    if fewshot_val not in SELECTIONS:
        raise unknown("'fewshot_val' value", fewshot_val, SELECTIONS, param="fewshot_val")
    for name, value in (("image_size", image_size), ("batch_size", batch_size)):
        if value is not None and value < 1:
            raise ZooSurveyError(f"'{name}' must be at least 1, got {value}", param=name)
    if workers is not None and workers < 0:
        raise ZooSurveyError(f"'workers' must be 0 or more, got {workers}", param="workers")
    given = {"image_size": image_size, "max_train": max_train, "max_test": max_test}
    limits = {k: v for k, v in CPU_LIMITS.items() if given[k] is None} if dev == "cpu" and not full else {}
    extract = ExtractOptions(
        device=dev,
        batch_size=batch_size or default_batch_size(dev),
        workers=default_workers(dev) if workers is None else workers,
        dtype=dtype,
        compile=compile,
        bad_images=bad_images,
        feature_output=feature_output,
        pixel_route=pixel_route,
    )
    return RunOptions(
        probes=probe_names,
        image_size=given["image_size"] if given["image_size"] is not None else limits.get("image_size"),
        max_train=given["max_train"] if given["max_train"] is not None else limits.get("max_train"),
        max_test=given["max_test"] if given["max_test"] is not None else limits.get("max_test"),
        grid=grid,
        shots=shots,
        seeds=seeds,
        fewshot_val=fewshot_val,
        offline=offline,
        extract=extract,
        cpu_limits=limits,
        allow_heavy=allow_heavy,
        width_controls=bool(width_controls),
    )


def parse_list(text: str, what: str, kind: type = str) -> list:
    """A comma-separated value (``grid="0.1,1"``) as a list of ``kind``; a bad item names parameter ``what``."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    try:
        return [kind(v) for v in items]
    except ValueError as e:
        example = {int: "1,5,10", float: "0.01,0.1,1,10"}.get(kind, "a,b")
        raise ZooSurveyError(f"'{what}' must be comma-separated {kind.__name__}s like {example}; got {shown(text)}",
                             param=what) from e
