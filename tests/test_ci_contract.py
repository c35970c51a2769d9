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


def test_strict_mode_fails_a_skip_unless_it_names_an_emulator_or_cpu(tmp_path):
    """BITNET_AOT_STRICT=1 (tests/conftest.py): a skip for a missing fixture fails the run;
    one naming an emulator or a CPU feature stays a skip."""
    import shutil
    import subprocess
    import sys
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_a.py").write_text("import pytest\n\ndef test_x():\n    pytest.skip('needs a fixture file')\n")
    (tmp_path / "test_b.py").write_text("import pytest\n\ndef test_y():\n    pytest.skip('qemu-aarch64 not installed')\n")
    env = {**os.environ, "BITNET_AOT_STRICT": "1"}
    run = lambda f: subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f],  # noqa: E731
                                   cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    a, b = run("test_a.py"), run("test_b.py")
    assert a.returncode == 1 and "skip not allowed" in a.stdout, a.stdout
    assert b.returncode == 0 and "1 skipped" in b.stdout, b.stdout
    env["BITNET_AOT_STRICT"] = "0"
    assert run("test_a.py").returncode == 0
