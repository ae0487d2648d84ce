"""What a source type is: one class that is both the YAML ``source:`` block's shape and how to read it.

A dataset source subclasses :class:`DatasetSource`, a checkpoint source :class:`CheckpointSource`. Each
declares its ``type`` as a one-value ``Literal`` (the name YAML files use), its fields as pydantic fields, and
implements :meth:`DatasetSource.load` or :meth:`CheckpointSource.fetch`. One registration makes it known:
a line in :mod:`zoo_survey.sources` for the built-in ones, an entry point for a plug-in
(:mod:`zoo_survey.plugins`). Heavy libraries are imported inside the methods: reading the registry stays light.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..errors import ZooSurveyError

if TYPE_CHECKING:
    from ..data.datasets import Raw
    from ..zoo.registry import CheckpointSpec, DatasetSpec


class Source(BaseModel):
    """A ``source:`` block: frozen, unknown fields refused. ``path_fields`` name the fields that hold a local
    path; a relative one is relative to the YAML file, and with ``confined`` it must resolve inside the file's
    folder or ``$ZOO_SURVEY_ALLOWED_PATHS``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    path_fields: ClassVar[tuple[str, ...]] = ()
    confined: ClassVar[bool] = True

    @classmethod
    def type_name(cls) -> str:
        """The ``type`` this class reads (its ``Literal``'s one value); '' when it declares none."""
        ann = cls.model_fields["type"].annotation
        args = get_args(ann) if get_origin(ann) is Literal else ()
        return args[0] if len(args) == 1 and isinstance(args[0], str) else ""

    @classmethod
    def localize(cls, raw: dict[str, Any], yaml_file: Path) -> tuple[dict[str, Any], list[tuple[str, Path]]]:
        """The raw block (before validation) with its local paths made absolute, and the ``(field, path)`` pairs
        the registry confines (see ``path_fields``/``confined``)."""
        out, confine = dict(raw), []
        for name in cls.path_fields:
            value = raw.get(name)
            if isinstance(value, str):
                p = Path(os.path.expanduser(value))
                out[name] = p if p.is_absolute() else (yaml_file.parent / p)
                if cls.confined:
                    confine.append((f"source.{name}", out[name]))
        return out, confine


class DatasetSource(Source):
    """A dataset source type: :meth:`load` returns the splits, a fingerprint and a revision."""

    label_hint: ClassVar[str] = ""  # added to the error for a split with unlabelled images

    def load(self, spec: DatasetSpec, offline: bool = False) -> Raw:
        """``(splits, fingerprint, class_names, revision)``: ``splits`` maps a split name to ``(images,
        labels)`` (images: any :class:`zoo_survey.data.datasets.Images`, e.g. ``ArrayImages``; labels: int64);
        ``fingerprint`` names the data exactly (it is part of every cache key: change it when the data
        changes); ``class_names`` may be None; ``revision`` is recorded with every row (``"data:<fingerprint>"``
        when there is no better name)."""
        raise NotImplementedError

    def local_folder(self, spec: DatasetSpec) -> Path | None:
        """The folder the data lies in, if one (``zoo-survey prefetch`` reports its size), after :meth:`load`."""
        local = getattr(self, "path", None)
        return local if isinstance(local, Path) and local.is_dir() else None


@dataclass(frozen=True)
class Weights:
    """What a checkpoint source found: the weights file, its revision, timm's pretrained config for the
    checkpoint (its preprocessing is read from it), the classifier size (None: read it from the weights), and
    keyword arguments for ``timm.create_model``."""

    path: Path
    revision: str  # a hub commit, or "sha256:<hex>" of the file
    pretrained_cfg: dict[str, Any]
    num_classes: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)


class CheckpointSource(Source):
    """A checkpoint source type: :meth:`fetch` finds (or downloads) the weights of a timm architecture."""

    takes_model_args: ClassVar[bool] = False  # the entry's model_args apply (else they are refused)

    def fetch(self, spec: CheckpointSpec, offline: bool = False) -> Weights:
        raise NotImplementedError

    def check_files(self, spec: CheckpointSpec) -> None:
        """Raise when local weights are missing (``registry validate``); hub sources check nothing here."""

    def timm_tag(self, spec: CheckpointSpec) -> str | None:
        """The timm pretrained tag whose weights these are, if any (budgets read timm's tables for it)."""
        return None


S = TypeVar("S", bound=Source)


class SourceRegistry(Generic[S]):
    """Source classes by ``type``: the built-in ones, then an entry-point group's on the first lookup.
    A duplicate ``type`` is an error."""

    def __init__(self, kind: str, base: type[S], builtin: Iterable[type[S]] = (), *, group: str | None = None):
        self.kind, self.base, self._group = kind, base, group
        self._types: dict[str, type[S]] = {}
        for cls in builtin:
            self.register(cls)

    def register(self, cls: type[S]) -> type[S]:
        """Add a source class (usable as a class decorator)."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ZooSurveyError(f"{cls!r} is not a {self.base.__name__} subclass")
        name = cls.type_name()
        if not name:
            raise ZooSurveyError(f"{self.kind} source {cls.__name__} declares no type; write `type: Literal['<name>']`")
        if name in self._types:
            raise ZooSurveyError(f"a {self.kind} source of type {name!r} is already registered ({self._types[name].__name__})")
        self._types[name] = cls
        self.__dict__.pop("_adapter", None)
        return cls

    def unregister(self, name: str) -> None:
        self._types.pop(name, None)
        self.__dict__.pop("_adapter", None)

    def _loaded(self) -> dict[str, type[S]]:
        if self._group is not None:
            from ..plugins import describe, load_group

            found = list(load_group(self._group, self.base))  # all or none: a failure raises at every lookup
            self._group = None
            for ep, cls in found:
                try:
                    self.register(cls)
                except ZooSurveyError as e:
                    raise ZooSurveyError(f"plug-in {describe(ep)}: {e}") from None
        return self._types

    def find(self, name: object) -> type[S] | None:
        return self._loaded().get(name) if isinstance(name, str) else None

    def names(self) -> tuple[str, ...]:
        return tuple(self._loaded())

    @cached_property
    def _adapter(self) -> TypeAdapter[Any]:
        classes = tuple(self._loaded().values())
        return TypeAdapter(Annotated[Union[classes], Field(discriminator="type")])  # type: ignore[arg-type]  # noqa: UP007 - a runtime tuple

    def validate(self, value: Any) -> S:
        """A ``source:`` block as its type's class; pydantic's errors (an unknown type lists the known ones)."""
        self._loaded()
        out: S = self._adapter.validate_python(value)
        return out


def source_validator(registry: Callable[[], SourceRegistry[S]]) -> Callable[..., Any]:
    """A pydantic wrap validator for a ``source`` field: a block validated by the type its ``type`` names."""

    def validate(value: Any, handler: Any) -> Any:
        reg = registry()
        return value if isinstance(value, reg.base) else reg.validate(value)

    return validate
