"""The budget split: one total pretraining budget -> CAT1 / CAT2 / CAT4 ... members (and a wide single).

A Time-Cat zoo holds the total fixed. CAT1 is one model trained for the whole budget;
CAT-k is k models of the same architecture, independent seeds, each trained for 1/k of
it (its own complete schedule, the same batch size), so the k members' steps and images
sum to the single's. The optional wide single is one model of about k x the parameters
trained for the whole budget (RRL's RN50w4 control): it matches the ensemble's size, not
its pretraining compute.

Everything here is arithmetic on names and integers (no torch), so the accounting is
tested on its own.

>>> plan = plan_zoo("resnet50", cats=(1, 2, 4), steps=450_000, batch_size=256)
>>> [(m.group, m.steps) for m in plan.members][:3]
[('cat1', 450000), ('cat2', 225000), ('cat2', 225000)]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ZooSurveyError, shown
from ..zoo.registry import split_model_name_tag

WIDE = "wide"


@dataclass(frozen=True)
class Member:
    """One model of the zoo: what to build, with which seed, for how many steps."""

    id: str  # registry id, ``arch.tag``
    arch: str
    model_args: Mapping[str, Any]
    group: str  # "cat1", "cat2", ..., or "wide"
    seed: int
    steps: int
    batch_size: int

    @property
    def images_seen(self) -> int:
        return self.steps * self.batch_size

    @property
    def tag(self) -> str:
        return split_model_name_tag(self.id)[1]


@dataclass(frozen=True)
class ZooPlan:
    """A family to train: its members in training order, the named ensembles, and CAT1 as the baseline."""

    family: str
    steps: int  # the whole budget, in optimizer steps of ``batch_size`` images
    batch_size: int
    members: tuple[Member, ...]
    ensembles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def baseline(self) -> Member:
        return self.members[0]

    @property
    def images(self) -> int:
        return self.steps * self.batch_size

    def group(self, name: str) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.group == name)


def budget_steps(steps: int | None, images: int | None, batch_size: int) -> int:
    """The whole budget in optimizer steps: ``--steps``, or ``--images`` over the batch size (a whole number).

    >>> budget_steps(None, 12_800, 64)
    200
    """
    if batch_size < 1:
        raise ZooSurveyError(f"'batch_size' must be at least 1, got {batch_size}", param="batch_size")
    if (steps is None) == (images is None):
        raise ZooSurveyError("give the pretraining budget once: 'steps' (optimizer steps) or 'images' (images seen)",
                             param=("steps", "images"))
    if steps is not None:
        if steps < 1:
            raise ZooSurveyError(f"'steps' must be at least 1, got {steps}", param="steps")
        return steps
    assert images is not None
    if images < batch_size or images % batch_size:
        lo, hi = images // batch_size * batch_size, (images // batch_size + 1) * batch_size
        lo, hi = (lo, hi) if lo else (batch_size, 2 * batch_size)
        raise ZooSurveyError(
            f"images={images} is not a whole number of steps at batch_size={batch_size}; use a multiple of "
            f"{batch_size}, e.g. {lo:,} or {hi:,}", param=("images", "batch_size")
        )
    return images // batch_size


NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_\-]*"  # the id part after the arch (zoo.registry's id pattern)


def parse_cats(cats: Sequence[int]) -> tuple[int, ...]:
    """``--cat 2,4``: the ensemble sizes, each once, ascending; 1 (the single, the family's baseline) is always in."""
    bad = [k for k in cats if k < 1]
    if bad:
        raise ZooSurveyError(f"'cats' values are ensemble sizes, at least 1; got {shown(list(cats))}", param="cats")
    return tuple(sorted({1, *cats}))


def plan_zoo(
    arch: str,
    *,
    cats: Sequence[int] = (1, 2, 4),
    steps: int | None = None,
    images: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    name: str = "timecat",
    model_args: Mapping[str, Any] | None = None,
    wide_args: Mapping[str, Any] | None = None,
    wide_arch: str | None = None,
) -> ZooPlan:
    """Split one budget into CAT-k members; a budget that does not divide into whole steps is refused.

    Seeds are ``seed``, ``seed + 1``, ... in member order, so no two members share an
    initialisation or a data order. ``wide_args`` / ``wide_arch`` (either) add the wide
    single: the arch's ``model_args`` updated with ``wide_args``, trained for the whole budget.
    """
    if not re.fullmatch(NAME_PATTERN, name):
        raise ZooSurveyError(f"'name' {shown(name)}: use letters, digits, '-' and '_', starting with a letter or digit "
                             f"(it becomes part of every checkpoint id, e.g. {arch}.{name}-cat1)", param="name")
    total = budget_steps(steps, images, batch_size)
    ks = parse_cats(cats)
    undivided = [k for k in ks if total % k]
    if undivided:
        step = math.lcm(*ks)
        lo, hi = total // step * step, (total // step + 1) * step
        lo, hi = (lo, hi) if lo else (step, 2 * step)
        raise ZooSurveyError(
            f"a budget of {total:,} steps does not split into whole steps for CAT{'/CAT'.join(map(str, undivided))} "
            f"(cats={','.join(map(str, ks))}); use a multiple of {step} steps"
            + (f" (of {step * batch_size:,} images at batch_size={batch_size})" if images is not None else "")
            + f", e.g. {lo:,} or {hi:,}", param=("cats", "batch_size")
        )
    base_args = dict(model_args or {})
    family = f"{name}-{arch}"
    members: list[Member] = []
    ensembles: dict[str, tuple[str, ...]] = {}
    for k in ks:
        group = f"cat{k}"
        ids = [f"{arch}.{name}-{group}" if k == 1 else f"{arch}.{name}-{group}-{i + 1}" for i in range(k)]
        members += [Member(i, arch, base_args, group, seed + len(members) + j, total // k, batch_size)
                    for j, i in enumerate(ids)]
        if k > 1:
            ensembles[group] = tuple(ids)
    if wide_args is not None or wide_arch is not None:
        w_arch = wide_arch or arch
        if w_arch == arch and not wide_args:
            raise ZooSurveyError(
                "the wide single is the single's architecture made wider: give 'wide_args' with the width "
                "(e.g. '{\"channels\": [128, 256, 512, 1024]}') or a wider 'wide_arch'", param=("wide_args", "wide_arch")
            )
        wide_id = f"{w_arch}.{name}-{WIDE}"
        members.append(Member(wide_id, w_arch, {**base_args, **(wide_args or {})}, WIDE, seed + len(members), total,
                              batch_size))
        ensembles[WIDE] = (wide_id,)
    return ZooPlan(family, total, batch_size, tuple(members), ensembles)
