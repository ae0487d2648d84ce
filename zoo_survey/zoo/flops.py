"""Compute budgets of a model: multiply-accumulates of one forward, counted rather than copied.

GFLOPs here follow the convention of timm's tables and the ResNet paper: multiply-
accumulates (ResNet-50 at 224 px = 4.1). torch's FlopCounterMode counts 2 per MAC.
"""

from __future__ import annotations


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
