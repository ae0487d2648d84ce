"""The hub code path against a real HTTP server speaking the Hub protocol on 127.0.0.1 (tests/hub_server.py):
first downloads, cached and offline reruns, pinned revisions, the Hub's errors, and faults (5xx,
timeouts, connections cut mid-file) with what is left in the HF cache. Nothing of ours is mocked:
huggingface_hub talks HTTP to the loopback hub.

conftest.py sets HF_HUB_OFFLINE=1 for the session and huggingface_hub reads its settings at import,
so the ``hub`` fixture points huggingface_hub's constants at the server (in-process tests); the CLI
test runs ``zoo-survey`` in a subprocess with a clean environment instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import _tiny_model, write_family
from hub_server import HubServer, git_blob_sha1

from zoo_survey.errors import ZooSurveyFailure
from zoo_survey.zoo.checkpoints import load_model, resolve
from zoo_survey.zoo.registry import load_registry

EXE = str(Path(sys.executable).parent / "zoo-survey")
REPO = "loop/test_resnet"


@lru_cache(maxsize=None)
def timm_repo(arch: str = "test_resnet", seed: int = 0, num_classes: int = 10) -> dict[str, bytes]:
    """A timm hub repo's files, as the conftest ``hub_cache`` fixture lays them out: config.json + model.safetensors."""
    from safetensors.torch import save

    model = _tiny_model(arch, num_classes=num_classes, seed=seed)
    config = {"architecture": arch, "num_classes": num_classes,
              "pretrained_cfg": {**model.pretrained_cfg, "num_classes": num_classes}}
    return {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": save({k: v.contiguous() for k, v in model.state_dict().items()}),
    }


def spec(folder: Path, repo: str = REPO, *, revision: str | None = None, cid: str = "test_resnet.loop"):
    """A one-checkpoint user registry for an hf-hub repo; returns the CheckpointSpec."""
    rev = f', revision: "{revision}"' if revision else ""
    write_family(folder, "loop", f"""
        family: loop
        checkpoints:
          - {{id: {cid}, source: {{type: hf-hub, repo: {repo}}}{rev}, params_m: 0.37, gmacs: 0.01, feature_dim: 96}}
        """)
    return load_registry([folder]).checkpoint(cid)


