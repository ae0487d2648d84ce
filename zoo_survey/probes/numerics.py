"""The numerics a probe's fit runs under: one thread, recorded in each row (issue 22).

Light on purpose (torch and threadpoolctl are imported inside the functions): the survey's
planning code imports it without loading torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Every fit and prediction runs with this many threads, whatever the process has (issue 22): float sums in another
# order (torch's reductions, MKL's and OpenBLAS's GEMMs split by thread) move the L-BFGS path, and on a flat
# validation curve the chosen C. One thread gives the same bits on 1 or 2 cores, plain or on Ray.
FIT_THREADS = 1


@contextmanager
def fit_threads() -> Iterator[None]:
    """Run the block with :data:`FIT_THREADS` torch intra-op threads (MKL included) and BLAS/OpenMP threads
    (threadpoolctl: numpy's OpenBLAS), restoring the caller's counts after; nests. Process-wide while it runs.

    >>> with fit_threads():                                  # doctest: +SKIP
    ...     probe.fit(X, y, X_val=Xv, y_val=yv)
    """
    global _DEPTH
    if _DEPTH:  # already inside: nothing to set (threadpoolctl's library scan costs ~2 ms a call)
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(FIT_THREADS)
    _DEPTH += 1
    try:
        with _controller().limit(limits=FIT_THREADS):
            yield
    finally:
        _DEPTH -= 1
        torch.set_num_threads(before)


_DEPTH = 0  # fit_threads() blocks open in this process (the settings are process-wide)
_SCANNED: list[Any] = []  # [threadpoolctl controller, len(sys.modules) when it scanned]


def _controller() -> Any:
    """threadpoolctl's view of the BLAS and OpenMP libraries loaded, scanned again only when modules were imported
    since (a new extension module is how a new native library arrives); a scan costs ~2 ms, a row's fit ~0.1 s."""
    import sys

    from threadpoolctl import ThreadpoolController

    if not _SCANNED or _SCANNED[1] != len(sys.modules):
        _SCANNED[:] = [ThreadpoolController(), len(sys.modules)]
    return _SCANNED[0]


def numerics(device: str) -> dict[str, Any]:
    """What could still change a probe's numbers on the same features (a row's ``provenance["numerics"]``):
    the device, the fit's dtype, torch's version, the fit's thread count and the CPU's vector ISA (MKL and
    oneDNN pick kernels by it)."""
    import torch

    return {"device": device, "dtype": "float32", "torch": torch.__version__, "fit_threads": FIT_THREADS,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
