"""Independent members: every strategy, on every shipped family, picks members of distinct lineages (the
pretraining run they descend from), or says clearly why it cannot; --allow-same-lineage lifts the rule."""

from __future__ import annotations

import pytest
import yaml
from conftest import write_family

from zoo_survey.errors import ZooSurveyError
from zoo_survey.survey.plan import STRATEGIES, plan_family
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_files, load_registry

REG = load_registry([SHIPPED_REGISTRY])
SHIPPED_FAMILIES = sorted(REG.families)


def test_every_shipped_entry_states_its_lineage():
    """Each shipped entry's YAML names its lineage: none falls back to the default (its own id) unstated."""
    for path in sorted((SHIPPED_REGISTRY / "models").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for raw in doc.get("checkpoints", []):
            assert "lineage" in raw or "lineage" in doc.get("defaults", {}), (path.name, raw["id"])
    assert REG.checkpoint("vit_tiny_patch16_384.augreg_in21k_ft_in1k").lineage == "vit_tiny_patch16.augreg_in21k"
    assert REG.checkpoint("vit_base_patch16_224.augreg2_in21k_ft_in1k").lineage == "vit_base_patch16.augreg_in21k"


@pytest.mark.parametrize("family", SHIPPED_FAMILIES)
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "explicit"])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_every_strategy_picks_distinct_lineages(family, strategy, k):
    fam = REG.family(family)
    try:
        plan = plan_family(fam, k, strategy)
    except ZooSurveyError as e:  # a family that cannot supply K says why, in one line
        assert "\n" not in str(e) and ("lineage" in str(e) or "checkpoint" in str(e) or "cheapest" in str(e)), str(e)
        return
    members = plan.ensemble.members
    assert len(members) == k and len({m.lineage for m in members}) == k
    assert plan.baseline.members[0] not in members


@pytest.mark.parametrize("family", SHIPPED_FAMILIES)
def test_every_named_ensemble_holds_distinct_lineages(family):
    fam = REG.family(family)
    for name, ids in fam.ensembles.items():
        plan = plan_family(fam, members=name)
        assert len({m.lineage for m in plan.ensemble.members}) == len(ids), name


def test_vit_ensemble_of_4_is_four_pretraining_runs():
    fam = REG.family("vit")
    plan = plan_family(fam, 4)
    assert [m.id for m in plan.ensemble.members] == [
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224.augreg_in1k",
        "vit_small_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch32_224.augreg_in21k_ft_in1k",
    ]
    # What it picked before lineages: one ImageNet-21k run fine-tuned at 224 and at 384 px.
    allowed = plan_family(fam, 4, allow_same_lineage=True)
    assert [m.id for m in allowed.ensemble.members][:2] == [
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_tiny_patch16_384.augreg_in21k_ft_in1k"]
    budget = plan_family(fam, 4, "budget", allow_same_lineage=True)
    assert len({m.lineage for m in budget.ensemble.members}) < 4  # the 224 / 384 pairs of vit_base_patch32
    assert len({m.lineage for m in plan_family(fam, 4, "budget").ensemble.members}) == 4


def test_explicit_members_of_one_run_are_refused_unless_allowed():
    fam = REG.family("vit")
    pair = "vit_tiny_patch16_224.augreg_in21k_ft_in1k,vit_tiny_patch16_384.augreg_in21k_ft_in1k"
    with pytest.raises(ZooSurveyError, match=r"'vit_tiny_patch16_224.augreg_in21k_ft_in1k' and "
                                             r"'vit_tiny_patch16_384.augreg_in21k_ft_in1k' both descend from "
                                             r"'vit_tiny_patch16.augreg_in21k'.*allow_same_lineage=True"):
        plan_family(fam, members=pair)
    assert len(plan_family(fam, members=pair, allow_same_lineage=True).ensemble.members) == 2


def test_too_few_lineages_is_said_with_the_count(tmp_path):
    fam = REG.family("dinov2")  # two teachers: S/B/L distilled from each ViT-g
    with pytest.raises(ZooSurveyError, match=r"come from 2 pretraining run\(s\) \(lineages\).*ensemble=2 or less"):
        plan_family(fam, 3)
    assert len(plan_family(fam, 3, allow_same_lineage=True).ensemble.members) == 3


def test_an_entry_without_lineage_is_a_run_of_its_own(tmp_path):
    path = write_family(tmp_path, "mine", """
        family: mine
        checkpoints:
          - {id: resnet18.seed0, source: {type: timm, tag: resnet18.a1_in1k}, params_m: 11.69, gmacs: 1.81, feature_dim: 512}
          - {id: resnet18.seed1, source: {type: timm, tag: resnet18.a1_in1k}, params_m: 11.69, gmacs: 1.81, feature_dim: 512}
          - {id: resnet34.mine, source: {type: timm, tag: resnet34.a1_in1k}, params_m: 21.8, gmacs: 3.66, feature_dim: 512,
             lineage: resnet18.seed1}
        """)
    fam = load_files([path]).family("mine")
    assert [c.lineage for c in fam.checkpoints] == ["resnet18.seed0", "resnet18.seed1", "resnet18.seed1"]
    assert [m.id for m in plan_family(fam, 2, against="resnet34.mine").ensemble.members] == ["resnet18.seed0", "resnet18.seed1"]
    with pytest.raises(ZooSurveyError, match="both descend from 'resnet18.seed1'"):
        plan_family(fam, members="resnet18.seed1,resnet34.mine", against="resnet18.seed0")