def short_timeouts(monkeypatch, seconds: int = 1) -> None:
    """HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT, as huggingface_hub read them at import."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", seconds)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", seconds)


def repo_folder(hub, repo: str = REPO, kind: str = "models") -> Path:
    return hub.cache / f"{kind}--{repo.replace('/', '--')}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- (a) first download


def test_first_download_resolves_the_served_commit_and_loads_the_served_weights(hub, tmp_path):
    import torch

    files = timm_repo(seed=3)
    commit = hub.add_commit(REPO, files)
    ckpt = resolve(spec(tmp_path / "reg"))

    assert ckpt.revision == commit
    assert ckpt.weights == repo_folder(hub) / "snapshots" / commit / "model.safetensors"
    assert ckpt.weights.read_bytes() == files["model.safetensors"]
    assert (repo_folder(hub) / "refs" / "main").read_text() == commit
    assert hub.count("GET", "model.safetensors") == 1 and hub.count("GET", "config.json") == 1
    assert ckpt.preprocessing.input_size == 160  # from the served config.json's pretrained_cfg

    model = load_model(ckpt)
    served = _tiny_model("test_resnet", seed=3).state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, served[k]), k
    assert not torch.equal(model.state_dict()["fc.weight"], _tiny_model("test_resnet", seed=4).state_dict()["fc.weight"])


def test_timm_tag_source_downloads_the_tags_hub_repo_with_retries(hub, tmp_path):
    files = timm_repo("test_vit", num_classes=1000)
    commit = hub.add_commit("timm/test_vit.r160_in1k", files)  # timm's pretrained cfg for the tag points here
    hub.fail("timm/test_vit.r160_in1k", "model.safetensors", times=1)
    write_family(tmp_path / "reg", "t", """
        family: t
        checkpoints:
          - {id: test_vit.r160_in1k, source: {type: timm}, params_m: 0.4, gmacs: 0.1, feature_dim: 64}
        """)
    ckpt = resolve(load_registry([tmp_path / "reg"]).checkpoint("test_vit.r160_in1k"))
    assert ckpt.revision == commit and ckpt.weights.read_bytes() == files["model.safetensors"]
    assert hub.count(path="model.safetensors", fault="fail") == 1


# --------------------------------------------------------------------------- (b) cached reruns, hub stopped


def test_cached_rerun_with_the_hub_stopped_works_offline_and_online_without_retrying(hub, tmp_path, monkeypatch):
    commit = hub.add_commit(REPO, timm_repo(seed=3))
    s = spec(tmp_path / "reg")
    first = resolve(s)
    hub.stop()  # connections to the port are now refused

    offline = resolve(s, offline=True)
    assert (offline.revision, offline.weights) == (commit, first.weights)

    # Not offline: huggingface_hub's HEAD is refused, it falls back to refs/main in the cache, silently.
    # Guaranteed: no retry and no backoff for a cached file (a 5 s backoff would show).
    monkeypatch.setenv("ZOO_SURVEY_HUB_BACKOFF", "5")
    t0 = time.monotonic()
    online = resolve(s)
    assert time.monotonic() - t0 < 3
    assert (online.revision, online.weights) == (commit, first.weights)
    load_model(online)


def test_hub_unreachable_and_nothing_cached_is_retried_then_one_clear_line(hub, tmp_path):
    s = spec(tmp_path / "reg")
    hub.add_commit(REPO, timm_repo())
    hub.stop()
    with pytest.raises(ZooSurveyFailure) as e:
        resolve(s)
    msg = one_line(e)
    for part in (REPO, "config.json", "the connection failed (ConnectError", "tried 3 time(s) (retried 2",
                 "HF_ENDPOINT", "zoo-survey prefetch", "offline=True"):
        assert part in msg, msg


# --------------------------------------------------------------------------- (c) pinned revision


def test_pinned_revision_downloads_the_old_commit_and_keys_it_apart_from_main(hub, tmp_path):
    from zoo_survey.features.extract import ExtractOptions
    from zoo_survey.features.source import feature_key

    old_files, new_files = timm_repo(seed=1), timm_repo(seed=2)
    assert old_files["model.safetensors"] != new_files["model.safetensors"]
    old = hub.add_commit(REPO, old_files)
    new = hub.add_commit(REPO, new_files)  # main moves on
    hub.tag(REPO, "v1", old)

    pinned = resolve(spec(tmp_path / "pinned", revision=old))
    main = resolve(spec(tmp_path / "main"))
    tagged = resolve(spec(tmp_path / "tagged", revision="v1"))

    assert pinned.revision == old and tagged.revision == old and main.revision == new
    assert pinned.weights.read_bytes() == old_files["model.safetensors"]
    assert main.weights.read_bytes() == new_files["model.safetensors"]
    assert hub.count("HEAD", "model.safetensors") >= 1
    assert any(f"/resolve/{old}/model.safetensors" in r.url for r in hub.log if r.method == "GET")

    # The features' cache key: the revision is part of it, so pinned and main never share features.
    assert pinned.key() != main.key()
    assert {k for k in pinned.key() if pinned.key()[k] != main.key()[k]} == {"revision"}
    class Split(list):  # what feature_key reads of a prepared split: its length and its indices' digest
        def indices_digest(self) -> str:
            return "idx"

    ds = SimpleNamespace(spec=SimpleNamespace(id="digits"), fingerprint="fp", splits={"train": Split([0] * 5)})
    opts = ExtractOptions(device="cpu", batch_size=16, workers=0)
    assert feature_key(pinned, ds, "train", opts).digest != feature_key(main, ds, "train", opts).digest
    assert feature_key(pinned, ds, "train", opts).digest == feature_key(tagged, ds, "train", opts).digest


# --------------------------------------------------------------------------- (d, e) the Hub's errors, not retried


def test_unknown_repo_or_revision_or_file_is_a_clear_failure_without_retries(hub, tmp_path):
    hub.add_commit(REPO, {"config.json": timm_repo()["config.json"]})  # no weights file

    with pytest.raises(ZooSurveyFailure) as e:
        resolve(spec(tmp_path / "a", repo="loop/nope"))
    assert "'loop/nope'" in one_line(e) and "does not exist on the hub" in str(e.value) and "source.repo" in str(e.value)
    assert hub.count(repo_id="loop/nope") == 2  # our probe and huggingface_hub's HEAD, no retry

    with pytest.raises(ZooSurveyFailure, match=r"revision 'v9' does not exist; check 'revision'"):
        resolve(spec(tmp_path / "b", revision="v9"))

    with pytest.raises(ZooSurveyFailure, match=r"the repo has no weights file \(model.safetensors or pytorch_model.bin\)"):
        resolve(spec(tmp_path / "c"))
    assert hub.count("GET", "model.safetensors") == 0


def test_gated_repo_says_gated_and_log_in(hub, tmp_path):
    hub.add_commit(REPO, timm_repo())
    hub.set_gated(REPO)
    with pytest.raises(ZooSurveyFailure) as e:
        resolve(spec(tmp_path / "reg"))
    msg = one_line(e)
    assert REPO in msg and "gated" in msg and "log in" in msg
    assert hub.count("HEAD") == 2 and hub.count("GET") == 0


# --------------------------------------------------------------------------- (f) HTTP 500


def test_500_twice_then_success_is_retried(hub, tmp_path):
    files = timm_repo()
    commit = hub.add_commit(REPO, files)
    hub.fail(REPO, "model.safetensors", times=2)
    ckpt = resolve(spec(tmp_path / "reg"))
    assert ckpt.revision == commit and ckpt.weights.read_bytes() == files["model.safetensors"]
    assert hub.count(path="model.safetensors", fault="fail") == 2
    assert hub.count("HEAD", "model.safetensors") == 4  # 2 failed probes, 1 good probe, huggingface_hub's HEAD
    assert hub.count("GET", "model.safetensors") == 1


def test_500_on_the_download_itself_is_retried(hub, tmp_path):
    files = timm_repo()
    hub.add_commit(REPO, files)
    hub.fail(REPO, "model.safetensors", times=1, methods=("GET",))  # huggingface_hub does not retry a 500 on GET
    ckpt = resolve(spec(tmp_path / "reg"))
    assert ckpt.weights.read_bytes() == files["model.safetensors"]
    assert hub.count("GET", "model.safetensors") == 2


def test_500_always_fails_after_the_configured_retries_in_one_line(hub, tmp_path):
    hub.add_commit(REPO, timm_repo())
    hub.fail(REPO)
    t0 = time.monotonic()
    with pytest.raises(ZooSurveyFailure) as e:
        resolve(spec(tmp_path / "reg"))
    msg = one_line(e)
    for part in ("test_resnet.loop", REPO, "config.json", "HTTP 500", "tried 3 time(s) (retried 2",
                 "HF_ENDPOINT", "zoo-survey prefetch", "offline=True"):
        assert part in msg, msg
    assert hub.count() == 3  # ZOO_SURVEY_HUB_RETRIES=2: 3 requests, none of huggingface_hub's own 5 retries
    assert time.monotonic() - t0 < 5


# --------------------------------------------------------------------------- (g) timeouts


def test_after_the_hub_failed_the_next_checkpoints_try_once_and_cached_ones_still_resolve(hub, tmp_path):
    """A run over many checkpoints with the hub down fails in seconds: only the first waits through the retries."""
    cached_repo = "loop/cached"
    hub.add_commit(cached_repo, timm_repo(seed=1))
    cached = resolve(spec(tmp_path / "c", cached_repo, cid="test_resnet.cached"))  # fetched while the hub was well
    hub.add_commit(REPO, timm_repo())
    hub.add_commit(REPO + "2", timm_repo(seed=2))
    hub.fail(REPO)
    hub.fail(REPO + "2")
    with pytest.raises(ZooSurveyFailure, match=r"tried 3 time\(s\) \(retried 2"):
        resolve(spec(tmp_path / "a"))
    assert hub.count(repo_id=REPO) == 3
    t0 = time.monotonic()
    with pytest.raises(ZooSurveyFailure) as e:
        resolve(spec(tmp_path / "b", REPO + "2", cid="test_resnet.loop2"))
    assert "tried once (not retried: it failed earlier in this run)" in one_line(e)
    assert hub.count(repo_id=REPO + "2") == 1 and time.monotonic() - t0 < 2
    hub.stop()
    again = resolve(spec(tmp_path / "c", cached_repo, cid="test_resnet.cached"))  # the cache still answers
    assert (again.revision, again.weights) == (cached.revision, cached.weights)


def test_stalled_hub_times_out_is_retried_then_one_clear_line(hub, tmp_path, monkeypatch):
    short_timeouts(monkeypatch, 1)
    monkeypatch.setenv("ZOO_SURVEY_HUB_RETRIES", "1")
    files = timm_repo()
    hub.add_commit(REPO, files)
    hub.stall(REPO, "config.json", seconds=4, methods=("HEAD",))
    t0 = time.monotonic()
    with pytest.raises(ZooSurveyFailure) as e:
        resolve(spec(tmp_path / "a"))
    msg = one_line(e)
    assert "config.json" in msg and "no answer within HF_HUB_ETAG_TIMEOUT=1 s (ReadTimeout)" in msg and "retried 1" in msg, msg
    assert hub.count("HEAD", "config.json") == 2 and time.monotonic() - t0 < 4

    # Stalled once: our retry gets it (in a fresh run: one that saw the hub fail tries each file once).
    from zoo_survey.zoo.hub import forget_failures

    forget_failures()
    hub.clear_faults()
    hub.reset_log()
    hub.stall(REPO, "config.json", seconds=4, times=1, methods=("HEAD",))
    ckpt = resolve(spec(tmp_path / "b"))
    assert ckpt.weights.read_bytes() == files["model.safetensors"]
    assert hub.count("HEAD", "config.json", fault="stall") == 1

    # The download stalled once: huggingface_hub's own resume loop gets it (HF_HUB_DOWNLOAD_TIMEOUT).
    hub.clear_faults()
    hub.reset_log()
    repo2 = "loop/test_resnet2"
    hub.add_commit(repo2, files)
    hub.stall(repo2, "model.safetensors", seconds=4, times=1, methods=("GET",))
    ckpt = resolve(spec(tmp_path / "c", repo=repo2, cid="test_resnet.loop2"))
    assert ckpt.weights.read_bytes() == files["model.safetensors"]
    assert hub.count("GET", "model.safetensors") == 2


# --------------------------------------------------------------------------- (h) connection cut mid-file


def test_connection_cut_mid_file_always_fails_and_leaves_no_file_then_a_rerun_downloads_it_whole(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_SURVEY_HUB_RETRIES", "1")
    files = timm_repo()
    weights = files["model.safetensors"]
    commit = hub.add_commit(REPO, files)
    hub.cut(REPO, "model.safetensors")
    s = spec(tmp_path / "reg")
    with pytest.raises(ZooSurveyFailure) as e:
        resolve(s)
    msg = one_line(e)
    assert "model.safetensors" in msg and "the connection failed (RemoteProtocolError" in msg and "retried 1" in msg, msg
    # huggingface_hub restarts a cut download 5 times by itself, then we retry the whole call once.
    assert hub.count("GET", "model.safetensors") == 12
    snapshot = repo_folder(hub) / "snapshots" / commit
    assert not (snapshot / "model.safetensors").exists()
    assert not (repo_folder(hub) / "blobs" / sha256(weights)).exists()
    left = [p.name for p in (repo_folder(hub) / "blobs").iterdir()]
    assert all(n == git_blob_sha1(files["config.json"]) or n.endswith(".incomplete") for n in left), left

    hub.clear_faults()
    ckpt = resolve(s)
    assert ckpt.revision == commit
    assert sha256(ckpt.weights.read_bytes()) == sha256(weights)
    assert not list((repo_folder(hub) / "blobs").glob("*.incomplete"))


def test_connection_cut_once_is_restarted_by_huggingface_hub(hub, tmp_path):
    files = timm_repo()
    hub.add_commit(REPO, files)
    hub.cut(REPO, "model.safetensors", times=1)
    ckpt = resolve(spec(tmp_path / "reg"))
    assert sha256(ckpt.weights.read_bytes()) == sha256(files["model.safetensors"])
    assert hub.count("GET", "model.safetensors") == 2


# --------------------------------------------------------------------------- datasets


def test_dataset_repo_snapshot_download_at_a_pinned_revision(hub):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import snapshot_download

    def parquet(labels: list[int]) -> bytes:
        buf = io.BytesIO()
        pq.write_table(pa.table({"image": [b"\x89PNG..."] * len(labels), "label": labels}), buf)
        return buf.getvalue()

    repo = "loop/tiny-ds"
    v1 = hub.add_commit(repo, {"README.md": b"# tiny", "data/train-00000-of-00001.parquet": parquet([0, 1, 2])},
                        repo_type="dataset")
    v2 = hub.add_commit(repo, {"README.md": b"# tiny", "data/train-00000-of-00001.parquet": parquet([5, 6])},
                        repo_type="dataset")

    old = Path(snapshot_download(repo, repo_type="dataset", revision=v1))
    assert old == repo_folder(hub, repo, "datasets") / "snapshots" / v1
    assert pq.read_table(old / "data" / "train-00000-of-00001.parquet").column("label").to_pylist() == [0, 1, 2]
    new = Path(snapshot_download(repo, repo_type="dataset"))
    assert new.name == v2
    assert pq.read_table(new / "data" / "train-00000-of-00001.parquet").column("label").to_pylist() == [5, 6]
    assert any(r.url.startswith(f"/api/datasets/{repo}/revision/main") for r in hub.log)
    assert any(r.url.startswith(f"/api/datasets/{repo}/tree/{v1}") for r in hub.log)

    hub.stop()  # cached: found again without the hub, at main and at the pinned commit
    assert Path(snapshot_download(repo, repo_type="dataset")) == new
    assert Path(snapshot_download(repo, repo_type="dataset", revision=v1)) == old


# --------------------------------------------------------------------------- the CLI, end to end


def test_cli_extract_downloads_from_the_hub_then_reruns_offline_with_the_hub_stopped(tmp_path):
    files = timm_repo(seed=5)
    server = HubServer().start()
    try:
        server.add_commit(REPO, files)
        folder = tmp_path / "registry"
        spec(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ZOO_SURVEY_"))}
        env.update(HF_ENDPOINT=server.url, HF_HUB_CACHE=str(tmp_path / "hf-cache"), HF_HUB_DISABLE_TELEMETRY="1",
                   HF_DATASETS_OFFLINE="1", ZOO_SURVEY_HUB_RETRIES="1", ZOO_SURVEY_HUB_BACKOFF="0.01", COLUMNS="300")
        cmd = [EXE, "extract", "--registry", str(folder), "-f", "loop", "-d", "digits", "--max-train", "60",
               "--max-test", "30", "--image-size", "32", "--workers", "0", "--device", "cpu",
               "--cache-dir", str(tmp_path / "features")]

        server.fail(REPO)  # the hub answers 500: one line, exit 1, no traceback
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "Traceback" not in out.stdout + out.stderr
        err = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert len(err) == 1 and "HTTP 500" in err[0] and "retried 1" in err[0], out.stderr

        server.clear_faults()
        server.reset_log()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        assert int(re.search(r"(\d+) forward batch", out.stdout).group(1)) > 0
        assert server.count("GET", "model.safetensors") == 1
    finally:
        server.stop()

    out = subprocess.run(cmd + ["--offline"], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"\b0 forward batch", out.stdout), out.stdout


def test_an_http_error_that_retrying_cannot_fix_is_one_line_without_retries(hub, tmp_path):
    hub.add_commit(REPO, timm_repo())
    hub.fail(REPO, status=403)
    with pytest.raises(ZooSurveyFailure) as e:
        resolve(spec(tmp_path / "a"))
    msg = one_line(e)
    assert "test_resnet.loop" in msg and "hub request for config.json failed: " in msg and "403" in msg, msg
    assert hub.count(repo_id=REPO) <= 2  # our metadata request and huggingface_hub's: no retries


@pytest.mark.parametrize("value, message", [("three", "ZOO_SURVEY_HUB_RETRIES='three' is not a number"),
                                            ("-1", "ZOO_SURVEY_HUB_RETRIES='-1' must be >= 0")])
def test_a_bad_retry_setting_is_named(hub, tmp_path, monkeypatch, value, message):
    from zoo_survey.errors import ZooSurveyError

    hub.add_commit(REPO, timm_repo())
    monkeypatch.setenv("ZOO_SURVEY_HUB_RETRIES", value)
    with pytest.raises(ZooSurveyError, match=message):
        resolve(spec(tmp_path / "a"))
