"""Report: numbers equal the store's rows; plots, self-contained HTML and JSON are written."""

from __future__ import annotations

import json
import re

import pytest
from test_cli import TINY_RUN, zoo

from zoo_survey.results.plots import pareto_front
from zoo_survey.results.report import comparison_lines
from zoo_survey.results.stats import paired_difference
from zoo_survey.results.store import ResultStore


@pytest.fixture()
def filled(tmp_path, monkeypatch, capsys, tiny_registry, cache_env):
    out_dir = tmp_path / "out"
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(tiny_registry), "--out", str(out_dir), *TINY_RUN,
                         "--probes", "linear,fewshot", "--shots", "1,3", "--seeds", "2")
    assert code == 0, err
    return out_dir


def test_markdown_numbers_are_the_store_rows(filled, monkeypatch, capsys):
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(filled))
    assert code == 0, err
    md = (filled / "report.md").read_text()
    rows = ResultStore(filled / "results.sqlite", create=False).rows()
    (line,) = comparison_lines(rows)
    lines = md.splitlines()
    header = next(ln for ln in lines if ln.startswith("| family | dataset | probe | single |")).split(" | ")
    cells = dict(zip(header, next(ln for ln in lines if ln.startswith("| tiny | digits | linear |")).split(" | "), strict=True))
    assert cells["single top-1"] == f"{100 * line.baseline.top1:.1f}" and cells["ensemble top-1"] == f"{100 * line.ensemble.top1:.1f}"
    assert cells["difference (points)"] == f"{100 * line.delta:+.1f}" and cells["averaged top-1"] == f"{100 * line.averaged.top1:.1f}"
    # the interval and p-value are those of the stored predictions, paired image by image
    d = paired_difference(line.baseline.predictions == line.baseline.test_labels, line.ensemble.predictions == line.ensemble.test_labels)
    assert cells["95% CI"] == f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]" and d.low <= d.delta <= d.high
    assert cells["significant"] == ("yes" if d.p_value < 0.05 else f"no (could detect ≥ {100 * d.detectable:.1f})")
    assert md.index("## Across architectures") < md.index("## Single vs ensemble")  # the answer comes first
    for name in ("accuracy_vs_gmacs", "difference_heatmap", "fewshot_curves", "gain_vs_diversity"):
        assert f"(plots/{name}.png)" in md
        assert (filled / "plots" / f"{name}.png").stat().st_size > 1000 and (filled / "plots" / f"{name}.svg").is_file()


def test_html_is_one_self_contained_file(filled, monkeypatch, capsys):
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(filled), "--format", "html")
    assert code == 0, err
    page = (filled / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r"(src|href)=['\"]https?://", page)  # nothing fetched from a network
    assert "class='sortable'" in page and "addEventListener('click'" in page


def test_json_has_the_report_sections_and_every_row(filled, monkeypatch, capsys):
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(filled), "--format", "json")
    report = json.loads((filled / "report.json").read_text())
    rows = report["rows"]
    assert len(rows) == 5 + 2 + 5 * 2 * 2 and {"top1", "provenance", "setting", "seed"} <= set(rows[0])
    titles = [s["title"] for s in report["sections"]]
    assert {"Budgets", "Few-shot", "Across architectures", "Revisions", "Every row"} <= set(titles)
    (every,) = report["sections"][titles.index("Every row")]["tables"]
    assert len(every) == len(rows)  # the same model as Markdown and HTML: one record per row


def test_partial_results_are_marked_missing(filled, monkeypatch, capsys):
    import sqlite3

    with sqlite3.connect(filled / "results.sqlite") as con:
        con.execute("DELETE FROM results WHERE role='ensemble' AND probe='linear'")
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(filled))
    assert code == 0, err
    assert "| missing |" in (filled / "report.md").read_text()


def test_pareto_front():
    assert pareto_front([(1, 50), (2, 40), (3, 70), (3, 60), (4, 70)]) == [(1, 50), (3, 70)]


def test_gmacs_are_counted_at_the_runs_resolution_and_budgets_are_reported(filled, monkeypatch, capsys, tiny_registry):
    from zoo_survey.zoo.checkpoints import forward_feature_output, load_model, resolve
    from zoo_survey.zoo.flops import count_gmacs
    from zoo_survey.zoo.registry import load_registry, registry_folders

    rows = ResultStore(filled / "results.sqlite", create=False).rows(probe="linear")
    base = next(r for r in rows if r.role == "baseline")
    ckpt = resolve(load_registry(registry_folders([tiny_registry])).checkpoint(base.comparison), image_size=32)
    model = load_model(ckpt)
    assert base.gflops == pytest.approx(count_gmacs(lambda x: forward_feature_output(model, x, "pre_logits"), 32), rel=1e-3)
    assert base.gflops != 0.05  # not the registry's number
    assert base.provenance["gflops"] == "counted at the run's resolution"
    zoo(monkeypatch, capsys, "report", "--out", str(filled))
    md = (filled / "report.md").read_text()
    assert "## Budgets" in md and "GMACs are counted (multiply-accumulates per image)" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| tiny | digits | 0.5 / "))
    assert "random-init" in line and ("within the single's" in line or "over on" in line)


