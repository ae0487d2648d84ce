"""Hugging Face Hub calls with retries and one-line errors, shared by checkpoints and datasets.

Every download goes through ``huggingface_hub`` into its cache (``HF_HUB_CACHE``), so
``zoo-survey prefetch`` on a machine with internet and ``--offline`` elsewhere see the
same files. Server errors (5xx, 408, 429), timeouts and dropped or refused connections
are retried ``ZOO_SURVEY_HUB_RETRIES`` times (default 3), waiting ``ZOO_SURVEY_HUB_BACKOFF``
seconds (default 1), doubled after each try; then one line names the repo, the file,
what went wrong and what to do. After a hub outlasted the retries, later calls in the same
process try once (for ``FAILED_FOR_S``, or until it answers again). A missing, gated or
private repo and an unknown revision are not retried; offline, a file missing from the
cache is a :class:`NotCachedError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import NotCachedError, ZooSurveyError, ZooSurveyFailure

T = TypeVar("T")
log = logging.getLogger(__name__)

# Endpoints whose requests outlasted every retry, and when: for a while after, each call tries
# once (a cached file still resolves) instead of waiting through the backoff again, so a run
# over 40 checkpoints with the hub down fails in seconds, not minutes.
_FAILED: dict[str, float] = {}
FAILED_FOR_S = 300.0


def forget_failures() -> None:
    """Retry in full again: forget which hubs failed (a long-lived process, after the network is back)."""
    _FAILED.clear()


def env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ZooSurveyError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ZooSurveyError(f"{name}={raw!r} must be >= 0")
    return value


def first_line(e: BaseException) -> str:
    text = " ".join(str(e).split("\n\n", 1)[-1].split()) if "\n\n" in str(e) else (str(e).splitlines() or [""])[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def not_cached_hint(repo: str, revision: str | None, repo_type: str = "model") -> str:
    kind = " --repo-type dataset" if repo_type == "dataset" else ""
    rev = f" --revision {revision}" if revision else ""
    return (
        "fetch it on a machine with internet with `zoo-survey prefetch` (or "
        f"`hf download {repo}{kind}{rev}`) and copy its HF hub cache (HF_HUB_CACHE) here"
    )


def transient(e: BaseException | None) -> str | None:
    """What went wrong, when retrying a hub request may help (HTTP 5xx/408/429, a timeout, a dropped or
    refused connection, a short download); None for anything else (404, gated, offline, a bug)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if e is None or isinstance(e, OfflineModeIsEnabled):
        return None
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        return f"HTTP {status}" if status is not None and (status >= 500 or status in (408, 429)) else None
    if isinstance(e, LocalEntryNotFoundError):  # huggingface_hub's own HEAD failed and nothing is cached
        if e.__cause__ is not None and not hasattr(e.__cause__, "zoo_hub_phase"):
            e.__cause__.zoo_hub_phase = "metadata"  # type: ignore[attr-defined]  # a tag read by transient() below
        return transient(e.__cause__)
    names = {c.__name__ for c in type(e).__mro__}  # httpx2, httpx and requests alike, by name
    if names & {"TimeoutException", "Timeout", "TimeoutError"}:
        var, limit = (
            ("HF_HUB_ETAG_TIMEOUT", constants.HF_HUB_ETAG_TIMEOUT)
            if getattr(e, "zoo_hub_phase", None) == "metadata"
            else ("HF_HUB_DOWNLOAD_TIMEOUT", constants.HF_HUB_DOWNLOAD_TIMEOUT)
        )
        return f"no answer within {var}={limit} s ({type(e).__name__})"
    if names & {"RemoteProtocolError", "NetworkError", "ChunkedEncodingError", "ConnectionError"}:
        return f"the connection failed ({first_line(e)})"
    if isinstance(e, OSError) and str(e).startswith("Consistency check failed"):
        return f"the download was incomplete ({str(e).splitlines()[0]})"
    return None


