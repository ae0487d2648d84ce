"""Plan: member strategies, the baseline, and clear errors when a family cannot supply K."""

from __future__ import annotations

import pytest

from zoo_survey.errors import ZooSurveyError
from zoo_survey.survey.plan import plan_family
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry

REG = load_registry([SHIPPED_REGISTRY])


def test_default_is_largest_baseline_against_the_k_smallest():
    plan = plan_family(REG.family("efficientnet-lite"), 2)
    assert plan.baseline.name == "tf_efficientnet_lite2.pypi"
    assert [m.id for m in plan.ensemble.members] == ["tf_efficientnet_lite0.pypi", "tf_efficientnet_lite1.pypi"]
    assert [c.role for c in plan.comparisons] == ["baseline", "member", "member", "ensemble", "ensemble-avg"]
    assert [c.combine for c in plan.comparisons[-2:]] == ["concat", "average"]
    assert sum(m.feature_dim for m in plan.ensemble.members) == 2560
    assert plan.ensemble.params_m == pytest.approx(4.65 + 5.42)


def test_same_arch_picks_recipes_of_one_architecture():
    plan = plan_family(REG.family("resnet"), 4, "same-arch")
    assert {m.arch for m in plan.ensemble.members} == {"resnet50"}
    assert len({m.id for m in plan.ensemble.members}) == 4


@pytest.mark.parametrize("family", ["resnet", "vit", "convnext"])
def test_budget_stays_within_the_baseline(family):
    fam = REG.family(family)
    plan = plan_family(fam, 2, "budget")
    assert plan.ensemble.params_m <= plan.baseline.params_m
    flops = plan_family(fam, 2, "budget", budget_by="flops")
    assert flops.ensemble.gflops <= flops.baseline.gflops


def test_explicit_members_and_named_ensembles():
    fam = REG.family("resnet")
    plan = plan_family(fam, 4, members="rsb4")
    assert [m.id for m in plan.ensemble.members] == list(fam.ensembles["rsb4"])
    plan = plan_family(fam, 2, members="resnet18.a1_in1k,resnet34.a1_in1k", against="resnet50.a1_in1k")
    assert plan.baseline.name == "resnet50.a1_in1k" and plan.strategy == "explicit"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, r"--ensemble must be at least 1"),
        ({"k": 3}, r"--ensemble 3 is larger than family 'efficientnet-lite' allows: it has 2 checkpoint\(s\) besides the baseline"),
        ({"k": 2, "strategy": "same-arch"}, r"cannot supply an ensemble of 2 with strategy 'same-arch': no architecture has 2"),
        ({"k": 2, "strategy": "budget"}, r"cannot supply an ensemble of 2 with strategy 'budget': the 2 cheapest members need"),
        ({"k": 2, "strategy": "random"}, r"unknown ensemble strategy 'random'"),
        ({"k": 2, "members": "tf_efficientnet_lite0.pypi,nope.x"}, r"unknown checkpoint in family 'efficientnet-lite' 'nope.x'"),
        ({"k": 2, "against": "lite9"}, r"unknown --against checkpoint"),
    ],
)
def test_plan_errors(kwargs, message):
    with pytest.raises(ZooSurveyError, match=message):
        plan_family(REG.family("efficientnet-lite"), **kwargs)
