"""One error type for everything a user can fix, formatted in one place by the CLI."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooSurveyError(Exception):
    """A problem the user can fix: bad input, a missing file, an unknown name.

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    Anything else that escapes is a bug or an environment failure (exit 1).
    """

    exit_code = 2


class ZooSurveyFailure(ZooSurveyError):
    """The input was fine but the work failed (a weight file that will not load, a network error)."""

    exit_code = 1


class NotCachedError(ZooSurveyFailure):
    """Offline, and something a run needs is not in the local caches (``zoo-survey prefetch`` fetches it)."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(f"{what}: not in the local cache{'; ' + hint if hint else ''}")
        self.items = [what]


def gather(problems: list[ZooSurveyError]) -> ZooSurveyError:
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
    cls = ZooSurveyError if any(p.exit_code == ZooSurveyError.exit_code for p in problems) else ZooSurveyFailure
    return cls(f"{len(problems)} problems, nothing was run:\n" + "\n".join(f"  - {p}" for p in problems))


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


def unknown(kind: str, name: str, choices: Iterable[str]) -> ZooSurveyError:
    """Build the standard error for an unknown family, dataset, checkpoint or probe name."""
    return ZooSurveyError(f"unknown {kind} {name!r}; {did_you_mean(name, choices)}")
