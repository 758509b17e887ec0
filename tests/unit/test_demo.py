"""The demo's choice of PostgreSQL binaries for a throwaway cluster: the newest installed
version by number (string order would take 9.6 over 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector import demo


@pytest.mark.parametrize(("names", "newest"), [
    (["9.6", "16"], "16"),
    (["16", "9.6"], "16"),
    (["10", "9.6", "9.5"], "10"),
    (["9.5", "9.6"], "9.6"),
    (["15", "17", "16", "9.6", "12"], "17"),
    (["15"], "15"),
])
def test_the_newest_version_is_chosen_by_number(names: list[str], newest: str) -> None:
    assert demo.newest_version(names) == newest


def test_names_that_are_no_version_are_not_candidates() -> None:
    assert demo.newest_version(["common", "16", "99rc1", ".cache", "9.6-beta"]) == "16"
    assert demo.newest_version(["common", "lost+found"]) is None
    assert demo.newest_version([]) is None


def test_pg_bindir_takes_the_newest_installed_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pg_config or initdb on PATH, the version directories decide; one without an
    initdb (a client-only install) is not a candidate."""
    for version, has_initdb in (("9.6", True), ("16", True), ("15", True), ("17", False)):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        if has_initdb:
            (bindir / "initdb").touch()
    (tmp_path / "common").mkdir()
    monkeypatch.setattr(demo, "PG_VERSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert demo.pg_bindir() == str(tmp_path / "16" / "bin")
