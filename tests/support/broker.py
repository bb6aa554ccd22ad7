"""A private Mosquitto broker for tests: its own config, port, process and log.

    broker = MosquittoBroker(tmp_path)
    broker.start()              # raises BrokerUnavailable if mosquitto is not installed
    ... connect to broker.host, broker.port ...
    broker.stop()

or ``with MosquittoBroker(tmp_path) as broker: …``. Anonymous, loopback only, no persistence.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

#: Where Debian/Ubuntu put the binary (often not on a user's PATH).
_KNOWN_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerUnavailable(RuntimeError):
    """Mosquitto is not installed or would not start."""


def find_mosquitto() -> str | None:
    """The mosquitto binary: ``$MOSQUITTO``, then PATH, then the usual sbin folders; ``None`` if absent."""
    for candidate in (os.environ.get("MOSQUITTO"), shutil.which("mosquitto"), *_KNOWN_PATHS):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """One mosquitto process on a free loopback port; ``workdir`` holds its config and log."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        self.workdir = Path(workdir)
        self.extra_config = extra_config
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: object = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self, timeout_s: float = 5.0, attempts: int = 3) -> None:
        """Start and wait until it accepts connections; retries on a port lost to a race."""
        binary = find_mosquitto()
        if binary is None:
            raise BrokerUnavailable("mosquitto is not installed (apt-get install mosquitto, or set $MOSQUITTO)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            port = _free_port(self.host)
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(f"listener {port} {self.host}\nallow_anonymous true\npersistence false\n"
                            f"{self.extra_config}\n")
            log = open(self.log_path, "ab")  # noqa: SIM115 -- closed in stop()
            proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
            if self._wait_listening(proc, port, timeout_s):
                self.port, self._proc, self._log = port, proc, log
                return
            proc.kill()
            proc.wait()
            log.close()
        raise BrokerUnavailable(f"mosquitto did not start; see {self.log_path}:\n{self.log_path.read_text()[-2000:]}")

    def _wait_listening(self, proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    def __enter__(self) -> "MosquittoBroker":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
