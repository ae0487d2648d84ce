"""Options shared across commands: one ``Annotated`` alias each, and the group of extraction flags
that ``run`` and ``extract`` both take (declared once, added to both signatures by :func:`extraction_flags`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import NotCachedError
from ..features.cache import DEFAULT_SHARD_ROWS
from ..survey.defaults import DEFAULT_DATASETS as _DATASETS
from ..survey.defaults import DEFAULT_FAMILY, offline_env  # noqa: F401 - the commands import them from here
from ..survey.defaults import DEFAULT_OUT as _OUT

if typing.TYPE_CHECKING:
    from ..zoo.registry import Registry

DEFAULT_DATASETS = ",".join(_DATASETS)
DEFAULT_OUT = Path(_OUT)

RegistryOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--registry", "-r", help="Extra registry folder (repeatable); also $ZOO_SURVEY_REGISTRY.", show_default=False),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder: results.sqlite and reports.")]
CacheOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Feature cache root [default: $ZOO_SURVEY_CACHE, else $XDG_CACHE_HOME/zoo-survey].",
                 show_default=False),
]
DatasetsOpt = Annotated[str, typer.Option("--datasets", "-d", help="Comma-separated dataset ids.")]
FamilyCheckpointsOpt = Annotated[
    list[str], typer.Option("--family", "-f", help="Family (repeatable, or 'all'): every checkpoint in it.")
]
CheckpointIdsOpt = Annotated[Optional[str], typer.Option(help="Only these checkpoint ids (comma-separated).")]
ListFormatOpt = Annotated[
    Optional[str],
    typer.Option("--format", help="table, tsv or json [default: table on a terminal, tsv when piped].", show_default=False),
]

# The flags of a feature extraction, shared by `run` and `extract`: name -> (annotation, default).
EXTRACTION_FLAGS: dict[str, tuple[Any, Any]] = {
    "datasets": (DatasetsOpt, DEFAULT_DATASETS),
    "device": (Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")], "auto"),
    "cache_dir": (CacheOpt, None),
    "registry": (RegistryOpt, None),
    "image_size": (Annotated[Optional[int], typer.Option(
        help="Input resolution for every model [default: each checkpoint's own; 96 on CPU].", show_default=False)], None),
    "max_train": (Annotated[Optional[int], typer.Option(
        help="Subsample train (stratified, seeded) [default: all; 2000 on CPU].", show_default=False)], None),
    "max_test": (Annotated[Optional[int], typer.Option(
        help="Subsample test (stratified, seeded) [default: all; 1000 on CPU].", show_default=False)], None),
    "full": (Annotated[bool, typer.Option("--full", help="On CPU too: native resolution and every sample.")], False),
    "batch_size": (Annotated[Optional[int], typer.Option(
        min=1, help="Images per forward batch [default: 16 on CPU, 256 on CUDA].", show_default=False)], None),
    "workers": (Annotated[Optional[int], typer.Option(
        min=0, help="DataLoader workers [default: 0 on a CPU of up to 4 cores (decode inline), more on CUDA].",
        show_default=False)], None),
    "offline": (Annotated[bool, typer.Option(
        "--offline", help="Never touch the network (also: HF_HUB_OFFLINE=1); what is missing from the caches is named, "
        "with the prefetch command that fetches it.")], False),
    "dtype": (Annotated[str, typer.Option(
        help="Forward dtype: float32, or bfloat16/float16 autocast on CUDA (part of the cache key).")], "float32"),
    "compile": (Annotated[bool, typer.Option(
        "--compile", help="torch.compile each model (pays off on CUDA for long extractions).")], False),
    "bad_images": (Annotated[str, typer.Option(
        help="An image that cannot be decoded: fail (stop, naming it) or skip (leave it out, counted).")], "fail"),
    "shard_rows": (Annotated[int, typer.Option(
        min=1, help="Rows per cache shard (the unit of resume after an interruption).")], DEFAULT_SHARD_ROWS),
    "preprocess": (Annotated[str, typer.Option(
        help="tensor: decode each dataset split once into the pixel cache and resize, crop and normalize on the device "
        "(within one grey level of timm's PIL transform); pil: timm's PIL transform itself (part of the cache key).")],
        "tensor"),
    "feature_output": (Annotated[str, typer.Option(
        "--feature-output", help="Which output is the feature vector: entry (each checkpoint's own, as its registry "
        "entry's 'feature_output:' says; timm's pooled pre-logits unless it names another), or for every checkpoint "
        "pre_logits, head (the head's output), cls_patch_mean (class token + mean of the patch tokens), avg or max "
        "(pooling of the last feature map / tokens).")], "entry"),
    # --features: the old name of --feature-output, kept as a hidden alias (it wins when given)
    "features": (Annotated[Optional[str], typer.Option("--features", hidden=True)], None),
    "allow_heavy": (Annotated[bool, typer.Option(
        "--allow-heavy", help="On a CPU too, run multi-GB checkpoints (over 1.5 GB of weights: ViT-g, SigLIP so400m), "
        "which a CPU run refuses otherwise.")], False),
    "ray": (Annotated[Optional[str], typer.Option(
        "--ray", metavar="ADDRESS", help="Run the units on a Ray cluster: local (start Ray on this machine with every "
        "visible GPU), auto (the cluster this machine belongs to) or the cluster's ADDRESS (host:port). Needs "
        "pip install 'zoo-survey[ray]'; see docs/scale.md.", show_default=False)], None),
    "ray_gpus_per_actor": (Annotated[Optional[float], typer.Option(
        help="With --ray: GPUs per extraction actor; a fraction shares a GPU [default: 1 on CUDA, 0 on CPU].",
        show_default=False)], None),
    "ray_gpus_per_probe": (Annotated[Optional[float], typer.Option(
        help="With --ray on a CUDA run: the share of a GPU each probe task asks for [default: 0.25]; on a CPU run a probe "
        "task asks for one CPU.", show_default=False)], None),
    "ray_cpus_per_actor": (Annotated[Optional[float], typer.Option(
        help="With --ray: CPUs per extraction actor [default: 1].", show_default=False)], None),
    "ray_cache": (Annotated[Optional[str], typer.Option(
        help="With --ray: auto (check that every node sees the cache folder), shared (workers write it), or driver "
        "(entries travel back through Ray's object store and this machine writes them) [default: auto].",
        show_default=False)], None),
}


def extraction_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the :data:`EXTRACTION_FLAGS` as options; it receives them as one dict, ``flags``.

    typer reads a command's signature, so the wrapper's signature is the command's own
    (without ``flags``) followed by the shared flags.
    """
    hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(command).parameters.values() if p.name != "flags"]
    shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
              for n, (a, d) in EXTRACTION_FLAGS.items()]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        flags = {n: kwargs.pop(n) for n in EXTRACTION_FLAGS}
        command(**kwargs, flags=flags)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # read by typer via inspect
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must see this signature, not the command's
    return wrapper


def csv(value: str | None) -> list[str]:
    """A comma-separated flag value as a list of its non-empty items."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def open_registry(folders: list[Path] | None) -> Registry:
    """The shipped registry plus $ZOO_SURVEY_REGISTRY and the --registry folders."""
    from ..zoo.registry import load_registry, registry_folders  # here: a report or `cache ls` never parses the registry

    return load_registry(registry_folders(folders or ()))


@contextmanager
def prefetch_hint(family: list[str], datasets: str, registry: list[Path] | None,
                  checkpoints: str | None = None) -> Iterator[None]:
    """Offline with inputs missing: end the one message with the prefetch command that fetches them."""
    try:
        yield
    except NotCachedError as e:
        cmd = ["zoo-survey prefetch", f"--family {','.join(family)}", f"--datasets {datasets}"]
        cmd += [f"--checkpoints {checkpoints}"] if checkpoints else []
        cmd += [f"--registry {r}" for r in registry or ()]
        e.args = (f"{e}\nOn a machine with internet run `{' '.join(cmd)}`, copy its Hugging Face cache "
                  "(HF_HUB_CACHE, default ~/.cache/huggingface/hub) here, and rerun.",)
        raise
