"""Offline mode: a run with inputs missing from the caches says what is missing, all at once, and how to prefetch it."""

from __future__ import annotations

import pytest
from test_cli import zoo


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    empty = tmp_path / "empty-hf-cache"
    empty.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    return empty


def test_offline_run_with_nothing_cached_names_everything_missing_and_the_prefetch_command(
    tmp_path, monkeypatch, capsys, empty_hub, cache_env
):
    out_dir = tmp_path / "out"
    code, out, err = zoo(monkeypatch, capsys, "run", "--offline", "-f", "resnet", "-k", "2", "-d", "digits,cifar10,pets",
                         "--out", str(out_dir), "--device", "cpu")
    assert code == 1, (out, err)
    assert "Traceback" not in err and err.count("error:") == 1
    # every missing input once: the plan's three checkpoints and the two hub datasets (digits is bundled)
    items = [ln for ln in err.splitlines() if ln.startswith("  - ")]
    assert len(items) == 5, err
    for name in ("'resnet152.a1_in1k'", "'resnet18.a1_in1k'", "'resnet18.tv_in1k'", "'cifar10'", "'pets'"):
        assert sum(name in ln for ln in items) == 1, (name, err)
    assert "5 item(s) this run needs are not in the local cache" in err
    assert "zoo-survey prefetch --family resnet --datasets digits,cifar10,pets" in err
    assert not (out_dir / "results.sqlite").exists()  # nothing written
    assert not any(cache_env.rglob("*.npy"))
    assert not any(empty_hub.iterdir())  # and nothing fetched


def test_offline_extract_names_the_checkpoints_it_was_asked_for(tmp_path, monkeypatch, capsys, empty_hub, cache_env):
    code, _, err = zoo(monkeypatch, capsys, "extract", "--offline", "-f", "vit", "--checkpoints", "vit_small_patch16_224.augreg_in21k_ft_in1k",
                       "-d", "digits", "--device", "cpu")
    assert code == 1 and "Traceback" not in err
    assert "vit_small_patch16_224.augreg_in21k_ft_in1k" in err and "not in the local cache" in err
    assert "zoo-survey prefetch --family vit --datasets digits --checkpoints vit_small_patch16_224.augreg_in21k_ft_in1k" in err


def test_prefetch_refuses_to_run_offline(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = zoo(monkeypatch, capsys, "prefetch", "-f", "resnet", "-d", "digits")
    assert code == 2 and "HF_HUB_OFFLINE is set" in err


def test_a_bad_and_a_missing_input_are_reported_together(tmp_path, monkeypatch, capsys, empty_hub, cache_env):
    """Offline with a missing checkpoint and a dataset that cannot load: both in one message, nothing run."""
    code, _, err = zoo(monkeypatch, capsys, "run", "--offline", "-f", "resnet", "-k", "2", "-d", "digits,fashion-mnist-elsewhere",
                       "--out", str(tmp_path / "out"), "--device", "cpu", "--registry", str(_broken_fmnist(tmp_path)))
    assert code == 2 and "Traceback" not in err  # a wrong path is bad input: exit 2
    assert "4 problems, nothing was run" in err and "/nonexistent" in err and "resnet18.a1_in1k" in err
    assert not (tmp_path / "out" / "results.sqlite").exists()


def _broken_fmnist(tmp_path):
    folder = tmp_path / "reg"
    folder.mkdir()
    (folder / "d.yaml").write_text(
        "datasets:\n  - {id: fashion-mnist-elsewhere, source: {type: builtin, name: fashion-mnist, path: /nonexistent}, num_classes: 10}\n"
    )
    return folder
