"""The ``zoo-survey`` command line. Commands are thin: they parse options and call library functions.

Each command module registers its commands on :data:`app`. Heavy third-party modules
(torch, timm, datasets, huggingface_hub) are imported only where work happens, so
``--help`` is quick and ``--offline`` is set before huggingface_hub reads it.
"""

from . import cache, pretrain, registry, report, run  # noqa: F401 - importing registers the commands
from .app import app, main, script

__all__ = ["app", "main", "script"]
