"""An entry's `feature_output:` (CLIP's image embedding, DINOv2's class token + patch mean) reaches the forward, the
cache key and the rows; a family's `kind` and each member's lineage reach the report; heavy checkpoints are
refused on a CPU with one line."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
import timm
import torch
from conftest import write_family
from test_cli import zoo

from zoo_survey.data.datasets import prepare
from zoo_survey.errors import ZooSurveyError
from zoo_survey.features.extract import ExtractOptions
from zoo_survey.features.source import feature_key
from zoo_survey.survey.options import RunOptions
from zoo_survey.survey.run import check_heavy
from zoo_survey.zoo.checkpoints import forward_feature_output, resolve
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_files, load_registry, registry_folders

OPTS = ExtractOptions(device="cpu", batch_size=16, workers=0)


def test_the_outputs_are_what_they_say():
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        tokens = vit.forward_features(x)
        both = forward_feature_output(vit, x, "cls_patch_mean")
        assert torch.equal(both, torch.cat([tokens[:, 0], tokens[:, vit.num_prefix_tokens:].mean(1)], dim=1))
        assert torch.equal(forward_feature_output(vit, x, "head"), vit(x))
        assert forward_feature_output(vit, x, "pre_logits").shape == (2, vit.num_features)
        convnet = timm.create_model("test_resnet", pretrained=False).eval()
        with pytest.raises(ZooSurveyError, match="feature output 'cls_patch_mean' needs a transformer with a class token"):
            forward_feature_output(convnet, x, "cls_patch_mean")


@pytest.fixture()
def kinds_registry(tmp_path, hub_env) -> tuple:
    folder = tmp_path / "kinds"
    write_family(folder, "mixed", """
        family: kinds
        kind: self-supervised
        checkpoints:
          - {id: test_vit.hub, source: {type: hf-hub, repo: zoo-test/test_vit}, params_m: 0.31, gmacs: 0.02,
             feature_dim: 128, feature_output: cls_patch_mean, lineage: tiny-run-a}
          - {id: test_resnet.hub, source: {type: hf-hub, repo: zoo-test/test_resnet}, params_m: 0.37, gmacs: 0.01,
             feature_dim: 96, lineage: tiny-run-b}
          - {id: test_convnext.hub, source: {type: hf-hub, repo: zoo-test/test_convnext}, params_m: 0.5, gmacs: 0.03,
             feature_dim: 64, lineage: tiny-run-c}
        """)
    return folder, load_registry(registry_folders([folder]))


def test_the_entry_output_is_in_the_cache_key(kinds_registry):
    _, reg = kinds_registry
    ds = prepare(load_registry([SHIPPED_REGISTRY]).dataset("digits"), max_train=40, max_test=20)
    vit = resolve(reg.checkpoint("test_vit.hub"), offline=True, image_size=32)
    resnet = resolve(reg.checkpoint("test_resnet.hub"), offline=True, image_size=32)
    assert feature_key(vit, ds, "train", OPTS).payload["layer"] == "cls_patch_mean"
    override = dataclasses.replace(OPTS, feature_output="pre_logits")
    assert feature_key(vit, ds, "train", override).payload["layer"] == "pre_logits"
    assert feature_key(vit, ds, "train", override).digest != feature_key(vit, ds, "train", OPTS).digest
    # An entry of timm's pre-logits keys as it did when that was the flag's default: its cached features stay valid.
    assert feature_key(resnet, ds, "train", OPTS).digest == feature_key(resnet, ds, "train", override).digest
    edited = dataclasses.replace(resnet, spec=resnet.spec.model_copy(update={"feature_output": "avg"}))
    assert feature_key(edited, ds, "train", OPTS).digest != feature_key(resnet, ds, "train", OPTS).digest


def test_a_run_uses_each_entry_output_and_the_report_shows_kind_and_lineage(tmp_path, monkeypatch, capsys,
                                                                             kinds_registry, cache_env):
    folder, _ = kinds_registry
    out = tmp_path / "out"
    args = ("run", "--registry", str(folder), "--out", str(out), "--family", "kinds", "--ensemble", "2", "-d", "digits",
            "--max-train", "100", "--max-test", "60", "--image-size", "32", "--workers", "0", "--device", "cpu",
            "--grid", "0.1,1", "--probes", "linear", "--against", "test_convnext.hub")
    code, stdout, err = zoo(monkeypatch, capsys, *args)
    assert code == 0, err
    with sqlite3.connect(out / "results.sqlite") as con:
        rows = {r[0]: (r[1], json.loads(r[2])) for r in con.execute("SELECT comparison, feature_dim, provenance FROM results")}
    assert rows["test_vit.hub"][0] == 128  # the class token and the patch mean, 64 each: the feature_dim check passed
    dim, prov = next(v for k, v in rows.items() if "+" in k and not k.startswith("avg("))
    assert dim == 96 + 128
    assert prov["feature_output"] == {"test_vit.hub": "cls_patch_mean", "test_resnet.hub": "pre_logits"}
    assert prov["lineage"] == {"test_vit.hub": "tiny-run-a", "test_resnet.hub": "tiny-run-b"}
    assert prov["family_kind"] == "self-supervised"
    code, _, err = zoo(monkeypatch, capsys, "report", "--out", str(out), "--format", "md")
    assert code == 0, err
    md = (out / "report.md").read_text()
    assert "| pretraining | family | probe | datasets | mean difference (points) |" in md and "| self-supervised | kinds |" in md
    assert "tiny-run-a, tiny-run-b" in md or "tiny-run-b, tiny-run-a" in md  # the ensemble row's lineages


def test_heavy_checkpoints_are_refused_on_a_cpu():
    reg = load_registry([SHIPPED_REGISTRY])
    giant, small = reg.checkpoint("vit_giant_patch14_dinov2.lvd142m"), reg.checkpoint("vit_small_patch14_dinov2.lvd142m")
    assert giant.heavy and not small.heavy and giant.download_gb == pytest.approx(4.55, abs=0.01)
    heavy_ids = {c.id for f in reg.families.values() for c in f.checkpoints if c.heavy}
    assert {"vit_giant_patch14_dinov2.lvd142m", "vit_so400m_patch14_siglip_224.webli"} <= heavy_ids
    assert "vit_large_patch16_224.augreg_in21k_ft_in1k" not in heavy_ids  # 1.2 GB: a CPU may take it
    with pytest.raises(ZooSurveyError, match=r"1 checkpoint\(s\) too heavy for a CPU run: vit_giant_patch14_dinov2.lvd142m "
                                             r"\(1,136 M params, about 4.5 GB\); run on a GPU \(device='cuda'\).*allow_heavy=True"):
        check_heavy([small, giant], RunOptions(extract=OPTS))
    check_heavy([small, giant], RunOptions(extract=OPTS, allow_heavy=True))
    check_heavy([giant], RunOptions(extract=dataclasses.replace(OPTS, device="cuda")))


def test_family_all_on_a_cpu_refuses_before_any_work(monkeypatch, capsys, tmp_path, cache_env):
    code, out, err = zoo(monkeypatch, capsys, "run", "--family", "all", "--device", "cpu", "--offline", "-d", "digits",
                         "--out", str(tmp_path / "o"))
    assert code == 2 and "too heavy for a CPU run" in err and "vit_giant_patch14_dinov2.lvd142m" in err
    assert "\n" not in err.strip() and not (tmp_path / "o").exists()
    code, out, err = zoo(monkeypatch, capsys, "registry", "list", "--family", "siglip", "--format", "tsv")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("siglip\tvit_so400m_patch14_siglip_224.webli\t"))
    assert "1.71 GB (heavy)" in line and "vit_so400m_patch14_siglip.webli" in line


def test_prefetch_says_how_much_it_will_download(monkeypatch, capsys):
    import zoo_survey.cli.run as cli_run

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(cli_run, "prefetch", lambda specs, datasets: [])  # the estimate comes before any download
    code, out, err = zoo(monkeypatch, capsys, "prefetch", "-f", "dinov2", "-d", "digits")
    assert code == 0, err
    assert "8 checkpoint(s): about 12.4 GB of weights to download" in out
    assert "vit_giant_patch14_dinov2.lvd142m (about 4.5 GB)" in out


def test_include_shares_the_entry_and_checks_names(tmp_path):
    shipped = sorted((SHIPPED_REGISTRY / "models").glob("*.yaml"))
    path = write_family(tmp_path, "mine", """
        family: mine
        kind: supervised
        include: [resnet18.a1_in1k, resnet34.a1_in1k]
        ensembles:
          pair: [resnet18.a1_in1k, resnet34.a1_in1k]
        """)
    reg = load_files([*shipped, path])
    mine = reg.family("mine")
    assert [c.id for c in mine.checkpoints] == ["resnet18.a1_in1k", "resnet34.a1_in1k"] and mine.kind == "supervised"
    assert mine.checkpoints[0] is reg.family("resnet").get("resnet18.a1_in1k")  # the same spec: the same cache entries
    path.write_text(path.read_text().replace("resnet34.a1_in1k]", "resnet34.a2_in1k]", 1))
    with pytest.raises(ZooSurveyError, match=r"unknown checkpoint included by family 'mine' .*'resnet34.a2_in1k'; did you mean"):
        load_files([*shipped, path])
    path.write_text("family: mine\nkind: weakly-supervised\ninclude: [resnet18.a1_in1k]\n")
    with pytest.raises(ZooSurveyError, match=r"field 'kind'"):
        load_files([*shipped, path])


@pytest.mark.parametrize("flag", ["--feature-output", "--features"])  # --features: the old name, a hidden alias
def test_the_feature_output_flag_and_its_old_name_reach_the_options(monkeypatch, capsys, flag):
    code, _, err = zoo(monkeypatch, capsys, "extract", "--family", "efficientnet-lite", "-d", "digits", "--device", "cpu",
                       flag, "cls")
    assert code == 2 and "--feature-output must be one of entry, pre_logits, head" in err
    code, out, _ = zoo(monkeypatch, capsys, "extract", "--help")
    assert code == 0 and "--feature-output" in out and "--features" not in out
