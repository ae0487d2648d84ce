"""Combination rules: how an ensemble's member feature blocks become one matrix for a probe.

Output averaging (one probe per member, probabilities averaged) lives in
:meth:`zoo_survey.probes.base.Probe.run`; this module holds the concatenation rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def weight_blocks(blocks: Mapping[str, Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate members' features with equal weight per member.

    Each member's block is standardized with its train statistics and scaled by
    1/sqrt(width), so every block has the same total variance (1) and a wider member
    does not dominate. A single model's block is returned as it is (its probe standardizes).

    >>> X = np.arange(6, dtype=np.float32).reshape(3, 2)
    >>> weight_blocks({"train": [X, X], "val": [X, X], "test": [X, X]})["train"].shape
    (3, 4)
    """
    if len(blocks["train"]) == 1:
        return {s: b[0] for s, b in blocks.items()}
    out: dict[str, list[np.ndarray]] = {s: [] for s in blocks}
    for i, train in enumerate(blocks["train"]):
        mean, std = train.mean(0), train.std(0)
        std[std < 1e-6] = 1.0
        scale = 1.0 / np.sqrt(train.shape[1])
        for s in blocks:
            out[s].append(((blocks[s][i] - mean) / std * scale).astype(np.float32))
    return {s: np.concatenate(b, axis=1) for s, b in out.items()}


def standardized_blocks(blocks: Sequence[np.ndarray], fit: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """What a probe sees, for scores that have no probe (LogME, CKA): every member's block standardized with the
    statistics of its rows in ``fit`` (default: the block itself) and scaled by 1/sqrt(width), side by side. One
    block (a single model) gets the same rule, so a single and a concatenation are scored like for like: the linear
    probe standardizes a single model's columns, :func:`weight_blocks` a concatenation's blocks; neither score is
    invariant to per-column scale (the 1/sqrt(width) of one block is a global scale, which LogME's evidence and
    CKA ignore).

    >>> X = np.array([[0.0, 10.0], [2.0, 30.0]])
    >>> standardized_blocks([X]).round(3).tolist()
    [[-0.707, -0.707], [0.707, 0.707]]
    """
    fit = blocks if fit is None else fit
    if len(fit) != len(blocks):
        raise ValueError(f"{len(blocks)} blocks but statistics for {len(fit)}")
    out = []
    for b, f in zip(blocks, fit, strict=True):
        f = np.asarray(f, dtype=np.float64)
        mean, std = f.mean(0), f.std(0)
        std[std < 1e-6] = 1.0
        out.append((np.asarray(b, dtype=np.float64) - mean) / std / np.sqrt(f.shape[1]))
    return np.concatenate(out, axis=1)
