"""``zoo-survey cache ls / verify / gc``: thin commands over :mod:`zoo_survey.features.cache` and
:mod:`zoo_survey.data.pixels` (both caches share one root)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from ..document import Table
from ..features.cache import EntryInfo, FeatureCache, cache_root, gc_execute, gc_plan, scan
from .app import cache_app, console
from .options import CacheOpt, ListFormatOpt
from .output import emit, human, resolve_format, say


def _entries_table(entries: Sequence[EntryInfo], title: str) -> Table:
    return Table(
        ("kind", "family", "checkpoint", "dataset", "split", "rows", "dim", "size", "status"),
        [[e.kind, e.family, e.checkpoint, e.dataset, e.split, e.rows, e.dim, human(e.bytes),
          e.status + (f" ({e.detail})" if e.detail else "")] for e in entries],
        title=title,
    )


def _scan(cache: FeatureCache, verify: bool = False) -> list[EntryInfo]:
    """Feature entries, then the pixel cache's (decoded dataset splits)."""
    from ..data import pixels  # here, not at the top: every command imports this module, and pixels costs 0.2 s

    return scan(cache, verify=verify) + pixels.scan(cache.root, verify=verify)


@cache_app.command("ls")
def cache_ls(cache_dir: CacheOpt = None, format: ListFormatOpt = None) -> None:
    """List cache entries with their size and what they are."""
    fmt = resolve_format(format, console)
    cache = FeatureCache(cache_root(cache_dir))
    entries = _scan(cache)
    emit([_entries_table(entries, f"feature cache {cache.root}")], console, fmt)
    say(f"{len(entries)} entr(ies), {human(sum(e.bytes for e in entries))}", fmt)


@cache_app.command("verify")
def cache_verify(cache_dir: CacheOpt = None, format: ListFormatOpt = None) -> None:
    """Re-check every shard's size and sha256; report corrupt and partial entries (exit 1 if any is corrupt)."""
    fmt = resolve_format(format, console)
    cache = FeatureCache(cache_root(cache_dir))
    entries = _scan(cache, verify=True)
    bad = [e for e in entries if e.status != "complete"]
    if bad:
        emit([_entries_table(bad, "entries that are not complete")], console, fmt)
    corrupt = sum(e.status == "corrupt" for e in entries)
    say(f"{len(entries)} entr(ies) checked: {corrupt} corrupt, {sum(e.status == 'partial' for e in entries)} partial. "
         + ("Run `zoo-survey cache gc` to remove them; the next run recomputes what it needs." if bad else "All intact."), fmt)
    if corrupt:
        raise typer.Exit(1)


@cache_app.command("gc")
def cache_gc(
    cache_dir: CacheOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete what the plan lists (without it, only show the plan).")] = False,
    format: ListFormatOpt = None,
) -> None:
    """Remove corrupt entries, abandoned partial entries and temporary files: shows a plan, --yes executes it."""
    fmt = resolve_format(format, console)
    cache = FeatureCache(cache_root(cache_dir))
    from ..data import pixels

    plan = gc_plan(cache) + pixels.gc_plan(cache.root)
    if not plan:
        say(f"Nothing to clean in {cache.root}.", fmt)
        return
    emit([Table(("path", "reason", "size"), [[str(p.relative_to(cache.root)), why, human(size)] for p, why, size in plan],
                title="cache gc plan")], console, fmt)
    total = human(sum(size for _, _, size in plan))
    if not yes:
        say(f"{len(plan)} item(s), {total}. Nothing deleted: rerun with --yes to delete them.", fmt)
        return
    say(f"Deleted {len(plan)} item(s), freed {human(gc_execute(plan, cache.root))}.", fmt)
