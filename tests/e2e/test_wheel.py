"""The wheel alone gives a working daemon: build it from the tree, install it into a clean
virtualenv, and run validate / install / start / uninstall with that venv's ``pgconnector``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.support import (
    REPO_ROOT,
    Daemon,
    base_env,
    make_config,
    run,
    schema_exists,
    wait_until,
    write_config,
)

PYTHON = Path(sys.executable)


@pytest.mark.slow
@pytest.mark.timeout(900)  # building, a venv and pip install: each bounded on its own below
async def test_wheel_installs_a_working_daemon(database: str, pg: asyncpg.Connection,
                                              tmp_path: Path) -> None:
    # Build the wheel from the working tree.
    dist = tmp_path / "dist"
    built = await run("-m", "build", "--wheel", "--outdir", dist, REPO_ROOT, exe=PYTHON,
                      cwd=tmp_path, timeout=300)
    assert built.code == 0, built
    wheels = list(dist.glob("pgconnector-*.whl"))
    assert len(wheels) == 1, built

    # A clean venv (no access to the build venv's packages), the wheel and its dependencies.
    venv = tmp_path / "venv"
    made = await run("-m", "venv", venv, exe=PYTHON, cwd=tmp_path, timeout=120)
    assert made.code == 0, made
    vpython, vbin = venv / "bin" / "python", venv / "bin" / "pgconnector"
    env = base_env(VIRTUAL_ENV=str(venv))
    installed = await run("-m", "pip", "install", "--quiet", wheels[0], exe=vpython, env=env,
                          cwd=tmp_path, timeout=600)
    assert installed.code == 0, installed
    assert vbin.exists()

    # SQL and the JSON Schema come from inside the installed package, not from this tree.
    # (cwd is tmp_path so `python -c` cannot import the source checkout.)
    probe = await run("-c", "import connector.resources as r, sysconfig, json; "
                      "print(json.dumps([r.data_location(), sysconfig.get_paths()['purelib'], "
                      "__import__('connector').__file__]))",
                      exe=vpython, env=env, cwd=tmp_path)
    assert probe.code == 0, probe
    location, purelib, package_file = map(Path, json.loads(probe.stdout))
    assert location.resolve().is_relative_to(purelib.resolve()), probe
    assert package_file.resolve().is_relative_to(purelib.resolve()), probe
    assert not location.resolve().is_relative_to(REPO_ROOT), probe
    assert (location / "schema.json").is_file()
    shipped = {p.name for p in (location / "sql").glob("*.sql")}
    assert shipped == {p.name for p in (REPO_ROOT / "sql").glob("*.sql")}

    version = await run("--version", exe=vbin, env=env, cwd=tmp_path)
    assert version.code == 0 and version.stdout.startswith("pgconnector "), version

    await pg.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text)")
    config = write_config(tmp_path, make_config(
        database, publishers={"console": {"type": "stdout", "envelope": True}},
        routes=[{"table": "public.items", "publisher": "console", "channel": "{table}:{op}"}]))

    validated = await run("validate", "-c", config, exe=vbin, env=env, cwd=tmp_path)
    assert validated.code == 0 and validated.stdout.startswith("OK"), validated

    install = await run("install", "-c", config, exe=vbin, env=env, cwd=tmp_path)
    assert install.code == 0, install
    assert "added: public.items" in install.stdout
    assert await schema_exists(database)

    daemon = Daemon(config, tmp_path, exe=vbin, env=env)
    try:
        await daemon.start()
        await daemon.wait_active()
        await pg.execute("INSERT INTO public.items VALUES (7, 'from the wheel')")
        await wait_until(lambda: len(daemon.stdout_lines()) >= 1, 15,
                         "the change on the daemon's stdout")
        code, _ = await daemon.terminate()
        assert code == 0, daemon.stderr()
    finally:
        await daemon.kill()
    lines = daemon.stdout_lines()
    assert len(lines) == 1, lines
    out = json.loads(lines[0])
    assert out["publisher"] == "console" and out["channel"] == "items:insert"
    assert out["event"]["op"] == "insert"
    assert out["event"]["new"] == {"id": 7, "name": "from the wheel"}
    assert daemon.log_records()  # logs went to stderr as JSON, not into stdout

    uninstall = await run("uninstall", "-c", config, exe=vbin, env=env, cwd=tmp_path)
    assert uninstall.code == 0, uninstall
    assert not await schema_exists(database)
    assert await pg.fetchval("SELECT name FROM public.items WHERE id = 7") == "from the wheel"
