"""Fair on a shared machine: thread counts from the CPUs this process may really use, and no spinning.

- :func:`usable_cpus`: the CPUs this process may use: its affinity mask and its cgroup CPU
  quota (a container or a SLURM job given 2 of 64 cores), as loky's ``cpu_count`` reads them;
  ``os.cpu_count()`` counts the machine's cores and over-subscribes a shared one.
- :func:`configure` (the command line and ``zs.survey`` call it before torch loads): OpenMP,
  BLAS and torch get :func:`usable_cpus` threads, and OpenMP threads sleep when they have no
  work (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning at barriers, which on a loaded
  machine turns every descheduled thread into a wait for all the others (docs/benchmarks.md).
  A variable the user set wins; Ray workers get the same (``ray_runner.worker_env``).

Light on purpose: no torch, numpy or joblib at import.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}  # libgomp (torch's wheels) and Intel's OpenMP: block, do not spin
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cpus() -> int:
    """CPUs this process may use: affinity and cgroup quota (loky's ``cpu_count``), at least 1."""
    try:
        from joblib.externals.loky import cpu_count  # type: ignore[import-untyped]
    except ImportError:  # joblib comes with scikit-learn; without it, the affinity mask alone
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(cpu_count(only_physical_cores=False)))


def thread_env(environ: MutableMapping[str, str] | None = None, count: int | None = None) -> dict[str, str]:
    """What :func:`configure` sets: the passive wait policy and, per library, ``count`` threads (default
    :func:`usable_cpus`); a variable already in ``environ`` is left out (the user's choice wins)."""
    environ = os.environ if environ is None else environ
    want = {**WAIT_POLICY}
    if not all(v in environ for v in THREAD_VARS):
        # One user-set count (OMP_NUM_THREADS=1) holds for the other libraries too: MKL at another count would sum
        # torch's GEMMs in another order than the user asked for.
        n = next((environ[v] for v in THREAD_VARS if v in environ), None) or str(count or usable_cpus())
        want.update({v: n for v in THREAD_VARS})
    return {k: v for k, v in want.items() if k not in environ}


def configure(environ: MutableMapping[str, str] | None = None, count: int | None = None) -> dict[str, str]:
    """Set :func:`thread_env` in ``environ`` (default ``os.environ``): read by OpenMP and BLAS when they load,
    so call it before torch or numpy's BLAS is imported; ``count``: threads per library instead of
    :func:`usable_cpus` (the CLI passes 1 for a report, whose plot workers use the other CPUs). When torch is
    loaded already, its intra-op threads are lowered to :func:`usable_cpus` (never raised). Returns what it set."""
    environ = os.environ if environ is None else environ
    added = thread_env(environ, count)
    environ.update(added)
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads") and torch.get_num_threads() > usable_cpus():
        torch.set_num_threads(usable_cpus())
    return added
