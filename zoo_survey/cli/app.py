"""The ``zoo-survey`` application object and its entry point: one place formats errors and exit codes.

Exit codes: 0 success, 2 bad input, 1 a failure of the work, 130 interrupted.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from ..errors import ZooSurveyError

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


def _interrupted() -> None:
    err_console.print("interrupted: finished shards and result rows are kept; rerun the same command to resume")
    sys.exit(130)


def main() -> None:
    """Entry point: run the app, format user errors on one line, map them to exit codes."""
    try:
        rc = app(standalone_mode=False)  # click returns typer.Exit's code in this mode
        if rc == 130:  # typer turns Ctrl-C into Exit(130)
            _interrupted()
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except ZooSurveyError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except TyperException as e:  # usage errors (unknown option, bad value): click's own message, exit 2
        if hasattr(e, "show"):
            e.show()
        sys.exit(getattr(e, "exit_code", 2))
