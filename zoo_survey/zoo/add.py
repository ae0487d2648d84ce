"""``registry add``: registry entries for timm pretrained tags, written into a family file.

What timm knows about a tag goes in as timm states it: the weights' hub repo, the
train-time input size and the preprocessing of its pretrained config, the pretraining data
and recipe its tag and config name. What it does not state is counted offline from the
architecture (:mod:`.budgets`, no weights downloaded): params, GMACs at the input size,
and the feature width. The lineage (the pretraining run the weights descend from) is
read off the tag: ``vit_base_patch16_384.augreg_in21k_ft_in1k`` descends from
``vit_base_patch16.augreg_in21k``, like its 224 px sibling.

The family file is edited, not rewritten: ruamel.yaml parses it to find where its
``checkpoints:`` list ends, and the new entries are inserted there as text, so every
existing line, comment and anchor stays byte for byte. The result is validated with the
whole registry before it replaces the file (atomically).

>>> add_tags(["convnextv2_atto.fcmae_ft_in1k"], "mine", Path("my/mine.yaml"))   # doctest: +SKIP
AddResult(path=..., added=['convnextv2_atto.fcmae_ft_in1k'], skipped=[])
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZooSurveyError, did_you_mean, shown
from ..files import atomic_write
from ..sources.checkpoints import TIMM_HUB_OWNER
from .budgets import count, is_pretrained_tag, pretrained_cfg
from .registry import REGISTRY_ENV, load_files, registry_files, registry_folders, split_model_name_tag

# Dataset tokens of timm's tags, as the registry names them.
DATA_TOKENS = {
    "in1k": "imagenet-1k", "in21k": "imagenet-21k", "in22k": "imagenet-22k", "in12k": "imagenet-12k",
    "lvd142m": "LVD-142M", "lvd1689m": "LVD-1689M", "openai": "OpenAI WIT-400M", "webli": "WebLI",
    "laion2b": "LAION-2B", "laion400m": "LAION-400M", "merged2b": "Merged-2B", "m38m": "Merged-38M",
    "datacomp1b": "DataComp-1B", "dfn2b": "DFN-2B", "dfn5b": "DFN-5B", "jft": "JFT-300M", "ig1b": "IG-1B",
    "yfcc100m": "YFCC-100M", "yfcc15m": "YFCC-15M", "swag": "IG-3.6B (SWAG)", "seer": "IG-1B (SEER)",
}
# Parts of an architecture name that do not change the pretraining run: the same weights behind another
# activation (quickgelu) or pooling (gap), and a swin window.
_SAME_RUN_PARTS = re.compile(r"_(quickgelu|gap)(?=_|$)|_window\d+(?=_|$)")
# Where a tag's fine-tuning starts: `_ft_` (fine-tuned), `_lc_` (a linear classifier on frozen features).
_FINE_TUNE = re.compile(r"_(ft|lc)_")
_EPOCHS = re.compile(r"(?:^|_)(?:e(\d+)|(\d+)ep?)(?=_|$)")


def lineage(tag: str) -> str:
    """The pretraining run a timm tag's weights descend from, read off the tag.

    The architecture loses its input resolution (when it is the architecture's default input size, so
    ``regnety_320`` keeps its 320), its swin window and same-weights variants (``_quickgelu``, ``_gap``);
    the pretrained tag loses what follows ``_ft_`` / ``_lc_`` (fine-tuning on top of that run).

    >>> lineage("vit_base_patch16_384.augreg_in21k_ft_in1k")
    'vit_base_patch16.augreg_in21k'
    >>> lineage("convnextv2_tiny.fcmae_ft_in22k_in1k_384")
    'convnextv2_tiny.fcmae'
    """
    import timm

    arch, pretrained = split_model_name_tag(tag)
    base = _SAME_RUN_PARTS.sub("", arch)
    cfg = timm.models.get_pretrained_cfg(arch)
    res = re.search(r"_(\d+)$", base)
    if res and cfg is not None and cfg.input_size and int(res.group(1)) == cfg.input_size[-1]:
        base = base[: res.start()]
    return f"{base}.{_FINE_TUNE.split(pretrained, maxsplit=1)[0]}"


def pretrain_info(tag: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Pretraining ``data``, ``recipe`` and ``epochs`` as timm's tag and config state them (what they do not
    state is left out)."""
    _, pretrained = split_model_name_tag(tag)
    parts = _FINE_TUNE.split(pretrained, maxsplit=1)
    run, tuned = parts[0], (parts[2] if len(parts) == 3 else "")
    datasets = [DATA_TOKENS[t] for t in run.split("_") if t in DATA_TOKENS]
    tuned_on = [DATA_TOKENS[t] for t in tuned.split("_") if t in DATA_TOKENS]
    step = "a linear classifier trained" if "_lc_" in pretrained else "fine-tuned"
    recipe = f"timm tag {pretrained}" + (f": {run}, then {step} on {' then '.join(tuned_on)}" if tuned_on else "")
    paper = " ".join(str(x) for x in (cfg.get("paper_name"), f"({cfg['paper_ids']})" if cfg.get("paper_ids") else None) if x)
    out: dict[str, Any] = {}
    if datasets or tuned_on:
        out["data"] = (datasets or tuned_on)[0]
    out["recipe"] = recipe + (f"; {paper}" if paper else "")
    epochs = next((int(a or b) for a, b in _EPOCHS.findall(pretrained)), None)
    if epochs:
        out["epochs"] = epochs
    return out


