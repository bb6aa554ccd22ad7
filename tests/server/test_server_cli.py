"""``edgetune server`` as a user runs it: options, a real process, signals, missing extras."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from support.telemetry import wait_for

from edgetune.errors import UsageError
from edgetune.server import cli


@pytest.mark.parametrize("text, expected", [("127.0.0.1:1883", ("127.0.0.1", 1883)), ("broker:0", ("broker", 0)),
                                            ("[::1]:8080", ("::1", 8080))])
def test_host_port_is_parsed(text, expected):
    # Execute / Assert
    assert cli.parse_host_port(text, "--broker") == expected


@pytest.mark.parametrize("text", ["1883", ":1883", "host:", "host:port", "host:70000"])
def test_a_bad_host_port_names_the_option(text):
    # Execute / Assert
    with pytest.raises(UsageError, match="--http is .* expected HOST:PORT"):
        cli.parse_host_port(text, "--http")


def test_the_cli_module_imports_nothing_heavy():
    # Execute
    code = ("import sys, edgetune.server.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'paho', 'starlette')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    # Assert
    assert out.strip() == "[]"


def test_a_missing_web_framework_names_the_extra(monkeypatch):
    # Prepare
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["server"])
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` raise ImportError

    # Execute / Assert
    with pytest.raises(UsageError, match=re.escape("pip install 'edgetune[server]'")):
        args.func(args)


def _ok(response: httpx.Response) -> httpx.Response | None:
    return response if response.status_code == 200 else None


@pytest.mark.broker
def test_the_server_process_serves_and_stops_cleanly_on_sigterm(broker, tmp_path):
    # Prepare
    env = {**os.environ, "EDGETUNE_SERVER_TOKEN": "tok"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetune.cli", "server", "--broker", f"{broker.host}:{broker.port}",
         "--db", str(tmp_path / "cli.db"), "--http", "127.0.0.1:0", "--client-id", "edgetune-server-cli"],
        stderr=subprocess.PIPE, text=True, env=env)
    url = None
    deadline = time.monotonic() + 20
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"dashboard and API at (http://\S+/) ", line)
        url = found.group(1) if found else None
        assert line or proc.poll() is None, "the server exited early"

    # Execute
    health = wait_for(lambda: _ok(httpx.get(url + "api/health", headers={"Authorization": "Bearer tok"})))
    without_token = httpx.get(url + "api/health")
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    proc.stderr.close()
    rc = proc.wait(10)

    # Assert
    assert health.json()["broker"]["client_id"] == "edgetune-server-cli"
    assert without_token.status_code == 401
    assert rc == 0, rest
    assert "Traceback" not in rest


def test_an_unusable_database_exits_2_with_a_message(tmp_path):
    # Execute
    result = subprocess.run(
        [sys.executable, "-m", "edgetune.cli", "server", "--db", str(tmp_path / "missing" / "x.db"),
         "--http", "127.0.0.1:0", "--broker", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=30)

    # Assert
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
