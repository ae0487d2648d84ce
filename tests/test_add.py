"""`registry add`: entries for timm tags, counted offline, written into a fresh or a commented family file
(existing lines kept byte for byte), unknown tags refused with close matches, and the whole flow from an
added tag to an offline run."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from test_cli import zoo

from zoo_survey.errors import ZooSurveyError
from zoo_survey.zoo.add import add_tags, entry_for, lineage, pretrain_info, resolve_tags
from zoo_survey.zoo.budgets import count, pretrained_cfg
from zoo_survey.zoo.registry import load_files


@pytest.mark.parametrize(("tag", "run"), [
    ("vit_base_patch16_384.augreg_in21k_ft_in1k", "vit_base_patch16.augreg_in21k"),   # 384 px fine-tune of the 21k run
    ("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit_base_patch16.augreg_in21k"),
    ("vit_large_patch14_clip_quickgelu_336.openai", "vit_large_patch14_clip.openai"),  # same weights, other activation
    ("swin_base_patch4_window12_384.ms_in22k_ft_in1k", "swin_base_patch4.ms_in22k"),
    ("convnextv2_tiny.fcmae_ft_in22k_in1k_384", "convnextv2_tiny.fcmae"),
    ("regnety_320.seer_ft_in1k", "regnety_320.seer"),                                  # 320 is a width, not a size
    ("regnety_160.swag_lc_in1k", "regnety_160.swag"),
    ("vit_base_patch16_siglip_gap_384.webli", "vit_base_patch16_siglip.webli"),
    ("resnet50.a1_in1k", "resnet50.a1_in1k"),
    ("test_resnet.r160_in1k", "test_resnet.r160_in1k"),
])
def test_lineage_is_read_off_the_tag(tag, run):
    assert lineage(tag) == run


def test_pretraining_as_timm_states_it():
    info = pretrain_info("convnextv2_atto.fcmae_ft_in1k", pretrained_cfg("convnextv2_atto.fcmae_ft_in1k"))
    assert info["data"] == "imagenet-1k"
    assert info["recipe"].startswith("timm tag fcmae_ft_in1k: fcmae, then fine-tuned on imagenet-1k; ConvNeXt V2")
    assert "arXiv:2301.00808" in info["recipe"]
    long = pretrain_info("efficientnet_b0.ra4_e3600_r224_in1k", pretrained_cfg("efficientnet_b0.ra4_e3600_r224_in1k"))
    assert long["epochs"] == 3600
    assert pretrain_info("vit_base_patch16_224.augreg_in21k_ft_in1k", {})["data"] == "imagenet-21k"


def test_an_entry_is_filled_from_timm_and_counted():
    e = entry_for("test_resnet.r160_in1k")
    b = count("test_resnet", 160, tag="test_resnet.r160_in1k")
    assert e["source"] == {"type": "hf-hub", "repo": "timm/test_resnet.r160_in1k"}
    assert (e["params_m"], e["gmacs"], e["feature_dim"], e["input_size"]) == (b.params_m, b.gmacs, b.feature_dim, 160)
    cfg = pretrained_cfg("test_resnet.r160_in1k")
    assert e["preprocess"]["crop_pct"] == cfg["crop_pct"] and e["preprocess"]["mean"] == list(cfg["mean"])
    # CLIP's quickgelu tags read the plain tag's weights: a timm source, which finds them through timm's config.
    assert entry_for("vit_base_patch16_clip_quickgelu_224.openai")["source"] == {"type": "timm"}


def test_unknown_tags_are_refused_with_close_matches():
    with pytest.raises(ZooSurveyError, match=r"no pretrained tag 'test_resnt.r160_in1k'; did you mean 'test_resnet.r160_in1k'"):
        resolve_tags(["test_resnt.r160_in1k"])
    with pytest.raises(ZooSurveyError, match=r"no timm .* pretrained tag matches 'nothing_like_this_\*'"):
        resolve_tags([], "nothing_like_this_*")
    with pytest.raises(ZooSurveyError, match="has its weights only at"):
        entry_for("gcvit_tiny.in1k")  # timm has no hub copy of these weights
    assert resolve_tags(["test_resnet"]) == ["test_resnet.r160_in1k"]  # an architecture alone: its default tag


def test_adds_to_a_fresh_file(tmp_path):
    path = tmp_path / "my" / "tiny.yaml"
    result = add_tags([], "tiny", path, pattern="test_vit*.r160_in1k")
    assert result.created and sorted(result.added) == ["test_vit.r160_in1k", "test_vit2.r160_in1k", "test_vit3.r160_in1k"]
    fam = load_files([path]).family("tiny")
    assert [c.id for c in fam.checkpoints] == result.added
    vit = fam.get("test_vit.r160_in1k")  # lineage and pretraining read off the tag
    assert vit.lineage == "test_vit.r160_in1k" and vit.pretrain.data == "imagenet-1k" and vit.source.type == "hf-hub"
    again = add_tags(["test_vit.r160_in1k", "test_resnet.r160_in1k"], "tiny", path)
    assert again.skipped == ["test_vit.r160_in1k"] and again.added == ["test_resnet.r160_in1k"]
    assert [c.id for c in load_files([path]).family("tiny").checkpoints][-1] == "test_resnet.r160_in1k"


COMMENTED = textwrap.dedent("""\
    # My tiny models: hand-written, with comments that must survive.
    family: tiny   # trailing comment
    description: two test models
    defaults:
      pretrain: &mine {data: random-init}   # an anchor
    checkpoints:
        # the first one, indented four
        -   {id: test_convnext.r160_in1k, source: {type: hf-hub, repo: timm/test_convnext.r160_in1k},
             params_m: 0.27, gmacs: 0.0776, input_size: 160, feature_dim: 32, pretrain: *mine}
        # a comment after the last entry stays with the list

    # the ensembles, a top-level comment
    ensembles:
      one: [test_convnext.r160_in1k]
    """)


def test_adds_to_a_commented_file_keeping_every_line(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(COMMENTED)
    result = add_tags(["test_resnet.r160_in1k", "test_vit.r160_in1k"], "tiny", path)
    assert result.added == ["test_resnet.r160_in1k", "test_vit.r160_in1k"] and not result.created
    text = path.read_text()
    old, new = COMMENTED.splitlines(), text.splitlines()
    # Every original line is there, unchanged and in order; the new ones sit between the list and the ensembles.
    at = new.index("    # a comment after the last entry stays with the list")
    assert new[: at + 1] == old[: at + 1] and new[-4:] == old[-4:]
    assert new[at + 1].startswith("    # added by zoo-survey registry add") and new[at + 2] == "    - id: test_resnet.r160_in1k"
    fam = load_files([path]).family("tiny")
    assert [c.id for c in fam.checkpoints] == ["test_convnext.r160_in1k", "test_resnet.r160_in1k", "test_vit.r160_in1k"]
    assert fam.get("test_resnet.r160_in1k").pretrain.data == "imagenet-1k"  # the entry's own wins over the file's defaults
    assert dict(fam.ensembles) == {"one": ("test_convnext.r160_in1k",)}
    assert yaml.safe_load(text)["checkpoints"][1]["lineage"] == "test_resnet.r160_in1k"


def test_a_bad_target_is_refused_with_nothing_written(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(COMMENTED)
    with pytest.raises(ZooSurveyError, match=r"holds family 'tiny', not 'other'; give family='tiny'"):
        add_tags(["test_resnet.r160_in1k"], "other", path)
    path.write_text(COMMENTED.replace("ensembles:\n  one:", "ensembles:\n  one: [test_resnet.r160_in1k]\n  two:"))
    broken = path.read_text()
    with pytest.raises(ZooSurveyError, match=r"unknown member of ensemble 'one' in family 'tiny'"):
        add_tags(["test_vit.r160_in1k"], "tiny", path)  # the result would not load: nothing is written
    assert path.read_text() == broken and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # no temp file left


def test_a_tag_another_family_defines_is_included(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(COMMENTED)
    result = add_tags(["resnet18.a1_in1k", "test_resnet.r160_in1k"], "tiny", path)  # resnet18.a1_in1k is shipped
    assert (result.included, result.added) == (["resnet18.a1_in1k"], ["test_resnet.r160_in1k"])
    text = path.read_text()
    assert "include:\n  - resnet18.a1_in1k   # defined in family 'resnet'\ncheckpoints:" in text
    assert [ln for ln in text.splitlines() if not ln.startswith("include:") and "resnet18.a1_in1k" not in ln][:8] == \
        COMMENTED.splitlines()[:8]
    fam = load_files([path, *load_files_shipped()]).family("tiny")
    shipped = fam.get("resnet18.a1_in1k")
    assert shipped.family == "resnet" and shipped.lineage == "resnet18.a1_in1k"  # the shipped entry itself
    assert add_tags(["resnet18.a1_in1k"], "tiny", path).skipped == ["resnet18.a1_in1k"]


def load_files_shipped():
    from zoo_survey.zoo.registry import SHIPPED_REGISTRY, registry_files

    return registry_files([SHIPPED_REGISTRY])


def test_add_validate_run_offline_from_a_tag(tmp_path, monkeypatch, capsys):
    """The issue's flow with nothing written by hand: add a tag, validate, run offline to the prefetch message."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("ZOO_SURVEY_CACHE", str(tmp_path / "features"))
    monkeypatch.delenv("ZOO_SURVEY_REGISTRY", raising=False)
    # The tag is shipped now (family convnextv2), so it joins 'mine' by reference.
    code, out, err = zoo(monkeypatch, capsys, "registry", "add", "convnextv2_atto.fcmae_ft_in1k", "--family", "mine",
                         "--to", "my/mine.yaml")
    assert code == 0, err
    assert "included convnextv2_atto.fcmae_ft_in1k" in out and "wrote my/mine.yaml: 0 added, 1 included" in out
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", "my")
    assert code == 0 and "OK:" in out, err
    run = ("run", "--registry", "my", "-f", "mine", "-k", "1", "--offline", "-d", "digits", "--device", "cpu")
    code, out, err = zoo(monkeypatch, capsys, *run)
    assert code == 2 and "family 'mine' has one checkpoint, 'convnextv2_atto.fcmae_ft_in1k'" in err
    assert "zoo-survey registry add TAG --family mine" in err
    # A tag nothing ships: written as a whole entry, counted offline.
    code, out, err = zoo(monkeypatch, capsys, "registry", "add", "convnextv2_femto.fcmae", "--family", "mine",
                         "--to", "my/mine.yaml")
    assert code == 0 and "updated my/mine.yaml: 1 added, 0 included, 0 already there" in out, err
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", "my")
    assert code == 0 and "1 recounted against timm" in out, err
    code, out, err = zoo(monkeypatch, capsys, *run)
    assert code == 1, err
    assert "convnextv2_femto.fcmae" in out and "ensemble of 1" in out  # the plan line
    assert "not in the local cache" in err and "zoo-survey prefetch --family mine --datasets digits --registry my" in err
    # Drift in the user's file is flagged by validate.
    mine = tmp_path / "my" / "mine.yaml"
    written = yaml.safe_load(mine.read_text())["checkpoints"][0]["gmacs"]
    mine.write_text(mine.read_text().replace(f"gmacs: {written}", f"gmacs: {written * 1.1:.3g}"))
    code, out, err = zoo(monkeypatch, capsys, "registry", "validate", "my")
    assert code == 2 and f"field 'gmacs' is {written * 1.1:.3g}, but timm counts {written:g}" in err
