"""Plan: expand ``--family F --ensemble K`` into concrete comparisons.

A comparison is a list of members and a combination rule; a single model is an
ensemble of one. Each plan holds the family's baseline (by default its largest
checkpoint by params), each ensemble member alone, and the ensemble.

Member strategies (``--strategy``):

- ``smallest`` (default): the K smallest checkpoints by params, baseline excluded.
- ``same-arch``: K checkpoints of one architecture from independent pretraining runs
  (e.g. timm's ``resnet50.a1/a2/a3/tv2`` recipes): the largest architecture, below
  the baseline, that has K of them. This is the published setting.
- ``budget``: the K checkpoints with the largest summed params that stay within the
  baseline's params (``--budget-by gmacs``: GMACs, multiply-accumulates of one forward; ``--budget-by pretrain``:
  pretraining compute, images seen (or epochs x images) x GMACs x 3, from the registry's ``pretrain`` fields; sums
  are compared up to a relative 1e-9, so k members of 1/k of a budget fit it exactly).
- ``explicit``: ``--members a,b,c``, or a named ensemble of the family YAML (``--members NAME``).

Besides the ensemble (concatenated) and its output average, a plan holds two width-matched controls
(:data:`CONTROL_ROLES`): the concatenation projected to the baseline's feature width by PCA fitted on train
and by a seeded Gaussian projection, each probed like any model (``width_controls=False`` skips their rows).

Every strategy keeps the members independent: no two share a ``lineage`` (one pretraining
run fine-tuned twice, e.g. ViT-Ti/16 at 224 and 384 px, counts once) unless
``allow_same_lineage`` (``--allow-same-lineage``) says otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import ZooSurveyError, shown, unknown
from ..zoo.flops import within_budget
from ..zoo.registry import CheckpointSpec, FamilySpec

DEFAULT_K = 2
BUDGET_BY = ("params", "gmacs", "pretrain")
BUDGET_BY_ALIASES = {"flops": "gmacs"}  # the old name of gmacs (the registry's numbers are multiply-accumulates)
STRATEGIES: tuple[str, ...] = ("smallest", "same-arch", "budget", "explicit")
CONTROL_ROLES = {"width-pca": "pca", "width-random": "random"}  # role -> projection (probes/projection.py)


@dataclass(frozen=True)
class Comparison:
    """One model or ensemble as the probes see it.

    ``concat``: members' features side by side, every column standardized as a single
    model's (train statistics for the sweep, train+val for the refit) and each member's block
    scaled by 1/sqrt(its width), so every member weighs the same whatever its feature dimension. ``average``: one probe per member, class
    probabilities averaged (output averaging).
    """

    name: str
    role: Literal["baseline", "member", "ensemble", "ensemble-avg", "width-pca", "width-random"]
    members: tuple[CheckpointSpec, ...]
    combine: Literal["single", "concat", "average"]
    # A width-matched control (issue 19): the concatenation projected to ``width_of``'s feature width by
    # ``project`` ("pca" or "random", :mod:`zoo_survey.probes.projection`); "" for every other comparison.
    project: str = ""
    width_of: CheckpointSpec | None = None

    @property
    def params_m(self) -> float:
        return sum(m.params_m for m in self.members)

    @property
    def gmacs(self) -> float:
        return sum(m.gmacs for m in self.members)


@dataclass(frozen=True)
class Plan:
    family: str
    strategy: str
    baseline: Comparison
    ensemble: Comparison
    comparisons: tuple[Comparison, ...]
    budget_by: str | None = None  # what strategy 'budget' matched: params, gmacs or pretrain
    kind: str = ""  # the family's pretraining kind, as its YAML states it

    @property
    def checkpoints(self) -> tuple[CheckpointSpec, ...]:
        """Every checkpoint whose features the plan needs, each once, baseline first."""
        seen: dict[str, CheckpointSpec] = {}
        for c in self.comparisons:
            for m in c.members:
                seen.setdefault(m.id, m)
        return tuple(seen.values())


def _single(spec: CheckpointSpec, role: Literal["baseline", "member"]) -> Comparison:
    return Comparison(spec.id, role, (spec,), "single")


def plan_family(
    family: FamilySpec,
    k: int | None = None,
    strategy: str | None = None,
    against: str | None = None,
    members: Sequence[str] | str | None = None,
    budget_by: str = "params",
    allow_same_lineage: bool = False,
) -> Plan:
    """Choose the baseline and K ensemble members of ``family``; every check of K and the members is here.

    ``k`` defaults to the number of ``members`` when they are given, else 2. ``strategy``
    defaults to ``explicit`` with members and ``smallest`` without; members with another
    strategy are refused rather than silently overriding it.

    >>> plan = plan_family(reg.family("efficientnet-lite"), k=2)   # doctest: +SKIP
    >>> [m.id for m in plan.ensemble.members]                       # doctest: +SKIP
    ['tf_efficientnet_lite0.pypi', 'tf_efficientnet_lite1.pypi']
    """
    if strategy is not None and strategy not in STRATEGIES:
        raise unknown("ensemble strategy", strategy, STRATEGIES)
    budget_by = BUDGET_BY_ALIASES.get(budget_by, budget_by)
    if budget_by not in BUDGET_BY:
        raise unknown("'budget_by' value", budget_by, BUDGET_BY, param="budget_by")
    if members is not None and strategy not in (None, "explicit"):
        raise ZooSurveyError(
            f"'members' names the ensemble, but strategy={strategy!r} chooses it; drop one of them "
            "(with 'members' the strategy is 'explicit')", param=("members", "strategy")
        )
    if members is None and strategy == "explicit":
        raise ZooSurveyError("strategy 'explicit' needs members='a,b,c' or the name of an ensemble in the family YAML",
                             param="members")
    strategy = strategy or ("explicit" if members is not None else "smallest")
    named = _member_ids(family, members) if members is not None else None
    if named is not None and not named:
        raise ZooSurveyError("'members' is empty; name checkpoints a,b,c or an ensemble of the family YAML", param="members")
    if k is None:
        k = len(named) if named is not None else DEFAULT_K
    if k < 1:
        raise ZooSurveyError(f"'ensemble' must be at least 1 (the number of ensemble members), got {k}", param="ensemble")
    if named is not None and len(named) != k:
        raise ZooSurveyError(f"ensemble={k} but 'members' names {len(named)} checkpoints; make them agree",
                             param=("ensemble", "members"))
    ids = [c.id for c in family.checkpoints]
    base_id = against or family.baseline or max(family.checkpoints, key=lambda c: (c.params_m, c.gmacs)).id
    if base_id not in ids:
        raise unknown(f"'against' checkpoint in family {family.name!r}:", base_id, ids, param="against")
    baseline = family.get(base_id)
    pool = [c for c in family.checkpoints if c.id != base_id]
    fail = f"family {family.name!r} cannot supply an ensemble of {k} with strategy {strategy!r}"
    distinct = (lambda cs: True) if allow_same_lineage else _distinct_lineages
    lineages = len({c.lineage for c in pool})

    if named is not None:
        chosen = _explicit(family, named, baseline)
        if not distinct(chosen):
            raise ZooSurveyError(
                f"'members': {_shared(chosen)}: fine-tunes of one pretraining run are not independent members; "
                "choose members of other lineages (zoo-survey registry list shows them), or pass allow_same_lineage=True",
                param=("members", "allow_same_lineage"),
            )
    elif not pool:
        raise ZooSurveyError(
            f"family {family.name!r} has one checkpoint, {base_id!r}: a run sets a baseline against an ensemble of "
            f"others; add more to the family (zoo-survey registry add TAG --family {family.name} --to FILE)"
        )
    elif len(pool) < k:
        raise ZooSurveyError(
            f"ensemble={k} is larger than family {family.name!r} allows: it has {len(pool)} checkpoint(s) "
            f"besides the baseline {base_id!r}; use ensemble={len(pool)} or less", param="ensemble"
        )
    elif not allow_same_lineage and lineages < k:
        raise ZooSurveyError(
            f"{fail}: its {len(pool)} checkpoints besides the baseline come from {lineages} pretraining run(s) "
            f"(lineages), and members must be independent; use ensemble={lineages} or less, or pass allow_same_lineage=True",
            param=("ensemble", "allow_same_lineage"),
        )
    elif strategy == "smallest":
        chosen = _first_distinct(sorted(pool, key=lambda c: (c.params_m, c.gmacs, c.id)), k, allow_same_lineage)
    elif strategy == "same-arch":
        by_arch: dict[str, list[CheckpointSpec]] = {}
        for c in pool if allow_same_lineage else _first_distinct(sorted(pool, key=lambda c: c.id), len(pool), False):
            by_arch.setdefault(c.arch, []).append(c)
        ok = {a: cs for a, cs in by_arch.items() if len(cs) >= k}
        if not ok:
            most = max(by_arch.items(), key=lambda kv: len(kv[1]))
            raise ZooSurveyError(
                f"{fail}: no architecture has {k} checkpoints {'' if allow_same_lineage else 'of distinct lineages '}"
                f"besides the baseline (the most is {len(most[1])}, {most[0]!r}); lower 'ensemble' or add recipes of one "
                "architecture to the registry", param="ensemble"
            )
        arch = max(ok, key=lambda a: (max(c.params_m for c in ok[a]), a))
        chosen = sorted(ok[arch], key=lambda c: c.id)[:k]
    else:  # budget
        cost = budget_cost(budget_by, [baseline, *pool], family.name)
        limit = cost(baseline)
        best = max(
            (combo for combo in itertools.combinations(pool, k) if within_budget(sum(map(cost, combo)), limit) and distinct(combo)),
            key=lambda combo: (sum(map(cost, combo)), [c.id for c in combo]),
            default=None,
        )
        if best is None:
            cheapest = sum(map(cost, _first_distinct(sorted(pool, key=cost), k, allow_same_lineage)))
            raise ZooSurveyError(
                f"{fail}: the {k} cheapest members need {cheapest:.3g} {budget_by} but the baseline "
                f"{base_id!r} has {limit:.3g}; lower 'ensemble' or choose a larger 'against'", param=("ensemble", "against")
            )
        chosen = sorted(best, key=lambda c: (c.params_m, c.id))
    name = "+".join(c.id for c in chosen)
    ensemble = Comparison(name, "ensemble", tuple(chosen), "concat")
    averaged = Comparison(f"avg({name})", "ensemble-avg", tuple(chosen), "average")
    base = _single(baseline, "baseline")
    controls = tuple(Comparison(f"{how}({name})", role, tuple(chosen), "concat", how,  # type: ignore[arg-type]
                                baseline)
                     for role, how in CONTROL_ROLES.items()) if len(chosen) > 1 else ()
    comparisons = (base, *(_single(c, "member") for c in chosen), ensemble, averaged, *controls)
    return Plan(family.name, strategy, base, ensemble, comparisons, budget_by if strategy == "budget" else None,
                kind=family.kind or "")


def budget_cost(by: str, entries: Sequence[CheckpointSpec], family: str) -> Callable[[CheckpointSpec], float]:
    """What ``--budget-by`` sums: params (M), GMACs, or pretraining compute (``pretrain_emacs``); for the last,
    every entry must state ``pretrain.epochs`` and ``pretrain.images``, and those that do not are named."""
    if by == "params":
        return lambda c: c.params_m
    if by == "gmacs":
        return lambda c: c.gmacs
    missing = [c for c in entries if c.pretrain_emacs is None]
    if missing:
        names = ", ".join(f"{c.id} ({c.defined_in.name})" for c in missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise ZooSurveyError(
            f"budget_by='pretrain' needs pretrain.images_seen, or pretrain.epochs and pretrain.images, for every "
            f"checkpoint it weighs; family {family!r} lacks them for {len(missing)}: {names}; add them to the registry "
            "YAML or budget by params or gmacs", param="budget_by"
        )
    return lambda c: c.pretrain_emacs or 0.0


def _distinct_lineages(members: Sequence[CheckpointSpec]) -> bool:
    return len({m.lineage for m in members}) == len(members)


def _shared(members: Sequence[CheckpointSpec]) -> str:
    """The members that share a lineage, named: ``'a' and 'b' both descend from run X``."""
    by: dict[str, list[str]] = {}
    for m in members:
        by.setdefault(m.lineage, []).append(m.id)
    return "; ".join(f"{' and '.join(map(repr, ids))} both descend from {lin!r}" for lin, ids in by.items() if len(ids) > 1)


def _first_distinct(ordered: Sequence[CheckpointSpec], k: int, allow_same_lineage: bool) -> list[CheckpointSpec]:
    """The first ``k`` of ``ordered``, skipping any whose lineage an earlier one has (unless allowed)."""
    out: list[CheckpointSpec] = []
    for c in ordered:
        if allow_same_lineage or c.lineage not in {m.lineage for m in out}:
            out.append(c)
    return out[:k]


def _member_ids(family: FamilySpec, members: Sequence[str] | str) -> list[str]:
    """``--members``: a named ensemble of the family YAML, or comma-separated ids."""
    if isinstance(members, str):
        if members in family.ensembles:
            return list(family.ensembles[members])
        return [m.strip() for m in members.split(",") if m.strip()]
    return list(members)


def _explicit(family: FamilySpec, members: list[str], baseline: CheckpointSpec) -> list[CheckpointSpec]:
    if len(set(members)) != len(members):
        raise ZooSurveyError(f"'members' names a checkpoint twice: {shown(list(members))}", param="members")
    chosen = [family.get(m) for m in members]
    if baseline.id in members:
        raise ZooSurveyError(f"'members' includes the baseline {baseline.id!r}; choose another 'against'",
                             param=("members", "against"))
    return chosen
