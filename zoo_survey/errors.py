"""Typed errors for everything zoo-survey raises on purpose, and the helpers that word them.

- :class:`ZooSurveyException`: the base; ``exit_code`` is what the CLI exits with.
- :class:`ZooSurveyError` (a ``ValueError``): bad input the caller can fix (exit 2).
- :class:`ZooSurveyFailure` (a ``RuntimeError``): the input was fine but the work failed (exit 1).
- :class:`NotCachedError` (a failure and an ``OSError``): offline, and something is not in the local caches.

A message names the library *parameter* it is about, as Python spells it: quoted (``'ensemble' must be
at least 1``) or as a keyword with a value (``pass bad_images='skip'``); the error lists those names in
``params``. The CLI alone turns them into its flags (``--ensemble``, ``--bad-images skip``):
:func:`zoo_survey.cli.app.flag_message`.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Sequence
from typing import Any


class ZooSurveyException(Exception):
    """Base of every error zoo-survey raises on purpose. ``params``: the parameters the message names."""

    exit_code = 1

    def __init__(self, *args: Any, param: str | Sequence[str] | None = None):
        super().__init__(*args)
        self.params: tuple[str, ...] = (param,) if isinstance(param, str) else tuple(param or ())

    @property
    def param(self) -> str | None:
        """The (first) parameter this error is about, or ``None``."""
        return self.params[0] if self.params else None


class ZooSurveyError(ZooSurveyException, ValueError):
    """A problem the user can fix: bad input, a missing file, an unknown name.

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """

    exit_code = 2


class ZooSurveyFailure(ZooSurveyException, RuntimeError):
    """The input was fine but the work failed (a weight file that will not load, a network error); exit 1."""

    exit_code = 1


class NotCachedError(ZooSurveyFailure, OSError):
    """Offline, and something a run needs is not in the local caches (``zoo-survey prefetch`` fetches it)."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(f"{what}: not in the local cache{'; ' + hint if hint else ''}")
        self.items = [what]

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs; the message is the one argument
        return str(self.args[0]) if self.args else ""


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut to about ``limit`` characters, for a message that shows user input.

    A hostile YAML (chained anchors) can expand to a value of billions of items; its repr would never end.

    >>> shown("x" * 1000, limit=20)
    "'xxxxxxx...xxxxxxxx'"
    >>> len(shown([[list(range(100))] * 100] * 100)) < 250
    True
    """
    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 12
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gather(problems: list[ZooSurveyException]) -> ZooSurveyException:
    """One error for several: every message listed; what is missing from the cache said once.

    A run checks all its inputs before any work, so the user fixes them in one go.
    """
    if len(problems) == 1:
        return problems[0]
    missing = [p for p in problems if isinstance(p, NotCachedError)]
    if len(missing) == len(problems):
        err = NotCachedError(f"{len(missing)} item(s) a run needs")
        err.items = [i for p in missing for i in p.items]
        err.args = (
            f"offline, and {len(err.items)} item(s) this run needs are not in the local cache:\n"
            + "\n".join(f"  - {i}" for i in err.items),
        )
        return err
    cls: type[ZooSurveyException] = (
        ZooSurveyError if any(p.exit_code == ZooSurveyError.exit_code for p in problems) else ZooSurveyFailure
    )
    params = tuple(dict.fromkeys(n for p in problems for n in p.params))
    return cls(f"{len(problems)} problems, nothing was run:\n" + "\n".join(f"  - {p}" for p in problems), param=params)


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``did you mean ...?`` suffix for an unknown ``name``, or a list of valid names.

    >>> did_you_mean("resnt", ["resnet", "vit"])
    "did you mean 'resnet'?"
    """
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if not choices:
        return "none are defined"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"choose one of: {shown}"


def unknown(kind: str, name: str, choices: Iterable[str], param: str | None = None) -> ZooSurveyError:
    """Build the standard error for an unknown family, dataset, checkpoint or probe name (``param``: the parameter
    that gave it, quoted in ``kind``)."""
    return ZooSurveyError(f"unknown {kind} {shown(name)}; {did_you_mean(str(name), choices)}", param=param)
