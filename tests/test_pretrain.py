"""zoo-survey pretrain: the budget split, resume after kill -9, the written family surveyed, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import zoo

from zoo_survey.errors import ZooSurveyError
from zoo_survey.pretrain.budget import plan_zoo
from zoo_survey.pretrain.data import Batches, TrainingData
from zoo_survey.zoo.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
WIDE = {"channels": [64, 96, 96, 192], "stem_width": 32}


# --------------------------------------------------------------------------- the budget split


@pytest.mark.parametrize(("cats", "steps"), [((1, 2, 4), 1200), ((1, 3), 300), ((2, 8), 64), ((1, 2, 3, 4, 6), 120)])
def test_each_cat_group_sums_to_the_singles_budget(cats, steps):
    plan = plan_zoo("test_resnet", cats=cats, steps=steps, batch_size=32, wide_args=WIDE)
    single = plan.baseline
    assert single.group == "cat1" and single.steps == steps and single.images_seen == steps * 32
    for k in sorted({1, *cats}):
        group = plan.group(f"cat{k}")
        assert len(group) == k
        assert sum(m.steps for m in group) == single.steps
        assert sum(m.images_seen for m in group) == single.images_seen
        assert len({m.steps for m in group}) == 1  # equal shares
    wide = plan.group("wide")
    assert len(wide) == 1 and wide[0].steps == steps and wide[0].model_args == WIDE
    assert len({m.seed for m in plan.members}) == len(plan.members)  # independent seeds
    assert len({m.id for m in plan.members}) == len(plan.members)
    assert {g: len(ids) for g, ids in plan.ensembles.items()} == {**{f"cat{k}": k for k in sorted({1, *cats}) if k > 1},
                                                                  "wide": 1}


def test_an_images_budget_is_steps_of_the_batch():
    plan = plan_zoo("test_vit", cats=(1, 4), images=64_000, batch_size=64)
    assert plan.steps == 1000 and [m.steps for m in plan.group("cat4")] == [250] * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 1000, "cats": (1, 3)}, r"1,000 steps does not split into whole steps for CAT3 .*multiple of 3 steps, e.g. 999 or 1,002"),
        ({"steps": 10, "cats": (4, 6)}, r"CAT4/CAT6 .*multiple of 12 steps, e.g. 12 or 24"),
        ({"images": 1000, "batch_size": 64}, r"images=1000 is not a whole number of steps at batch_size=64; use a multiple of 64"),
        ({"images": 64 * 6, "batch_size": 64, "cats": (4,)}, r"6 steps does not split .*CAT4.* \(of 256 images at batch_size=64\)"),
        ({"steps": 10, "images": 640}, r"give the pretraining budget once"),
        ({}, r"give the pretraining budget once"),
        ({"steps": 0}, r"'steps' must be at least 1"),
        ({"steps": 8, "cats": (0, 2)}, r"'cats' values are ensemble sizes, at least 1"),
        ({"steps": 8, "wide_args": {}}, r"the wide single is the single's architecture made wider"),
        ({"steps": 8, "name": "my zoo"}, r"'name' 'my zoo': use letters, digits, '-' and '_'"),
    ],
)
def test_budget_errors(kwargs, message):
    with pytest.raises(ZooSurveyError, match=message):
        plan_zoo("test_resnet", **kwargs)


def test_batches_are_a_function_of_seed_and_step():
    rng = np.random.default_rng(0)
    data = TrainingData(None, None, rng.integers(0, 255, (50, 3, 8, 8), dtype=np.uint8),  # type: ignore[arg-type]
                        rng.integers(0, 3, 50), np.zeros((1, 3, 8, 8), np.uint8), np.zeros(1, np.int64))
    a, b = Batches(data, 16, 7, "crop-flip", "cpu"), Batches(data, 16, 7, "crop-flip", "cpu")
    later = [b.batch(s) for s in (9, 3)]  # asked in another order, after other steps
    for (xa, ya), (xb, yb) in zip([a.batch(s) for s in (9, 3)], later, strict=True):
        assert xa.equal(xb) and ya.equal(yb)
    other = Batches(data, 16, 8, "crop-flip", "cpu")
    assert not other.batch(3)[0].equal(a.batch(3)[0])
    # Steps 0..2 of 16 cover the 50 images of epoch 0 once (48 of them), step 3 crosses into epoch 1.
    seen = np.concatenate([a.positions(s).numpy() for s in range(3)])
    assert len(set(seen.tolist())) == 48
    assert len(a.positions(3)) == 16


# --------------------------------------------------------------------------- train, write, survey


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


PRETRAIN = ("pretrain", "-a", "test_resnet", "-d", "digits", "--image-size", "16", "--batch-size", "16", "--eval-max", "50")


def test_pretrained_family_validates_and_runs_through_the_survey(tmp_path, monkeypatch, capsys, cache_env, one_thread):
    out = tmp_path / "zoo"
    code, stdout, err = zoo(monkeypatch, capsys, *PRETRAIN, "--steps", "8", "--cat", "2", "--wide-args", json.dumps(WIDE),
                            "-o", str(out), "--checkpoint-every", "3")
    assert code == 0, err
    assert "4 member(s) trained, 0 already done" in stdout
    yaml_path = out / "timecat-test_resnet.yaml"
    code, stdout, err = zoo(monkeypatch, capsys, "registry", "validate", str(yaml_path))
    assert code == 0, err

    fam = load_registry([out]).family("timecat-test_resnet")
    single, m1, m2, wide = (fam.get(f"test_resnet.timecat-{t}") for t in ("cat1", "cat2-1", "cat2-2", "wide"))
    assert fam.baseline == single.id and dict(fam.ensembles) == {"cat2": (m1.id, m2.id), "wide": (wide.id,)}
    assert (single.pretrain.steps, m1.pretrain.steps, m2.pretrain.steps) == (8, 4, 4)
    assert m1.pretrain.images_seen + m2.pretrain.images_seen == single.pretrain.images_seen == 128
    assert m1.pretrain_emacs + m2.pretrain_emacs == pytest.approx(single.pretrain_emacs, rel=1e-12)
    assert len({single.pretrain.seed, m1.pretrain.seed, m2.pretrain.seed, wide.pretrain.seed}) == 4
    assert wide.model_args == WIDE and wide.params_m > 3 * single.params_m
    assert single.pretrain.data == "digits" and "adamw" in (single.pretrain.recipe or "")
    assert not list(out.rglob("*.state.pt"))  # finished members keep no training state

    # The survey reads the weights with the model_args and the training preprocessing.
    from zoo_survey.zoo.checkpoints import load_model, resolve

    resolved = resolve(wide)
    assert resolved.key()["model_args"] == WIDE and "model_args" not in resolve(single).key()
    assert (resolved.preprocessing.input_size, resolved.preprocessing.crop_pct) == (16, 1.0)
    assert load_model(resolved).num_features == 192

    run = ("run", "-r", str(out), "-f", "timecat-test_resnet", "-d", "digits", "--image-size", "16", "--max-train", "100",
           "--max-test", "60", "--probes", "linear", "--grid", "0.1,1", "--device", "cpu", "-o", str(tmp_path / "survey"))
    code, stdout, err = zoo(monkeypatch, capsys, *run, "--members", "cat2")
    assert code == 0, err
    assert "test_resnet.timecat-cat2-1+test_resnet.timecat-cat2-2" in stdout and "7 result row(s) written" in stdout  # + 2 width controls
    # Budget by pretraining compute: the two halves fit CAT1's budget exactly; the wide single (4x the compute) does not.
    code, stdout, err = zoo(monkeypatch, capsys, *run, "-k", "2", "--strategy", "budget", "--budget-by", "pretrain")
    assert code == 0, err
    assert "ensemble of 2 (budget): test_resnet.timecat-cat2-1+test_resnet.timecat-cat2-2" in stdout
    assert "0 result row(s) written, 7 already done" in stdout

    # Rerun of the same pretrain command: nothing trains, the weights stay as they were.
    before = (out / "timecat-test_resnet" / "timecat-cat1.safetensors").read_bytes()
    code, stdout, err = zoo(monkeypatch, capsys, *PRETRAIN, "--steps", "8", "--cat", "2", "--wide-args", json.dumps(WIDE),
                            "-o", str(out), "--checkpoint-every", "3")
    assert code == 0, err
    assert "0 member(s) trained, 4 already done" in stdout
    assert (out / "timecat-test_resnet" / "timecat-cat1.safetensors").read_bytes() == before
    # The same folder with another recipe is refused, naming what differs.
    code, stdout, err = zoo(monkeypatch, capsys, *PRETRAIN, "--steps", "8", "--cat", "2", "--lr", "0.01", "-o", str(out))
    assert code == 2 and "was trained with other settings (recipe differ)" in err


@pytest.fixture()
def one_thread():
    """Training in one thread here and in the subprocesses: the same arithmetic on both sides of the comparison, and
    on a shared, busy machine one thread is many times faster than two that wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    torch.set_num_threads(before)


