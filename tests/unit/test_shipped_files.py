"""The example configs and the compose file we ship must stay valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from connector.config import load as load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(ROOT.glob("config/**/*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLY_API_KEY", "appid.keyid:not-a-real-secret")
    assert load_config(path).routes


def test_compose_file_parses() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed")
    out = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert sorted(out) == ["connector", "demo-writer", "postgres", "redis"]
