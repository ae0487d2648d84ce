"""Option resolution in one library function, and the ensemble size and members checked in one place."""

from __future__ import annotations

import pytest

from zoo_survey.errors import ZooSurveyError
from zoo_survey.survey.options import CPU_LIMITS, parse_list, resolve_options
from zoo_survey.survey.plan import plan_family
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry

LITE = load_registry([SHIPPED_REGISTRY]).family("efficientnet-lite")


def test_a_cpu_run_takes_the_cpu_limits_for_what_is_unset():
    opts = resolve_options(device="cpu", max_test=300)
    assert (opts.image_size, opts.max_train, opts.max_test) == (CPU_LIMITS["image_size"], CPU_LIMITS["max_train"], 300)
    assert dict(opts.cpu_limits) == {"image_size": 96, "max_train": 2000}  # what the run says it applied
    assert opts.extract.device == "cpu" and opts.extract.batch_size == 16


def test_full_lifts_the_cpu_limits():
    opts = resolve_options(device="cpu", full=True)
    assert (opts.image_size, opts.max_train, opts.max_test, dict(opts.cpu_limits)) == (None, None, None, {})


def test_probe_options_reach_the_probe_config():
    opts = resolve_options(device="cpu", probes=["linear", "fewshot", "linear"], grid=[1, 0.1], shots=[5, 1, 5], seeds=3)
    assert opts.probes == ("linear", "fewshot")
    cfg = opts.probe_config
    assert (cfg.grid, cfg.shots, cfg.seeds, cfg.device) == ((1.0, 0.1), (1, 5), 3, "cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probes": ["linaer"]}, r"unknown probe 'linaer'; did you mean 'linear'"),
        ({"probes": []}, r"'probes' is empty"),
        ({"grid": [1.0, -1.0]}, r"'grid' values must be positive"),
        ({"shots": [0, 5]}, r"'shots' values must be at least 1"),
        ({"seeds": 0}, r"'seeds' must be at least 1"),
        ({"device": "tpu"}, r"'device' 'tpu': expected auto, cpu, cuda or cuda:N"),
        ({"dtype": "bfloat16"}, r"dtype='bfloat16' needs a CUDA device"),
        ({"feature_output": "cls"}, r"'feature_output' must be one of entry, pre_logits, head, cls_patch_mean, avg, max"),
        ({"workers": -1}, r"'workers' must be 0 or more"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ZooSurveyError, match=message):
        resolve_options(**{"device": "cpu", **kwargs})


def test_a_cap_of_zero_is_kept_for_the_dataset_to_refuse_not_read_as_no_cap():
    opts = resolve_options(device="cpu", max_train=0, max_test=0)
    assert (opts.max_train, opts.max_test) == (0, 0)  # prepare() then says "'max_train' must be at least 2, got 0"


def test_parse_list_names_the_flag():
    assert parse_list("0.1, 1,", "grid", float) == [0.1, 1.0]
    with pytest.raises(ZooSurveyError, match=r"'shots' must be comma-separated ints like 1,5,10; got 'a,b'") as e:
        parse_list("a,b", "shots", int)
    assert e.value.param == "shots"


def test_the_ensemble_size_defaults_to_the_members_named():
    plan = plan_family(LITE, members="lite01")
    assert plan.strategy == "explicit" and len(plan.ensemble.members) == 2
    assert len(plan_family(LITE).ensemble.members) == 2 and plan_family(LITE).strategy == "smallest"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 3, "members": "lite01"}, r"ensemble=3 but 'members' names 2 checkpoints; make them agree"),
        ({"strategy": "budget", "members": "lite01"}, r"'members' names the ensemble, but strategy='budget' chooses it"),
        ({"strategy": "explicit"}, r"strategy 'explicit' needs members="),
        ({"members": ","}, r"'members' is empty"),
        ({"members": "tf_efficientnet_lite0.pypi,tf_efficientnet_lite0.pypi"}, r"'members' names a checkpoint twice"),
    ],
)
def test_members_and_size_are_checked_in_the_plan(kwargs, message):
    with pytest.raises(ZooSurveyError, match=message):
        plan_family(LITE, **kwargs)


def test_device_auto_asks_torch_only_where_a_gpu_driver_is(monkeypatch):
    """'cpu' asks nothing; 'auto' without a GPU driver is 'cpu' without importing torch; with one, torch decides."""
    import zoo_survey.features.extract as ex

    asked: list[bool] = []
    monkeypatch.setattr(ex, "_torch_sees_cuda", lambda: asked.append(True) or True)
    monkeypatch.setattr(ex, "_gpu_driver_present", lambda: False)
    assert ex.resolve_device("auto") == "cpu" and ex.resolve_device("cpu") == "cpu" and asked == []
    with pytest.raises(ZooSurveyError, match="no CUDA GPU"):
        ex.resolve_device("cuda")
    monkeypatch.setattr(ex, "_gpu_driver_present", lambda: True)
    assert ex.resolve_device("auto") == "cuda" and asked == [True]
    assert ex.resolve_device("cpu") == "cpu" and ex.resolve_device("auto", cuda=False) == "cpu" and len(asked) == 1
