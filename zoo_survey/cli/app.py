"""The ``zoo-survey`` application object and its entry point: one place formats errors and exit codes.

Exit codes: 0 success, 2 bad input, 1 a failure of the work (or of the disk, a pipe, the store), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP).

Library errors name parameters (``'max_train'``, ``bad_images='skip'``); :func:`flag_message` says them as flags.
"""

from __future__ import annotations

import errno
import functools
import importlib
import os
import re
import signal
import sqlite3
import sys
from types import FrameType

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from ..errors import ZooSurveyException
from ..threads import configure as configure_threads

app = typer.Typer(
    help="Survey model zoos: does one large pretrained model transfer better than an ensemble of smaller ones?\n\n"
    "Examples:\n\n"
    "  zoo-survey run                                  # offline efficientnet-lite family, built-in datasets\n\n"
    "  zoo-survey run --family resnet --ensemble 4     # needs the hub (or a filled HF cache)\n\n"
    "  zoo-survey prefetch -f resnet -d cifar10        # on a login node; then run with --offline\n\n"
    "  zoo-survey report --format html",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="List, show and validate registry entries.", no_args_is_help=True)
cache_app = typer.Typer(help="Inspect, verify and clean the feature cache.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(cache_app, name="cache")

console = Console()
err_console = Console(stderr=True)

# The module of ``zoo_survey.cli`` that registers each command on :data:`app`. The script imports only the one its
# command line names (a report never loads what `run` needs: the extraction, the registry's models, pydantic); with
# no command, ``--help``, or a name that is not a command, it imports them all (the help lists every command, and
# click suggests the closest for a typo).
COMMANDS = {"run": "run", "extract": "run", "prefetch": "run", "report": "report", "pretrain": "pretrain",
            "registry": "registry", "cache": "cache"}


def command_of(argv: list[str]) -> str | None:
    """The command a command line (the arguments after the program name) names: its first word that is no option."""
    return next((a for a in argv if not a.startswith("-")), None)


def load_commands(argv: list[str] | None = None) -> typer.Typer:
    """Register the commands that ``argv`` (the arguments after the program name) can run on :data:`app`, and return
    it; ``None``: every command. Importing a command's module twice registers it once."""
    command = command_of(argv) if argv is not None else None
    for name in sorted({COMMANDS[command]} if command in COMMANDS else set(COMMANDS.values())):
        importlib.import_module(f"{__package__}.{name}")
    return app


# A library parameter whose flag is not ``--`` + its name with '-' for '_'.
PARAM_FLAGS = {"k": "--ensemble", "pixel_route": "--preprocess", "layer": "--feature-output", "cats": "--cat", "path": "--to"}


def flag(param: str) -> str:
    """The CLI flag that sets library parameter ``param``: ``max_train`` -> ``--max-train``."""
    return PARAM_FLAGS.get(param, "--" + param.replace("_", "-"))


def flag_message(e: ZooSurveyException) -> str:
    """``e``'s message with each parameter it names said as the flag: ``'ensemble'`` -> ``--ensemble``,
    ``bad_images='skip'`` -> ``--bad-images skip``, ``allow_heavy=True`` -> ``--allow-heavy``.

    >>> from zoo_survey.errors import ZooSurveyError
    >>> flag_message(ZooSurveyError("'ensemble' must be at least 1; or pass allow_heavy=True, max_train=200", param=["ensemble", "allow_heavy", "max_train"]))
    '--ensemble must be at least 1; or pass --allow-heavy, --max-train 200'
    """
    text = str(e)
    for p in e.params:
        f, name = flag(p), rf"(?<![\w'-]){re.escape(p)}"
        text = re.sub(rf"'{re.escape(p)}'", f, text)
        text = re.sub(rf"{name}=True\b", f, text)
        text = re.sub(rf"{name}=(?:'([^' ]*)'|\"([^\" ]*)\"|([^\s,;)]+))", functools.partial(_flag_value, f), text)
    return text


def _flag_value(f: str, m: re.Match[str]) -> str:
    return f"{f} {m.group(1) or m.group(2) or m.group(3) or ''}".rstrip()


_signalled: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so it stops like Ctrl-C (finished work stays)."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    raise Terminated(signum)


def _interrupted() -> None:
    signum = _signalled[0] if _signalled else signal.SIGINT
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    err_console.print(f"{what}: finished shards and result rows are kept; rerun the same command to resume", soft_wrap=True)
    sys.exit(128 + signum)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the exit's flush of what is buffered cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass


def _writing_stdout(e: OSError) -> bool:
    """Whether ``e`` came from writing standard output (rich's console writing it, or its flush failing again)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    local = tb.tb_frame.f_locals.values() if tb is not None else ()
    if any(v is sys.stdout or getattr(v, "file", None) is sys.stdout for v in local):
        return True
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        return True
    return False


def _os_error(e: OSError) -> None:
    """A full disk, a read-only folder, a closed pipe: one line naming what failed and what to do, exit 1."""
    if isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE:  # `zoo-survey ... | head -1`: the reader is gone
        _quiet_stdout()
        sys.exit(1)  # quietly, as rich does when the pipe closes under its console
    what = f"{e.filename}: " if e.filename else ""
    if not what and _writing_stdout(e):
        what = "cannot write the output (standard output): "
        _quiet_stdout()
    advice = {
        errno.ENOSPC: "free space there, or write elsewhere (--out, --cache-dir, or redirect the output)",
        errno.EROFS: "choose a folder you can write (--out, --cache-dir)",
        errno.EACCES: "choose a folder you can write (--out, --cache-dir), or fix its permissions",
        errno.EPERM: "choose a folder you can write (--out, --cache-dir), or fix its permissions",
    }.get(e.errno or 0, "check that path and rerun")
    err_console.print(f"[bold red]error:[/] {escape(what + str(e.strerror or e))}; {advice}", highlight=False, soft_wrap=True)
    sys.exit(1)


def main() -> None:
    """Entry point: run the app, format its errors on one line, map them to exit codes.

    Thread counts follow the CPUs this process may use, and OpenMP waits passively (:mod:`zoo_survey.threads`).
    SIGTERM and SIGHUP stop it like Ctrl-C: finished shards and rows stay, and a rerun resumes.
    """
    # Before torch and numpy load: usable CPUs (affinity, cgroup quota), and OpenMP threads that do not spin. A report
    # draws its plots in worker processes on the other CPUs: its own BLAS keeps to one thread (2 fought the worker).
    configure_threads(count=1 if command_of(sys.argv[1:]) in PLOT_WORKERS else None)
    signals = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    before = {s: signal.signal(s, _on_signal) for s in signals}
    _signalled.clear()
    load_commands(sys.argv[1:])
    try:
        _main()
    finally:  # main() called in a process that goes on (a test): its own handlers again
        for s, handler in before.items():
            signal.signal(s, handler)


# Commands that leave nothing to clean up when they succeed (no child process alive, no temporary folder, every file
# closed): the script ends at once after them, without the interpreter's teardown of pandas, matplotlib and scipy's
# objects (about 0.2 s of the first report's 1.8 s).
FAST_EXIT = frozenset({"report"})
PLOT_WORKERS = frozenset({"report"})  # commands that use the other CPUs through worker processes


def script() -> None:
    """The ``zoo-survey`` script: :func:`main`; after a command of :data:`FAST_EXIT` that succeeded, the output is
    flushed and the process ends without its teardown. Errors and every other command exit as usual."""
    main()
    end_quickly()


def end_quickly() -> None:
    """End the process now, output flushed, if the command line's command is one of :data:`FAST_EXIT` (call it only
    after the command succeeded)."""
    if command_of(sys.argv[1:]) in FAST_EXIT:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # the reader is gone (`| head -1`): quietly 1, as main() does
            os._exit(1)
        os._exit(0)


def _main() -> None:
    try:
        rc = app(standalone_mode=False)  # click returns typer.Exit's code in this mode
        if rc == 130:  # typer turns Ctrl-C into Exit(130)
            _interrupted()
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except ZooSurveyException as e:
        err_console.print(f"[bold red]error:[/] {escape(flag_message(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except sqlite3.DatabaseError as e:  # the results store: locked past its timeout, damaged, or its disk full
        err_console.print(f"[bold red]error:[/] results store: {escape(str(e))}; if it is damaged, move results.sqlite "
                          "away (or pick another --out) and rerun", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as e:
        _os_error(e)
    except TyperException as e:  # usage errors (unknown option, bad value): click's own message, exit 2
        if hasattr(e, "show"):
            e.show()
        sys.exit(getattr(e, "exit_code", 2))