CHROMIUM = __import__("shutil").which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (the README's test command installs it)")
def test_html_loads_in_a_headless_browser_without_errors(filled, monkeypatch, capsys, tmp_path):
    import subprocess

    zoo(monkeypatch, capsys, "report", "--out", str(filled), "--format", "html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]

    def load(page):
        done = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        return done.stdout, [ln for ln in done.stderr.splitlines() if "CONSOLE" in ln]

    dom, console = load(filled / "report.html")
    assert not console, console  # no script error, nothing logged
    assert dom.count("<table") >= 3 and dom.count("<img") == 4
    broken = tmp_path / "broken.html"  # the check itself can fail: a page with a script error is caught
    broken.write_text((filled / "report.html").read_text().replace("</body>", "<script>notDefined();</script></body>"))
    assert any("Uncaught ReferenceError" in ln for ln in load(broken)[1])


def test_an_empty_store_says_to_run_first(tmp_path, monkeypatch, capsys):
    ResultStore(tmp_path / "results.sqlite")
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(tmp_path))
    assert code == 2 and "the results store has no rows yet; run `zoo-survey run` first" in err


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_store_of_an_older_schema_is_refused_with_instructions(tmp_path, monkeypatch, capsys, version):
    import sqlite3

    with sqlite3.connect(tmp_path / "results.sqlite") as con:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (version,))
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(tmp_path))
    assert code == 2 and f"written by schema version {version}, this zoo-survey reads 3 (version 3 keeps every test image's" in err
    assert f"results.v{version}.sqlite" in err
    assert "move it away (e.g. `mv " in err and "cached features are reused, only the probes rerun" in err


def test_member_diversity_is_computed_stored_and_reported(filled, monkeypatch, capsys):
    store = ResultStore(filled / "results.sqlite", create=False)
    sims = store.similarity()
    # the baseline and the two members: three pairs on the one dataset, each a CKA in [-1, 1] on all 60 test rows
    assert len(sims) == 3 and {s.n_rows for s in sims} == {60} and all(-1 <= s.cka <= 1 for s in sims)
    code, out, err = zoo(monkeypatch, capsys, "report", "--out", str(filled))
    md = (filled / "report.md").read_text()
    assert "## Why: member diversity" in md and "(plots/gain_vs_diversity.png)" in md
    (line,) = comparison_lines(store.rows())
    members = set(line.ensemble.members)
    among = [s.cka for s in sims if s.a in members and s.b in members]
    summary = next(ln for ln in md.splitlines() if ln.startswith("| unstated | tiny | linear | 1 |")).split(" | ")
    assert summary[11] == f"{among[0]:.3f}"  # the members' mean CKA, in the first section (the tiny family states no kind)
    code, out, err = zoo(monkeypatch, capsys, "run", "--registry", str(filled.parent / "user-registry"), "--out",
                         str(filled), *TINY_RUN, "--probes", "linear,fewshot", "--shots", "1,3", "--seeds", "2")
    assert code == 0 and len(store.similarity()) == 3  # a rerun computes nothing again


def test_a_second_report_on_the_same_rows_redraws_no_plot_and_new_rows_redraw(filled, monkeypatch, capsys):
    """Drawing is most of the report's time: the same rows keep the plots (same bytes, same mtime); a changed store
    (a row gone) draws them again."""
    import sqlite3

    code, _, err = zoo(monkeypatch, capsys, "report", "--out", str(filled))
    assert code == 0, err
    plots = sorted((filled / "plots").glob("*.png"))
    assert len(plots) == 4
    before = {p: p.stat().st_mtime_ns for p in plots}
    code, _, err = zoo(monkeypatch, capsys, "report", "--out", str(filled))
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in plots} == before
    with sqlite3.connect(filled / "results.sqlite") as con:
        con.execute("DELETE FROM results WHERE role = 'member' AND probe = 'fewshot' AND seed = 0")
    code, _, err = zoo(monkeypatch, capsys, "report", "--out", str(filled))
    assert code == 0, err
    assert all(p.stat().st_mtime_ns != before[p] for p in plots)
    (filled / "plots" / "difference_heatmap.svg").unlink()  # a plot gone: drawn again
    code, _, err = zoo(monkeypatch, capsys, "report", "--out", str(filled))
    assert code == 0, err
    assert (filled / "plots" / "difference_heatmap.svg").is_file()


def test_the_script_ends_at_once_after_a_report_and_leaves_it_whole(filled, tmp_path):
    """`python -m zoo_survey report` (the script's entry) skips the interpreter's teardown after a report that
    succeeded: the output is flushed first, and report.md and every plot are complete. A failing report exits as usual,
    with its message and code."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ZOO_SURVEY_CACHE": str(tmp_path / "cache")}

    def script(out):  # the script's entry, with an exit handler that says whether the teardown ran
        code = ("import atexit, sys\natexit.register(lambda: print('TEARDOWN'))\n"
                f"sys.argv = ['zoo-survey', 'report', '--out', {str(out)!r}]\nfrom zoo_survey.cli import script\nscript()\n")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)

    done = script(filled)
    assert done.returncode == 0, done.stderr
    assert "TEARDOWN" not in done.stdout  # ended at once
    assert "report.md" in done.stdout  # the last lines of its output were flushed before the exit
    assert (filled / "report.md").read_text().endswith("\n")
    pngs = sorted((filled / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") and p.read_bytes()[-8:-4] == b"IEND" for p in pngs)
    assert (filled / "plots" / ".inputs.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    ResultStore(empty / "results.sqlite")
    failed = script(empty)
    assert failed.returncode == 2 and "run `zoo-survey run` first" in failed.stderr
    assert "TEARDOWN" in failed.stdout  # an error exits as usual
    module = subprocess.run([sys.executable, "-m", "zoo_survey", "report", "--out", str(filled)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert module.returncode == 0 and "report.md" in module.stdout
