"""Faults for the Ray tests, installed in every Ray worker of the test cluster (``worker_process_setup_hook``).

The wrapper always calls the real ``EntryWriter.write``; nothing is replaced. After a
worker has written the second shard of an entry (mid-extraction: more shards follow), it
looks in the folder named by ``$ZOO_SURVEY_TEST_RAY_FAULT`` for an armed fault:

- ``kill``: the worker SIGKILLs itself (a worker process dying mid-extraction);
- ``stall``: on the node whose id the file holds, the worker writes ``stalled`` and hangs,
  so the test can remove that node while it is mid-extraction.

Exactly one worker takes each armed fault (it renames the file), so the worker Ray
restarts does not meet it again.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "ZOO_SURVEY_TEST_RAY_FAULT"


def install() -> None:
    folder = os.environ.get(FAULT_ENV)
    if not folder:
        return
    from zoo_survey.features.cache import EntryWriter

    real_write = EntryWriter.write

    def write(self, shard, *args, **kwargs):
        real_write(self, shard, *args, **kwargs)
        if shard == 1 and self.n_shards > 2:
            _fault(folder)

    EntryWriter.write = write


def _take(path: str) -> bool:
    try:
        os.rename(path, f"{path}.taken-by-{os.getpid()}")
        return True
    except FileNotFoundError:
        return False


def _fault(folder: str) -> None:
    if _take(os.path.join(folder, "kill")):
        os.kill(os.getpid(), signal.SIGKILL)
    stall = os.path.join(folder, "stall")
    try:
        with open(stall) as f:
            node = f.read().strip()
    except FileNotFoundError:
        return
    import ray

    if ray.get_runtime_context().get_node_id() == node and _take(stall):
        with open(os.path.join(folder, "stalled"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)  # until the test removes this node