def resolve_tags(tags: Sequence[str], pattern: str | None = None) -> list[str]:
    """The tags to add: each given one (an architecture alone means its default tag), then every pretrained
    tag matching ``pattern`` (timm's wildcards); an unknown tag is refused with close matches."""
    import timm

    out: list[str] = []
    for t in tags:
        default = timm.models.get_pretrained_cfg(t) if "." not in t and timm.is_model(t) else None
        if default is not None and default.tag:
            t = f"{t}.{default.tag}"
        if not is_pretrained_tag(t):
            raise ZooSurveyError(f"timm {timm.__version__} has no pretrained tag {t!r}; "
                                 f"{did_you_mean(t, timm.list_pretrained())}")
        out.append(t)
    if pattern is not None:
        matched = timm.list_pretrained(pattern)
        if not matched:
            raise ZooSurveyError(f"no timm {timm.__version__} pretrained tag matches {pattern!r}; "
                                 "see timm.list_pretrained() (wildcards: * and ?)")
        out += matched
    if not out:
        raise ZooSurveyError("name at least one timm pretrained tag (e.g. convnextv2_atto.fcmae_ft_in1k) or a 'pattern'",
                             param="pattern")
    return list(dict.fromkeys(out))


def entry_for(tag: str) -> dict[str, Any]:
    """The registry entry of timm pretrained ``tag``, every field filled (see the module docstring)."""
    cfg = pretrained_cfg(tag)
    hub = cfg.get("hf_hub_id")
    why = None
    if not hub:
        why = f"timm has its weights only at {cfg.get('url') or 'no URL'}, not on the Hugging Face Hub; download them and write a 'file' entry"
    elif cfg.get("custom_load") or cfg.get("hf_hub_filename"):
        why = "its weights need timm's own loader (a custom file or format); zoo-survey loads state dicts strictly"
    elif not hub.startswith(TIMM_HUB_OWNER):
        why = (f"its weights live in {hub!r}, outside the timm organisation, in a layout timm converts when it loads them; "
               "zoo-survey loads state dicts strictly")
    if why:
        raise ZooSurveyError(f"timm tag {tag!r} cannot be added: {why}")
    arch, _ = split_model_name_tag(tag)
    size = int(cfg["input_size"][-1])
    budget = count(arch, size, tag=tag)
    # Weights in the tag's own repo: an hf-hub entry. Weights shared with another tag (CLIP's quickgelu variants
    # read the plain ones): a timm entry, which finds them through the tag's config.
    source = {"type": "hf-hub", "repo": hub} if hub == TIMM_HUB_OWNER + tag else {"type": "timm"}
    preprocess = {"interpolation": cfg["interpolation"], "crop_pct": float(cfg["crop_pct"]),
                  "crop_mode": cfg.get("crop_mode") or "center",
                  "mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]]}
    return {
        "id": tag, "source": source, "params_m": budget.params_m, "gmacs": budget.gmacs, "input_size": size,
        "feature_dim": budget.feature_dim, "preprocess": preprocess, "lineage": lineage(tag),
        "pretrain": pretrain_info(tag, cfg),
    }


@dataclass
class AddResult:
    path: Path
    added: list[str] = field(default_factory=list)  # written as entries
    included: list[str] = field(default_factory=list)  # defined in another family: listed under `include:`
    skipped: list[str] = field(default_factory=list)  # already in the family
    created: bool = False


def add_tags(tags: Sequence[str], family: str, path: Path, registry: Sequence[Path] = (),
             pattern: str | None = None) -> AddResult:
    """Add the entries of ``tags`` (and of ``pattern``'s matches) to family file ``path``, creating it if needed.

    A tag another family already defines (a shipped one, say) joins through the file's ``include:`` list,
    the same entry shared; a tag already in the family is skipped. The new file is checked together with
    every registry folder (shipped, ``$ZOO_SURVEY_REGISTRY``, ``registry``) before it replaces the old one,
    so a bad result is refused with nothing written.
    """
    import timm
    from ruamel.yaml import YAML

    path = Path(path)
    wanted = resolve_tags(tags, pattern)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = YAML(typ="rt").load(text) if text.strip() else None
    if doc is not None and not hasattr(doc, "lc"):
        raise ZooSurveyError(f"{path}: expected a family file (a mapping with 'family:'), found {type(doc).__name__}")
    if doc is not None and doc.get("family") != family:
        found = doc.get("family")
        raise ZooSurveyError(f"{path} holds family {shown(found)}, not {family!r}; give family={str(found)!r} or another "
                             "'path'" if found else f"{path} is not a family file (no 'family:'); choose another 'path'",
                             param=("family", "path"))
    others = [f for f in registry_files(registry_folders(registry)) if f != path.resolve()]
    defined = {c.id: c for fam in load_files(others).families.values() for c in fam.checkpoints if c.family == fam.name}
    have = {str(e.get("id")) for e in (doc or {}).get("checkpoints") or [] if hasattr(e, "get")}
    have |= {str(i) for i in (doc or {}).get("include") or []}
    have |= {cid for cid, c in defined.items() if c.family == family}  # in another file of this family
    result = AddResult(path, created=doc is None)
    result.skipped = [t for t in wanted if t in have]
    result.included = [t for t in wanted if t not in have and t in defined]
    entries = [entry_for(t) for t in wanted if t not in have and t not in defined]
    result.added = [e["id"] for e in entries]
    if not entries and not result.included:
        return result
    note = f"added by zoo-survey registry add (timm {timm.__version__}): budgets counted offline, the rest from timm's config"

    def include(indent: int) -> str:
        return "".join(f"{' ' * indent}- {t}   # defined in family {defined[t].family!r}\n" for t in result.included)

    def checkpoints(indent: int) -> str:
        return _render(entries, indent, note)

    if doc is None:
        text = (f"# Family {family!r}, written by `zoo-survey registry add` (timm {timm.__version__}).\n"
                "# params_m, gmacs (multiply-accumulates of one forward at input_size) and feature_dim are counted offline from\n"
                "# the architecture; input_size, preprocess and pretrain come from timm's pretrained config and tag.\n"
                "# Check them again with `zoo-survey registry validate`.\n"
                f"family: {family}\n")
    for key, items, render in (("include", result.included, include), ("checkpoints", entries, checkpoints)):
        if items:
            text = _append(text, YAML(typ="rt").load(text), key, render)
    check_and_write(path, text, registry)
    return result


def _render(entries: list[dict[str, Any]], indent: int, note: str) -> str:
    """Entries as a block sequence at ``indent`` columns: scalars on their own lines, mappings in flow style."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    def flow(v: Any) -> Any:
        if isinstance(v, dict):
            m = CommentedMap((k, flow(x)) for k, x in v.items())
            m.fa.set_flow_style()
            return m
        if isinstance(v, list):
            s = CommentedSeq(flow(x) for x in v)
            s.fa.set_flow_style()
            return s
        return v

    items = [CommentedMap((k, flow(v) if isinstance(v, (dict, list)) else v) for k, v in e.items()) for e in entries]
    y = YAML(typ="rt")
    y.width = 4096
    y.indent(mapping=2, sequence=2, offset=0)
    buf = io.StringIO()
    y.dump(items, buf)
    pad = " " * indent
    lines = [f"{pad}# {note}"] + [pad + ln if ln else ln for ln in buf.getvalue().splitlines()]
    return "\n".join(lines) + "\n"


def _append(text: str, doc: Any, key: str, render: Callable[[int], str]) -> str:
    """``text`` with ``render(indent)`` (block-list items) added at the end of its top-level list ``key``, or in a
    new ``key:`` list (an ``include`` before ``checkpoints``, a ``checkpoints`` at the end). Existing lines are kept."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    keys = list(doc)

    def before(row: int, floor: int) -> int:
        # Comments and blank lines at the left margin just above a key belong to it.
        while row > floor and (not lines[row - 1].strip() or lines[row - 1].startswith("#")):
            row -= 1
        return row

    seq = doc.get(key)
    if not seq:
        block = f"{key}:\n" + render(2)
        if key in doc:  # `key:` with nothing, or `key: []`: replace that line
            row = doc.lc.key(key)[0]
            return "".join(lines[:row] + [block] + lines[row + 1:])
        if key == "include" and "checkpoints" in doc:
            row = before(doc.lc.key("checkpoints")[0], doc.lc.key(keys[0])[0] + 1)
            return "".join(lines[:row] + [block] + lines[row:])
        return "".join(lines) + block
    if getattr(seq.fa, "flow_style", lambda: False)():
        raise ZooSurveyError(f"the file's '{key}:' is a flow list ([...]); write it as a block list (one '- ' per line) "
                             "and add again")
    first = seq.lc.item(0)[0]
    indent = len(lines[first]) - len(lines[first].lstrip(" "))
    nxt = keys.index(key) + 1
    end = before(doc.lc.key(keys[nxt])[0] if nxt < len(keys) else len(lines), first + 1)
    return "".join(lines[:end] + [render(indent)] + lines[end:])


def check_and_write(path: Path, text: str, registry: Sequence[Path]) -> None:
    """Validate ``text`` as ``path`` with the whole registry, then replace ``path`` atomically."""
    others = [f for f in registry_files(registry_folders(registry)) if f != path.resolve()]
    path.parent.mkdir(parents=True, exist_ok=True)
    probe = path.parent / f".{path.name}.{os.getpid()}.check.yaml"
    try:
        probe.write_text(text, encoding="utf-8")
        try:
            load_files([*others, probe.resolve()])
        except ZooSurveyError as e:
            raise ZooSurveyError(str(e).replace(str(probe.resolve()), str(path)), param=e.params) from None
    finally:
        probe.unlink(missing_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def default_path(family: str, env: dict[str, str] | None = None) -> Path:
    """Where ``registry add`` writes without ``--to``: ``<family>.yaml`` in the first ``$ZOO_SURVEY_REGISTRY`` folder."""
    env = dict(os.environ) if env is None else env
    folders = [p for p in env.get(REGISTRY_ENV, "").split(os.pathsep) if p]
    if not folders:
        raise ZooSurveyError(f"give a 'path' (the family YAML to write), or set {REGISTRY_ENV} to your registry folder",
                             param="path")
    return Path(folders[0]) / f"{family}.yaml"
