"""A Mosquitto broker of our own on a loopback port, for the demo, the tests and the benchmarks.

It is a real broker process (the ``mosquitto`` binary from the Debian package), started with a
config written to its work folder, and stopped, killed (to test crashes) or restarted on the
same port on request::

    with LocalBroker() as broker:          # a free port, a temporary folder
        connect(broker.host, broker.port)
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from .errors import UsageError

log = logging.getLogger(__name__)

#: Where Debian/Ubuntu put the binary (often not on a user's PATH).
_KNOWN_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerUnavailable(UsageError):
    """Mosquitto is not installed or would not start."""


def find_mosquitto() -> str | None:
    """The mosquitto binary: ``$MOSQUITTO``, then PATH, then the usual sbin folders; None if absent."""
    for candidate in (os.environ.get("MOSQUITTO"), shutil.which("mosquitto"), *_KNOWN_PATHS):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalBroker:
    """One mosquitto process on 127.0.0.1; ``workdir`` (a temporary folder by default) holds its
    config and log.

    ``port``: a fixed port, or None for a free one (retried if another process takes it first).
    ``extra_config``: more ``mosquitto.conf`` lines (an ACL file, a user). ``persistence``: keep
    sessions and queued QoS 1 messages in ``workdir`` across a restart, as a production broker.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, extra_config: str = "",
                 persistence: bool = False) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edgetune-broker-")
        self.workdir = Path(workdir or self._tmp.name)
        self.port = port
        self.extra_config = extra_config
        self.persistence = persistence
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self.port is None:
            raise RuntimeError("the broker has no port yet; start() it first")
        return (self.host, self.port)

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0, attempts: int = 3) -> "LocalBroker":
        """Start the broker and wait until it accepts connections."""
        binary = find_mosquitto()
        if binary is None:
            raise BrokerUnavailable(
                "the mosquitto MQTT broker is not installed; install it (Debian/Ubuntu: apt-get install mosquitto, "
                "or set $MOSQUITTO to the binary) or point edgetune at a running broker with --broker HOST:PORT")
        self.workdir.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        for _ in range(1 if fixed else attempts):
            port = self.port if fixed else free_port(self.host)
            if self._launch(binary, port, timeout_s):
                self.port = port
                log.info("mosquitto listening on %s:%d", self.host, port)
                return self
        raise BrokerUnavailable(f"mosquitto did not start; see {self.log_path}:\n{self._log_tail()}")

    def start_on(self, port: int, timeout_s: float = 10.0) -> "LocalBroker":
        """Start on exactly ``port`` (e.g. the one a device was told before the broker came up)."""
        self.port = port
        return self.start(timeout_s)

    def _launch(self, binary: str, port: int, timeout_s: float) -> bool:
        # Started as root, mosquitto drops to its own user and can no longer write its
        # persistence file in our work folder: keep it as whoever started it.
        lines = [f"listener {port} {self.host}", "allow_anonymous true", f"user {getpass.getuser()}",
                 f"persistence {'true' if self.persistence else 'false'}", f"persistence_location {self.workdir}/",
                 "max_queued_messages 100000", self.extra_config]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- closed in _reap()
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        self.kill()
        return False

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _reap(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the broker: no clean shutdown, nothing saved, as in a crash."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=5)
        self._reap()

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after 5 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()

    def restart(self) -> "LocalBroker":
        """Start again on the same port (after :meth:`kill` or :meth:`stop`)."""
        return self.start()

    def close(self) -> None:
        """Stop, and remove the work folder if it was a temporary one."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
