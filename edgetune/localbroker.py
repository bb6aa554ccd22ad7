"""A Mosquitto broker of our own on a free loopback port, for the demo and the tests.

It is a real broker process (the ``mosquitto`` binary from the Debian package), started with a
config written to a temporary folder and stopped (or killed, to test failures) on request.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import UsageError

log = logging.getLogger(__name__)

_SEARCH = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None."""
    for name in _SEARCH:
        path = shutil.which(name) or (name if Path(name).is_file() else None)
        if path:
            return path
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """A mosquitto process bound to 127.0.0.1 on ``port`` (a free one by default).

    ``persistence=True`` keeps queued QoS 1 messages and sessions in ``workdir`` across a
    restart, as a production broker would.
    """

    def __init__(self, port: int | None = None, workdir: Path | None = None, persistence: bool = False):
        self.binary = find_mosquitto()
        if self.binary is None:
            raise UsageError(
                "the mosquitto MQTT broker is not installed; install it (Debian/Ubuntu: apt-get install mosquitto) "
                "or point edgetune at a running broker with --broker HOST:PORT"
            )
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edgetune-broker-")
        self.workdir = Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout_s: float = 10.0) -> "LocalBroker":
        """Start the broker and wait until it accepts connections."""
        conf = self._write_config()
        log_file = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with status {self.proc.returncode}; see {self.workdir / 'mosquitto.log'}"
                )
            try:
                with socket.create_connection(self.address, timeout=0.2):
                    log.info("mosquitto listening on 127.0.0.1:%d", self.port)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port} within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the broker: no clean shutdown, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the broker cleanly."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
