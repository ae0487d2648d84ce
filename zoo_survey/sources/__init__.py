"""Source types: where a checkpoint's weights or a dataset's images come from.

A source type is one class (see :mod:`.base`) plus one registration: a line below for the built-in ones, an
entry point in group ``zoo_survey.dataset_sources`` / ``zoo_survey.checkpoint_sources`` for a plug-in
(:mod:`zoo_survey.plugins`; read on the first lookup). The registry validates a YAML ``source:`` block by the
class its ``type`` names.
"""

from ..plugins import CHECKPOINT_SOURCE_GROUP, DATASET_SOURCE_GROUP
from .base import CheckpointSource, DatasetSource, Source, SourceRegistry, Weights
from .checkpoints import FileSource, HubSource, PackageSource, TimmSource
from .datasets import BuiltinSource, HFSource, ImageFolderSource, ParquetSource

CHECKPOINT_SOURCES: SourceRegistry[CheckpointSource] = SourceRegistry(
    "checkpoint", CheckpointSource, [HubSource, TimmSource, FileSource, PackageSource], group=CHECKPOINT_SOURCE_GROUP)
DATASET_SOURCES: SourceRegistry[DatasetSource] = SourceRegistry(
    "dataset", DatasetSource, [BuiltinSource, HFSource, ImageFolderSource, ParquetSource], group=DATASET_SOURCE_GROUP)

__all__ = [
    "CHECKPOINT_SOURCES", "DATASET_SOURCES", "BuiltinSource", "CheckpointSource", "DatasetSource", "FileSource", "HFSource",
    "HubSource", "ImageFolderSource", "PackageSource", "ParquetSource", "Source", "SourceRegistry", "TimmSource", "Weights",
]
