"""The layering contracts (.importlinter) hold, and fail on an upward import: lint-imports is
run on a copy of the package with one planted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache", "--config", str(tree / ".importlinter")],
                          cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if not LINT.exists():
        pytest.skip("import-linter is not installed")
    shutil.copytree(ROOT / "connector", tmp_path / "connector",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_package_keeps_its_layers(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "upward", "contract"), [
    ("vocabulary/names.py", "connector.pipeline", "The vocabulary imports nothing of ours"),
    ("metrics.py", "connector.readers.base", "Layers: each imports only from those below it"),
    ("readers/trigger.py", "connector.router", "Readers only read"),
    ("filters/parse.py", "connector.filters.types", "The filter language"),
])
def test_an_upward_import_breaks_the_build(tree: Path, module: str, upward: str,
                                           contract: str) -> None:
    with (tree / "connector" / module).open("a") as f:
        f.write(f"\nimport {upward}  # planted by the test\n")
    result = lint(tree)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout
