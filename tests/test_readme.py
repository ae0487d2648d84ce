"""The README's commands stay true: .ci/run runs its test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_cmd = next(b.strip() for b in _bash_blocks(readme) if "pytest" in b)
    assert "\n" not in test_cmd  # one command
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_readme_setup_command_runs_the_default_job():
    readme = (ROOT / "README.md").read_text()
    setup = _bash_blocks(readme)[0].strip()
    assert "\n" not in setup and setup.endswith("zoo-survey run && .venv/bin/zoo-survey report")
    assert "pip install torch==2.14.1 torchvision==0.29.1 '.[offline]'" in setup
    assert " -e " not in setup  # a researcher's install is a wheel's: the package carries its registry (tests/test_wheel.py)