def download_file(repo: str, name: str, revision: str | None, offline: bool, repo_type: str = "model") -> str:
    """``hf_hub_download``, preceded (when the file is not cached) by one metadata request without retries.

    When its own first request fails and nothing is cached, huggingface_hub retries that
    request 5 times with a 60 s timeout and 1-8 s sleeps (minutes against a hung hub); this
    request fails within ``HF_HUB_ETAG_TIMEOUT`` and :func:`hub_call` owns the retries.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    if not offline and not constants.is_offline_mode() and not isinstance(
        try_to_load_from_cache(repo, name, revision=revision, repo_type=repo_type), str
    ):
        try:
            get_hf_file_metadata(hf_hub_url(repo, name, revision=revision, repo_type=repo_type),
                                 timeout=constants.HF_HUB_ETAG_TIMEOUT)
            _FAILED.pop(constants.ENDPOINT, None)  # the hub answered: retry in full again
        except Exception as e:  # noqa: BLE001 - transient() sorts it: re-raised for a retry, or left to hf_hub_download
            if transient(e) is not None:
                e.zoo_hub_phase = "metadata"  # type: ignore[attr-defined]  # names the timeout that applied
                raise
            # 404 / 401 / ...: hf_hub_download meets it again, raises it and caches what it should.
    return hf_hub_download(repo, name, revision=revision, repo_type=repo_type, local_files_only=offline)


def hub_call(
    where: str,
    what: str,
    repo: str,
    revision: str | None,
    offline: bool,
    fn: Callable[[], T],
    repo_type: str = "model",
) -> T:
    """Run ``fn`` (a huggingface_hub download of ``what`` from ``repo``) with retries; translate its errors.

    ``RemoteEntryNotFoundError`` (the repo has no such file) is re-raised for the caller:
    a missing optional file is not always an error.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    retries = int(env_number("ZOO_SURVEY_HUB_RETRIES", 3))
    backoff = env_number("ZOO_SURVEY_HUB_BACKOFF", 1.0)
    failed_before = time.monotonic() - _FAILED.get(constants.ENDPOINT, -FAILED_FOR_S) < FAILED_FOR_S
    if failed_before:
        retries = 0
    attempt = 0
    while True:
        try:
            return fn()
        except RemoteEntryNotFoundError:
            raise
        except GatedRepoError as e:
            raise ZooSurveyFailure(f"{where}: the repo is gated; accept its terms on the hub and log in (hf auth login)") from e
        except RepositoryNotFoundError as e:
            raise ZooSurveyFailure(f"{where}: the repo does not exist on the hub (or is private); check 'source.repo'") from e
        except RevisionNotFoundError as e:
            raise ZooSurveyFailure(f"{where}: revision {revision!r} does not exist; check 'revision'") from e
        except Exception as e:  # noqa: BLE001 - sorted below: retried, or a one-line failure, or not ours
            problem = None if offline else transient(e)
            if problem is None:
                if not offline and isinstance(e, LocalEntryNotFoundError) and isinstance(e.__cause__, HfHubHTTPError):
                    e = e.__cause__  # online, the hub refused (e.g. 403): that, not the empty cache, is the news
                if isinstance(e, LocalEntryNotFoundError):
                    raise NotCachedError(f"{where}: {what}", not_cached_hint(repo, revision, repo_type)) from e
                if isinstance(e, HfHubHTTPError):
                    raise ZooSurveyFailure(f"{where}: hub request for {what} failed: {first_line(e)}") from e
                raise
            if attempt >= retries:
                _FAILED[constants.ENDPOINT] = time.monotonic()
                tries = ("once (not retried: it failed earlier in this run)" if failed_before
                         else f"{attempt + 1} time(s) (retried {attempt}, ZOO_SURVEY_HUB_RETRIES)")
                raise ZooSurveyFailure(
                    f"{where}: {what}: the hub at {constants.ENDPOINT} failed: {problem}; tried {tries}; check the network and HF_ENDPOINT, "
                    "or run `zoo-survey prefetch` on a machine with internet, copy its HF cache (HF_HUB_CACHE) "
                    "here and rerun offline (offline=True)", param="offline"
                ) from e
            delay = backoff * 2**attempt
            log.warning("%s: %s: %s; retrying in %.3g s (retry %d of %d)", where, what, problem, delay, attempt + 1, retries)
            time.sleep(delay)
            attempt += 1
