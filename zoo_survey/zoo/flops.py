"""Compute budgets of a model: multiply-accumulates of one forward, counted rather than copied.

GMACs here (`gmacs` in the registry) follow the convention of timm's tables and the ResNet paper: multiply-
accumulates (ResNet-50 at 224 px = 4.1). torch's FlopCounterMode counts 2 per MAC.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..digests import canonical_digest
from ..files import WriteError, atomic_write

BUDGET_RTOL = 1e-9


def within_budget(cost: float, limit: float) -> bool:
    """``cost <= limit`` up to rounding: k members of 1/k of a budget each sum to the whole in exact arithmetic,
    but not always in floating point (``sum([0.1] * 10) > 1.0``).

    >>> within_budget(sum([0.1] * 10), 1.0)
    True
    """
    return cost <= limit * (1 + BUDGET_RTOL)


def flop_counter():
    """torch's FlopCounterMode, also counting the CPU fused-attention kernel it misses.

    On CPU ``F.scaled_dot_product_attention`` dispatches to
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's table lacks, so
    a ViT's attention matmuls (about 4% of ViT-B/16 at 224) would go uncounted.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    custom = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        custom[cpu_sdpa] = lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
    return FlopCounterMode(display=False, custom_mapping=custom)


def count_gmacs(forward, input_size: int, device: str = "cpu") -> float:
    """GMACs of ``forward`` on one 3 x input_size x input_size image.

    >>> count_gmacs(timm.create_model("resnet50").eval(), 224)   # doctest: +SKIP
    4.1...
    """
    import torch

    with torch.no_grad(), flop_counter() as counter:
        forward(torch.zeros(1, 3, input_size, input_size, device=device))
    return counter.get_total_flops() / 2e9


class GmacsMemo:
    """Counted GMACs remembered in a small JSON file (in the feature cache's root), so a model is counted once
    per (architecture, model arguments, resolution, feature output), not once per run.

    >>> memo = GmacsMemo(cache_root / "gmacs.json")                                  # doctest: +SKIP
    >>> memo.get({"arch": "resnet50", "input_size": 224}, lambda: count_gmacs(m, 224))  # doctest: +SKIP
    4.1...
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, float]:
        """The remembered values; a damaged file, or an entry that is not a positive finite number, counts as
        not remembered (it is counted again and rewritten), never as an error."""
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: float(v) for k, v in data.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0}

    def get(self, key: Mapping[str, Any], count: Callable[[], float]) -> float:
        """The remembered value for ``key``, else ``count()``, remembered (a failed write only loses the memo).
        The read-change-write runs under a file lock, so two processes counting different models keep both."""
        digest = canonical_digest(dict(key))[:20]
        known = self._read()
        if digest in known:
            return known[digest]
        value = float(count())
        try:
            with FileLock(str(self.path) + ".lock", timeout=60):
                merged = {**self._read(), digest: value}
                atomic_write(self.path, lambda f: f.write(json.dumps(merged, indent=1).encode()))
        except (WriteError, OSError, Timeout):
            pass  # a read-only cache still extracts; the next run counts again
        return value
