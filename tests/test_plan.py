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
    assert [c.role for c in plan.comparisons] == ["baseline", "member", "member", "ensemble", "ensemble-avg",
                                                  "width-pca", "width-random"]
    assert [c.combine for c in plan.comparisons[3:]] == ["concat", "average", "concat", "concat"]
    # the width-matched controls: the ensemble's members, projected to the baseline's width
    assert [(c.project, c.width_of, c.members) for c in plan.comparisons[-2:]] == [
        ("pca", plan.baseline.members[0], plan.ensemble.members), ("random", plan.baseline.members[0], plan.ensemble.members)]
    assert [c.role for c in plan_family(REG.family("efficientnet-lite"), 1).comparisons] == [
        "baseline", "member", "ensemble", "ensemble-avg"]  # one member: nothing to project
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
    gmacs = plan_family(fam, 2, "budget", budget_by="gmacs")
    assert gmacs.ensemble.gmacs <= gmacs.baseline.gmacs and gmacs.budget_by == "gmacs"
    assert plan_family(fam, 2, "budget", budget_by="flops") == gmacs  # 'flops': the old name, kept as an alias


def test_explicit_members_and_named_ensembles():
    fam = REG.family("resnet")
    plan = plan_family(fam, 4, members="rsb4")
    assert [m.id for m in plan.ensemble.members] == list(fam.ensembles["rsb4"])
    plan = plan_family(fam, 2, members="resnet18.a1_in1k,resnet34.a1_in1k", against="resnet50.a1_in1k")
    assert plan.baseline.name == "resnet50.a1_in1k" and plan.strategy == "explicit"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, r"'ensemble' must be at least 1"),
        ({"k": 3}, r"ensemble=3 is larger than family 'efficientnet-lite' allows: it has 2 checkpoint\(s\) besides the baseline"),
        ({"k": 2, "strategy": "same-arch"}, r"cannot supply an ensemble of 2 with strategy 'same-arch': no architecture has 2"),
        ({"k": 2, "strategy": "budget"}, r"cannot supply an ensemble of 2 with strategy 'budget': the 2 cheapest members need"),
        ({"k": 2, "strategy": "random"}, r"unknown ensemble strategy 'random'"),
        ({"k": 2, "members": "tf_efficientnet_lite0.pypi,nope.x"}, r"unknown checkpoint in family 'efficientnet-lite' 'nope.x'"),
        ({"k": 2, "against": "lite9"}, r"unknown 'against' checkpoint"),
    ],
)
def test_plan_errors(kwargs, message):
    with pytest.raises(ZooSurveyError, match=message):
        plan_family(REG.family("efficientnet-lite"), **kwargs)


def test_budget_by_pretraining_compute(tmp_path):
    from conftest import write_family

    from zoo_survey.zoo.registry import load_registry as load

    write_family(tmp_path, "p", """
        family: p
        defaults: {pretrain: {data: imagenet-1k, images: 1281167}, feature_dim: 8}
        checkpoints:
          - {id: test_resnet.big, source: {type: timm}, params_m: 20, gmacs: 4, pretrain: {epochs: 300}}
          - {id: test_resnet.long, source: {type: timm}, params_m: 9, gmacs: 1, pretrain: {epochs: 1200}}
          - {id: test_resnet.short1, source: {type: timm}, params_m: 5, gmacs: 1, pretrain: {epochs: 100}}
          - {id: test_resnet.short2, source: {type: timm}, params_m: 5, gmacs: 1, pretrain: {epochs: 100}}
        """)
    fam = load([tmp_path]).family("p")
    assert fam.get("test_resnet.big").pretrain_emacs == pytest.approx(300 * 1281167 * 4 * 3 / 1e9)
    by_params = plan_family(fam, 2, "budget")  # params: long (9 M) + a short (5 M) fit in 20 M
    by_pretrain = plan_family(fam, 2, "budget", budget_by="pretrain")  # long alone costs 1200 x 1 = big's 300 x 4
    assert {m.id for m in by_pretrain.ensemble.members} == {"test_resnet.short1", "test_resnet.short2"}
    assert "test_resnet.long" in {m.id for m in by_params.ensemble.members} and by_pretrain.budget_by == "pretrain"


def test_budget_by_pretrain_names_the_entries_without_the_fields():
    with pytest.raises(ZooSurveyError, match=r"budget_by='pretrain' needs pretrain.images_seen, or pretrain.epochs and pretrain.images, .* "
                                             r"tf_efficientnet_lite2.pypi \(efficientnet-lite.yaml\)"):
        plan_family(REG.family("efficientnet-lite"), 1, "budget", budget_by="pretrain")


def test_budget_by_images_seen_fits_k_equal_shares_exactly(tmp_path):
    """k members of 1/k of the images each: the same compute as the single in exact arithmetic, and the budget
    strategy takes them although their float sum can exceed the single's (0.1 x 10 > 1.0 in floating point)."""
    from conftest import write_family

    from zoo_survey.zoo.registry import load_registry as load

    members = "\n".join(f"  - {{id: test_resnet.m{i}, pretrain: {{images_seen: 1, seed: {i}}}}}" for i in range(10))
    write_family(tmp_path, "seen", f"""
defaults: {{source: {{type: timm}}, params_m: 1, gmacs: 0.1, feature_dim: 8}}
family: seen
checkpoints:
  - {{id: test_resnet.single, gmacs: 1.0, pretrain: {{images_seen: 1, steps: 10, seed: 99}}}}
{members}
""")
    fam = load([tmp_path]).family("seen")
    single = fam.get("test_resnet.single")
    assert single.pretrain_emacs == pytest.approx(3e-9) and single.pretrain.steps == 10
    assert sum(fam.get(f"test_resnet.m{i}").pretrain_emacs for i in range(10)) > single.pretrain_emacs  # rounding
    plan = plan_family(fam, 10, "budget", budget_by="pretrain")
    assert len(plan.ensemble.members) == 10
