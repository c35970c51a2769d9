"""`.ci/run` runs exactly the README's test command, and in strict mode."""
from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_test_command() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    m = re.search(r"Run the tests:\s*\n\s*```sh\n(.*?)\n```", text, re.S)
    assert m, "README.md has no 'Run the tests:' sh block"
    lines = [ln for ln in m.group(1).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0].strip()


def _ci_test_command() -> str:
    text = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    m = re.search(r"# --- keep in sync with README\.md.*?---\n(.*?)\n# ---", text, re.S)
    assert m, ".ci/run has no '# --- keep in sync with README.md' block"
    lines = [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1, lines
    return lines[0].strip()


def test_ci_runs_exactly_the_readme_test_command():
    assert _ci_test_command() == _readme_test_command()


def test_ci_runs_strict():
    text = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert re.search(r"^export BITNET_AOT_STRICT=1$", text, re.M), "strict mode is off in .ci/run"
