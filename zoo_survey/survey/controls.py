"""Width-matched control rows (issue 19) as the survey runs them: which probes they get, what keys them, their
features. The projection itself lives in :mod:`zoo_survey.probes.projection`; the plan adds the comparisons
(:data:`.plan.CONTROL_ROLES`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..probes.protocol import MemberFeatures, ProbeInfo
from .plan import Comparison

if TYPE_CHECKING:
    from ..zoo.checkpoints import ResolvedCheckpoint
    from .options import RunOptions

CONTROL_VERSION = 1  # bump when the projection's rule changes: the control rows get new keys


def controlled(comp: Comparison, probe: ProbeInfo, options: RunOptions) -> bool:
    """Whether ``comp`` gets ``probe``'s rows: every comparison but a control does; a control gets the paired
    accuracy probes (linear, kNN, NCM), unless ``options.width_controls`` is off. Not few-shot: its projection would
    be fitted on the whole train split, more images than the shots its single sees; not LogME (no paired answer)."""
    if not comp.project:
        return True
    return options.width_controls and probe.presentation == "paired" and probe.yields == "accuracy"


def control_key(comp: Comparison, resolved: Mapping[str, ResolvedCheckpoint], options: RunOptions) -> dict[str, Any]:
    """What a control row's key adds to a comparison's (nothing for any other row, so their keys stay as they were):
    the projection, its seed and version, and the checkpoint whose width it matches."""
    if not comp.project or comp.width_of is None:
        return {}
    from ..probes.projection import RANDOM_SEED

    return {"control": {"project": comp.project, "seed": RANDOM_SEED if comp.project == "random" else None,
                        "width_of": resolved[comp.width_of.id].key(),
                        "width_extract": options.extract.key(comp.width_of.feature_output), "version": CONTROL_VERSION}}


def control_features(comp: Comparison, data: MemberFeatures, width: int) -> MemberFeatures:
    """``data`` (the ensemble's member blocks) projected to ``width`` columns (the baseline's feature width),
    as one pre-weighted block: the probe does not re-standardize it (:mod:`zoo_survey.probes.projection`)."""
    from ..probes.projection import project_blocks

    projected = project_blocks(data.blocks, width, comp.project)
    return MemberFeatures({s: [m] for s, m in projected.items()}, data.labels, "concat")
