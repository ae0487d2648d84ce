"""The ``zoo-survey`` command line. Commands are thin: they parse options and call library functions.

Each command module registers its commands on :data:`app` when imported; :func:`main` imports only the module
of the command it runs (:func:`~.app.load_commands`; all of them for ``--help``), so ``report``, ``registry list``
and ``cache ls`` start without loading what ``run`` needs. Heavy third-party modules (torch, timm, datasets,
huggingface_hub) are imported only where work happens, so ``--help`` is quick and ``--offline`` is set before
huggingface_hub reads it. ``load_commands()`` registers every command on ``app`` (for a test runner or docs).
"""

from .app import app, load_commands, main, script

__all__ = ["app", "load_commands", "main", "script"]
