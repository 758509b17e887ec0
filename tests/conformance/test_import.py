"""The suite ships inside the package, but the daemon must not need pytest to import."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.modules["pytest"] = None  # as if it were not installed: importing it raises ImportError
import connector, connector.cli, connector.connector
import connector.publishers.ably, connector.publishers.redis, connector.publishers.stdout
assert "connector.conformance" not in sys.modules
try:
    import connector.conformance
except ImportError as exc:
    print(exc)
"""


def test_the_package_imports_without_pytest_and_the_suite_says_what_it_needs() -> None:
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith("connector.conformance is a pytest suite: install pytest "
                                   "and pytest-asyncio"), probe.stdout
