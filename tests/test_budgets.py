"""Budgets counted offline: the meta-device count equals a real CPU count, every shipped entry recounts to
its YAML (params and GMACs within 1%, feature width and input size exactly), and drift is flagged."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from conftest import write_family

from zoo_survey.zoo.budgets import check_registry, count, count_entry, drift, timm_tag, unknown_tags
from zoo_survey.zoo.checkpoints import forward_feature_output
from zoo_survey.zoo.flops import count_gmacs
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_files, load_registry, registry_files

REG = load_registry([SHIPPED_REGISTRY])
SHIPPED = list({c.id: c for fam in REG.families.values() for c in fam.checkpoints}.values())


@pytest.mark.parametrize(("arch", "size", "feature_output"), [
    ("test_resnet", 160, "pre_logits"), ("test_vit", 160, "cls_patch_mean"), ("test_convnext", 96, "avg"),
    ("resnet18", 224, "pre_logits"), ("vit_tiny_patch16_224", 224, "head"),
])
def test_the_meta_count_equals_a_cpu_count(arch, size, feature_output):
    model = timm.create_model(arch, pretrained=False).eval()
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        width = forward_feature_output(model, x, feature_output).shape[-1]
    cpu = (round(sum(p.numel() for p in model.parameters()) / 1e6, 2), count_gmacs(model, size), width)
    meta = count(arch, size, feature_output=feature_output)
    assert (meta.params_m, meta.feature_dim) == (cpu[0], cpu[2])
    assert meta.gmacs == pytest.approx(cpu[1], rel=5e-3)  # the registry's 3 significant digits


def test_a_tag_is_counted_with_its_own_head():
    # CLIP's image-text projection is the head of this tag: 512 wide, no bias; DINOv2 has none.
    clip = count("vit_base_patch16_clip_quickgelu_224", 224, tag="vit_base_patch16_clip_quickgelu_224.openai",
                 feature_output="head")
    assert clip.feature_dim == 512 and clip.params_m == pytest.approx(86.19)
    assert count("vit_small_patch14_dinov2", 224, tag="vit_small_patch14_dinov2.lvd142m",
                 feature_output="cls_patch_mean").feature_dim == 2 * 384


def test_every_shipped_entry_recounts_to_its_yaml():
    """Every shipped family: tags exist in timm's pretrained list and budgets recount (1%; exact in the YAML)."""
    start = time.perf_counter()
    assert check_registry(SHIPPED, SHIPPED, rel_tol=0.01) == []
    print(f"recounted {len(SHIPPED)} entries in {time.perf_counter() - start:.1f} s")


def test_every_shipped_timm_entry_names_a_pretrained_tag():
    tags = [timm_tag(c) for c in SHIPPED]
    assert sum(t is not None for t in tags) >= 140
    assert all(t in timm.list_pretrained(t) for t in tags if t is not None)


def test_drift_and_unknown_tags_are_flagged(tmp_path):
    path = write_family(tmp_path, "mine", """
        family: mine
        checkpoints:
          - {id: resnet18.a1_in1k_copy, arch: resnet18, source: {type: timm, tag: resnet18.a1_in1k},
             params_m: 11.69, gmacs: 2.5, input_size: 224, feature_dim: 256}
          - {id: resnet18.a9_in1k, source: {type: hf-hub, repo: timm/resnet18.a9_in1k},
             params_m: 11.69, gmacs: 1.81, feature_dim: 512}
        """)
    specs = list(load_files([path]).family("mine").checkpoints)
    fields = {d.field: (d.registry, d.counted) for d in drift(specs[0])}
    assert fields == {"gmacs": (2.5, 1.81), "feature_dim": (256, 512)}
    assert "field 'gmacs' is 2.5, but timm counts 1.81" in str(drift(specs[0])[0])
    (err,) = unknown_tags(specs)
    assert re.search(r"no pretrained tag 'resnet18.a9_in1k'; did you mean .*'resnet18.a1_in1k'", str(err))
    lines = check_registry(specs, specs)
    assert len(lines) == 3 and not any("a9_in1k' is" in ln for ln in lines)  # an unknown tag is not recounted


def test_a_pinned_resolution_is_the_one_counted():
    dino = REG.checkpoint("vit_small_patch14_dinov2.lvd142m")
    assert dino.input_size == dino.preprocess.input_size == 224  # not timm's 518 px
    assert count_entry(dino).gmacs == dino.gmacs and drift(dino) == []


def test_the_benchmark_script_reports_a_mismatch(tmp_path):
    bad = write_family(tmp_path, "b", """
        family: b
        checkpoints:
          - {id: resnet18.a1_in1k_b, arch: resnet18, source: {type: timm, tag: resnet18.a1_in1k},
             params_m: 11.70, gmacs: 1.81, feature_dim: 512}
        """)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "count_registry_budgets.py"), str(bad)],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 1, proc.stderr
    assert "field 'params_m' is 11.7, but timm counts 11.69" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith('{"checked": 1, "mismatches": 1')
    assert registry_files([], [bad]) == [bad.resolve()]
