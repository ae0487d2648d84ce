"""Hub datasets and prefetch against the loopback hub (tests/hub_server.py): the dataset's commit is
resolved, pinned, recorded in every row and listed in the report; a new upstream commit is a new
fingerprint; `zoo-survey prefetch` fills the caches so that `run --offline` works with the hub stopped."""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import pytest
from conftest import write_family
from test_cli import zoo
from test_hub_loopback import REPO, timm_repo

from zoo_survey.data.datasets import prepare
from zoo_survey.zoo.registry import load_registry

DS_REPO = "loop/tiny-shapes"


def parquet_split(labels: list[int], seed: int) -> bytes:
    """A parquet file as `datasets` writes it: an Image column (PNG bytes) and a ClassLabel column."""
    import datasets as hfds
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)) for _ in labels]
    features = hfds.Features({"image": hfds.Image(), "label": hfds.ClassLabel(names=["a", "b", "c"])})
    buf = io.BytesIO()
    hfds.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(buf)
    return buf.getvalue()


def dataset_repo(seed: int, n_train: int = 30) -> dict[str, bytes]:
    return {
        "README.md": b"# tiny shapes\n",
        "data/train-00000-of-00001.parquet": parquet_split([0, 1, 2] * (n_train // 3), seed),
        "data/test-00000-of-00001.parquet": parquet_split([0, 1, 2] * 4, seed + 1),
    }


def registry(folder, revision: str | None = None, sizes: str = ""):
    rev = f", revision: {revision}" if revision else ""
    sizes = f", split_sizes: {sizes}" if sizes else ""
    write_family(folder, "loopds", f"""
        datasets:
          - {{id: tiny-shapes, source: {{type: hf, path: {DS_REPO}{rev}}}, num_classes: 3{sizes}}}
        """)
    write_family(folder, "loop", f"""
        family: loop
        checkpoints:
          - {{id: test_resnet.loop, source: {{type: hf-hub, repo: {REPO}}}, params_m: 0.37, gmacs: 0.01, feature_dim: 96}}
          - {{id: test_resnet.loop2, source: {{type: hf-hub, repo: {REPO}2}}, params_m: 0.2, gmacs: 0.005, feature_dim: 96}}
        """)
    return folder


def test_hub_dataset_commit_is_resolved_pinned_and_part_of_the_fingerprint(hub, tmp_path):
    v1 = hub.add_commit(DS_REPO, dataset_repo(0), repo_type="dataset")
    first = prepare(load_registry([registry(tmp_path / "a")]).dataset("tiny-shapes"))
    assert first.revision == v1
    assert {k: len(s) for k, s in first.splits.items()} == {"train": 24, "val": 6, "test": 12}
    assert first.class_names == ("a", "b", "c")

    v2 = hub.add_commit(DS_REPO, dataset_repo(7), repo_type="dataset")  # upstream moves on
    moved = prepare(load_registry([registry(tmp_path / "b")]).dataset("tiny-shapes"))
    pinned = prepare(load_registry([registry(tmp_path / "c", revision=v1)]).dataset("tiny-shapes"))
    assert moved.revision == v2 and pinned.revision == v1
    assert moved.fingerprint != first.fingerprint  # new commit: new cache keys and row keys
    assert pinned.fingerprint == first.fingerprint  # the pinned commit: the same data, the same keys
    a, b = first.splits["test"], pinned.splits["test"]
    assert np.array_equal(np.asarray(a.image(0)), np.asarray(b.image(0)))

    hub.stop()  # cached: offline finds both commits again
    again = prepare(load_registry([registry(tmp_path / "c", revision=v1)]).dataset("tiny-shapes"), offline=True)
    assert (again.revision, again.fingerprint) == (v1, first.fingerprint)


def test_a_copied_hub_cache_gives_the_same_keys_offline(hub, tmp_path, monkeypatch):
    """prefetch on one machine, copy the cache elsewhere, run offline: same revision, same fingerprint (cache keys)."""
    import shutil

    from huggingface_hub import constants

    v1 = hub.add_commit(DS_REPO, dataset_repo(0), repo_type="dataset")
    here = prepare(load_registry([registry(tmp_path / "a")]).dataset("tiny-shapes"))
    hub.stop()
    copy = tmp_path / "elsewhere" / "hub"
    shutil.copytree(hub.cache, copy, symlinks=True)
    shutil.rmtree(hub.cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(copy))
    there = prepare(load_registry([registry(tmp_path / "a")]).dataset("tiny-shapes"), offline=True)
    assert (there.revision, there.fingerprint) == (v1, here.fingerprint)
    assert np.array_equal(there.splits["train"].labels, here.splits["train"].labels)


def test_prefetch_then_an_offline_run_with_the_hub_stopped_records_every_commit(hub, tmp_path, monkeypatch, capsys, cache_env):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ds_commit = hub.add_commit(DS_REPO, dataset_repo(0), repo_type="dataset")
    c1 = hub.add_commit(REPO, timm_repo())
    c2 = hub.add_commit(REPO + "2", timm_repo(seed=3))
    reg = registry(tmp_path / "reg")

    code, out, err = zoo(monkeypatch, capsys, "prefetch", "-f", "loop", "-d", "tiny-shapes,digits", "--registry", str(reg))
    assert code == 0, err
    for text in ("test_resnet.loop", "test_resnet.loop2", "tiny-shapes", c1[:19], c2[:19], ds_commit[:19], "4 item(s)"):
        assert text in out, (text, out)
    gets = hub.count("GET")

    hub.stop()
    out_dir = tmp_path / "out"
    code, out, err = zoo(monkeypatch, capsys, "run", "--offline", "-f", "loop", "-k", "1", "--members", "test_resnet.loop2",
                         "-d", "tiny-shapes", "--registry", str(reg), "--out", str(out_dir), "--image-size", "32",
                         "--device", "cpu", "--workers", "0", "--probes", "linear", "--grid", "0.1,1")
    assert code == 0, err
    with sqlite3.connect(out_dir / "results.sqlite") as con:
        prov = [json.loads(p) for (p,) in con.execute("SELECT provenance FROM results")]
    assert prov and all(p["dataset_revision"] == ds_commit for p in prov)
    assert {c for p in prov for c in p["revisions"].values()} == {c1, c2}

    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(out_dir))
    assert code == 0, err
    report = (out_dir / "report.md").read_text()
    section = report[report.index("## Revisions"):report.index("## Every row")]
    for text in (f"| dataset | tiny-shapes | {ds_commit} |", f"| checkpoint | test_resnet.loop | {c1} |",
                 f"| checkpoint | test_resnet.loop2 | {c2} |"):
        assert text in section, (text, section)
    assert hub.count("GET") == gets  # the offline run and the report asked the hub nothing


@pytest.mark.parametrize("missing", ["dataset", "checkpoint"])
def test_offline_with_part_of_the_inputs_cached_names_only_what_is_missing(hub, tmp_path, monkeypatch, capsys, cache_env, missing):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.add_commit(DS_REPO, dataset_repo(0), repo_type="dataset")
    hub.add_commit(REPO, timm_repo())
    hub.add_commit(REPO + "2", timm_repo(seed=3))
    reg = registry(tmp_path / "reg")
    fetch = ("--checkpoints", "test_resnet.loop,test_resnet.loop2", "-d", "digits") if missing == "dataset" else (
        "--checkpoints", "test_resnet.loop", "-d", "tiny-shapes")
    code, _, err = zoo(monkeypatch, capsys, "prefetch", "-f", "loop", "--registry", str(reg), *fetch)
    assert code == 0, err
    hub.stop()
    code, _, err = zoo(monkeypatch, capsys, "run", "--offline", "-f", "loop", "-k", "1", "--members", "test_resnet.loop2",
                       "-d", "tiny-shapes", "--registry", str(reg), "--out", str(tmp_path / "out"), "--device", "cpu")
    assert code == 1 and "Traceback" not in err
    named = err.split("On a machine with internet")[0]  # the missing items, before the prefetch hint
    assert ("'tiny-shapes'" in named) == (missing == "dataset")
    assert ("'test_resnet.loop2'" in named) == (missing == "checkpoint")
    assert "zoo-survey prefetch --family loop --datasets tiny-shapes" in err
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_a_dataset_that_changed_under_its_name_stops_at_load(hub, tmp_path):
    """An entry records the split sizes it was checked at; an upstream commit with other sizes is refused."""
    from zoo_survey.errors import ZooSurveyFailure

    v1 = hub.add_commit(DS_REPO, dataset_repo(0), repo_type="dataset")
    checked = "{train: 30, test: 12}"
    assert prepare(load_registry([registry(tmp_path / "a", sizes=checked)]).dataset("tiny-shapes")).revision == v1
    v2 = hub.add_commit(DS_REPO, dataset_repo(0, n_train=27), repo_type="dataset")
    with pytest.raises(ZooSurveyFailure) as e:
        prepare(load_registry([registry(tmp_path / "b", sizes=checked)]).dataset("tiny-shapes"))
    msg = str(e.value)
    for text in ("split 'train' has 27 rows", "checked at 30", "split_sizes", v2, "pin source.revision"):
        assert text in msg, msg
    pinned = prepare(load_registry([registry(tmp_path / "c", revision=v1, sizes=checked)]).dataset("tiny-shapes"))
    assert pinned.revision == v1  # pinning the checked commit keeps working
    with pytest.raises(ZooSurveyFailure, match=r"split 'validation' is not among the loaded splits \['test', 'train'\]"):
        prepare(load_registry([registry(tmp_path / "d", sizes="{train: 27, validation: 5}")]).dataset("tiny-shapes"))
