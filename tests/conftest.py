"""Shared fixtures. Everything is offline: tiny timm architectures saved as a local HF-hub
cache snapshot, tiny local weight files, and the built-in datasets."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The fuzzers (tests/test_fuzz.py): bounded in CI; `pytest --hypothesis-profile long tests/test_fuzz.py` runs more by hand.
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

# huggingface_hub reads these at import time; the tests never reach a network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TINY_ARCHS = ("test_resnet", "test_vit", "test_convnext")
FAKE_COMMIT = {a: hashlib.sha1(a.encode()).hexdigest() for a in TINY_ARCHS}
TIMM_TAG_REPO = "timm/test_vit.r160_in1k"  # where timm's pretrained cfg for that tag points


def _tiny_model(arch: str, num_classes: int = 10, seed: int = 0):
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes).eval()


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face hub cache holding ``zoo-test/<arch>`` repos in the hub's on-disk layout
    (blobs, refs/main, snapshots/<commit>), as `hf download` would leave them."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("hf-hub-cache")
    repos = [(f"zoo-test/{a}", a, 10) for a in TINY_ARCHS] + [(TIMM_TAG_REPO, "test_vit", 1000)]
    for repo_id, arch, classes in repos:
        model = _tiny_model(arch, num_classes=classes)
        repo = root / ("models--" + repo_id.replace("/", "--"))
        commit = FAKE_COMMIT.get(arch) if classes == 10 else hashlib.sha1(repo_id.encode()).hexdigest()
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        (repo / "blobs").mkdir()
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        files = {
            "config.json": json.dumps(
                {"architecture": arch, "num_classes": classes, "pretrained_cfg": {**model.pretrained_cfg, "num_classes": classes}}
            ).encode(),
        }
        tmp = root / f"{arch}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        files["model.safetensors"] = tmp.read_bytes()
        tmp.unlink()
        for name, blob in files.items():
            digest = hashlib.sha256(blob).hexdigest()
            (repo / "blobs" / digest).write_bytes(blob)
            (snap / name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return root


@pytest.fixture()
def hub_env(hub_cache, monkeypatch) -> Path:
    """Point huggingface_hub at the fixture cache (module constant and env, for subprocesses)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    return hub_cache


@pytest.fixture()
def cache_env(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "feature-cache"
    monkeypatch.setenv("ZOO_SURVEY_CACHE", str(root))
    monkeypatch.delenv("ZOO_SURVEY_REGISTRY", raising=False)
    return root


@pytest.fixture(scope="session")
def tiny_pth(tmp_path_factory) -> Path:
    """A user's local checkpoint: a test_resnet state_dict saved as .pth."""
    import torch

    path = tmp_path_factory.mktemp("weights") / "tiny_resnet.pth"
    torch.save(_tiny_model("test_resnet", seed=1).state_dict(), path)
    return path


def write_family(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture()
def tiny_registry(tmp_path, hub_env, tiny_pth) -> Path:
    """A user registry folder: a 'tiny' family of hub snapshots and a local .pth."""
    folder = tmp_path / "user-registry"
    write_family(
        folder,
        "tiny",
        f"""
        family: tiny
        defaults:
          pretrain: {{data: random-init}}
        checkpoints:
          - {{id: test_resnet.hub, source: {{type: hf-hub, repo: zoo-test/test_resnet}}, params_m: 0.37, gmacs: 0.01, feature_dim: 96}}
          - {{id: test_vit.hub, source: {{type: hf-hub, repo: zoo-test/test_vit}}, params_m: 0.31, gmacs: 0.02, feature_dim: 64}}
          - {{id: test_convnext.hub, source: {{type: hf-hub, repo: zoo-test/test_convnext}}, params_m: 0.21, gmacs: 0.03, feature_dim: 64}}
          - id: test_resnet.mine
            source: {{type: file, path: {tiny_pth}}}
            params_m: 0.5
            gmacs: 0.05
            feature_dim: 96
        """,
    )
    return folder


@pytest.fixture(autouse=True)
def _allow_test_paths(tmp_path_factory, monkeypatch):
    """Fixture registries point at weights in other pytest temp folders (see ZOO_SURVEY_ALLOWED_PATHS)."""
    monkeypatch.setenv("ZOO_SURVEY_ALLOWED_PATHS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A started loopback hub; huggingface_hub (in this process) online, pointed at it, with an empty HF cache."""
    from huggingface_hub import constants

    from zoo_survey.zoo.hub import forget_failures

    forget_failures()
    from hub_server import HubServer

    server = HubServer().start()
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("ZOO_SURVEY_HUB_RETRIES", "2")
    monkeypatch.setenv("ZOO_SURVEY_HUB_BACKOFF", "0.01")
    server.cache = cache
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pair_registry(tmp_path_factory, hub_cache, tiny_pth) -> Path:
    """A registry folder with two checkpoints that both run a forward: a hub snapshot and a local .pth
    kept next to the YAML."""
    folder = tmp_path_factory.mktemp("pair-registry")
    shutil.copy(tiny_pth, folder / "tiny_resnet.pth")
    (folder / "tiny.yaml").write_text(textwrap.dedent("""
        family: tiny
        defaults:
          pretrain: {data: random-init}
        checkpoints:
          - {id: test_convnext.hub, source: {type: hf-hub, repo: zoo-test/test_convnext}, params_m: 0.21, gmacs: 0.03, feature_dim: 64}
          - {id: test_resnet.mine, source: {type: file, path: tiny_resnet.pth}, params_m: 0.5, gmacs: 0.05, feature_dim: 96}
        """))
    return folder
