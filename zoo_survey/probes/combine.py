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


def probe_inputs(blocks: Mapping[str, Sequence[np.ndarray]], concat_input: str = "weighted"
                 ) -> tuple[dict[str, np.ndarray], tuple[int, ...] | None]:
    """One matrix per split for a probe, and the member widths when the probe weights the blocks itself.

    One block (a single model, or a width-matched control's pre-weighted projection) goes as it is. Several: side by
    side as they are with their widths (``concat_input="raw"``: the linear probes standardize every column on the rows
    they fit, train for the sweep and train+val for the refit, exactly as they do a single model's, then scale each
    block by 1/sqrt(width)); or weighted here on the train rows (:func:`weight_blocks`) for a probe that does not
    standardize (kNN, NCM).

    >>> X = np.ones((3, 2), dtype=np.float32)
    >>> Xs, widths = probe_inputs({"train": [X, X[:, :1]], "val": [X, X[:, :1]], "test": [X, X[:, :1]]}, "raw")
    >>> Xs["train"].shape, widths
    ((3, 3), (2, 1))
    """
    if len(blocks["train"]) == 1:
        return {s: b[0] for s, b in blocks.items()}, None
    if concat_input == "raw":
        return {s: np.concatenate(b, axis=1) for s, b in blocks.items()}, tuple(int(b.shape[1]) for b in blocks["train"])
    return weight_blocks(blocks), None


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