def test_resume_after_kill_9_ends_with_the_uninterrupted_weights(tmp_path, one_thread):
    """A real process killed with SIGKILL in the middle of a member, then the same command again."""
    from zoo_survey.pretrain.run import pretrain
    from zoo_survey.pretrain.trainer import Recipe

    steps, every = 80, 4
    ref = tmp_path / "reference"
    pretrain(plan_zoo("test_resnet", cats=(2,), steps=steps, batch_size=16), load_registry().dataset("digits"),
             Recipe(image_size=16), ref, eval_max=50, checkpoint_every=every)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "zoo_survey", *PRETRAIN, "--steps", str(steps), "--cat", "2", "-o", str(out),
           "--checkpoint-every", str(every)]
    env = {**os.environ, **one_thread, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    folder = out / "timecat-test_resnet"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (folder / "timecat-cat2-1.state.pt").exists():  # CAT1 done, the first half-budget member under way
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (folder / "timecat-cat1.json").is_file() and not (folder / "timecat-cat2-1.json").exists()
    cat1_record = (folder / "timecat-cat1.json").read_bytes()

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "2 member(s) trained, 1 already done" in rerun.stdout
    assert (folder / "timecat-cat1.json").read_bytes() == cat1_record  # finished members are not retrained
    record = json.loads((folder / "timecat-cat2-1.json").read_text())
    assert record["resumed_at"] and 0 < record["resumed_at"][0] < steps // 2 and record["resumed_at"][0] % every == 0
    for tag in ("cat1", "cat2-1", "cat2-2"):
        a, b = _weights(ref / "timecat-test_resnet" / f"timecat-{tag}.safetensors"), _weights(folder / f"timecat-{tag}.safetensors")
        assert a.keys() == b.keys()
        worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        assert worst <= 1e-5, f"{tag}: resumed weights differ from the uninterrupted run by {worst}"
    assert (ref / "timecat-test_resnet.yaml").read_text().replace(str(ref), "X") == \
        (out / "timecat-test_resnet.yaml").read_text().replace(str(out), "X")


# --------------------------------------------------------------------------- bad input


def _no_labels(tmp_path: Path) -> Path:
    """An image folder with no class subfolders: images, but no labels."""
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "nolabels" / split).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "nolabels" / split / f"{i}.png")
    (tmp_path / "ds.yaml").write_text(
        "datasets:\n  - {id: nolabels, source: {type: imagefolder, path: nolabels}, num_classes: 2}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-a", "test_resnt", "-d", "digits", "--steps", "8"), r"unknown timm architecture .*'test_resnt'; did you mean 'test_resnet'"),
        (("-a", "test_resnet", "-d", "digits", "--steps", "10", "--cat", "1,4"),
         r"a budget of 10 steps does not split into whole steps for CAT4"),
        (("-a", "test_resnet", "-d", "digts", "--steps", "8"), r"unknown dataset 'digts'; did you mean 'digits'"),
        (("-a", "test_resnet", "-d", "nolabels", "--steps", "8"), r"dataset 'nolabels': split 'train' has 4 of 4 images without a label"),
        (("-a", "test_resnet", "-d", "digits", "--steps", "8", "--model-args", "{width: 2}"), r"--model-args must be a JSON object"),
        (("-a", "test_resnet", "-d", "digits", "--steps", "8", "--model-args", '{"no_such_kwarg": 2}'),
         r"timm cannot build 'test_resnet' with model_args \{'no_such_kwarg': 2\}"),
        (("-a", "test_resnet", "-d", "digits", "--steps", "8", "--opt", "adamm"), r"unknown optimizer \(timm.optim\) 'adamm'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    reg = _no_labels(tmp_path)
    code, out, err = zoo(monkeypatch, capsys, "pretrain", "-r", str(reg), *args, "-o", str(tmp_path / "zoo"),
                         "--image-size", "16")
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # (datasets prints its own progress)
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, errors[0]), err
    assert not (tmp_path / "zoo").exists() or not list((tmp_path / "zoo").rglob("*.safetensors"))
