"""A Mosquitto broker of our own on a loopback port, for the demo, the tests and the benchmarks.

It is a real broker process (the ``mosquitto`` binary from the Debian package), started with a
config written to its work folder, and stopped, killed (to test crashes) or restarted on the
same port on request::

    with LocalBroker() as broker:          # a free port, a temporary folder
        connect(broker.host, broker.port)

With ``devices=[...]`` the broker is locked the way ``deploy/broker/`` locks a production one: no
anonymous clients, a user and a random password per device and one for the server
(:data:`SERVER_USER`), and :data:`ACL_RULES`, so that a device writes only its own topics::

    with LocalBroker(devices=["jetson-01"]) as broker:
        connect(broker.host, broker.port, username="jetson-01", password=broker.password("jetson-01"))
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Sequence

from edgetune.contract.topics import check_device_id

from .errors import UsageError

log = logging.getLogger(__name__)

#: The user the server logs in as on a locked broker.
SERVER_USER = "edgetune-server"
#: The ACL of a locked broker: the rules of ``deploy/broker/acl`` (a test keeps the two equal). Each
#: device logs in with its device id as user name (``%u``); the server reads all telemetry and
#: writes commands, acknowledgements and the fleet head.
ACL_RULES = (
    f"user {SERVER_USER}",
    "topic read edgetune/v1/+/status",
    "topic read edgetune/v1/+/events",
    "topic read edgetune/v1/+/metrics",
    "topic read edgetune/v1/+/heads",
    "topic write edgetune/v1/+/cmd",
    "topic write edgetune/v1/+/ack",
    "topic write edgetune/v1/fleet/head",
    "pattern write edgetune/v1/%u/status",
    "pattern write edgetune/v1/%u/events",
    "pattern write edgetune/v1/%u/metrics",
    "pattern write edgetune/v1/%u/heads",
    "pattern read edgetune/v1/%u/cmd",
    "pattern read edgetune/v1/%u/ack",
    "pattern read edgetune/v1/fleet/head",
)
#: Mosquitto 2's password hash ("$7$"): PBKDF2-HMAC-SHA512, this many iterations, a 12-byte salt.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12

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


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A password-file hash Mosquitto 2 accepts (what ``mosquitto_passwd`` writes), so that a
    locked broker needs no second binary."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class LocalBroker:
    """One mosquitto process on 127.0.0.1; ``workdir`` (a temporary folder by default) holds its
    config and log.

    ``port``: a fixed port, or None for a free one (retried if another process takes it first).
    ``extra_config``: more ``mosquitto.conf`` lines (an ACL file, a user). ``persistence``: keep
    sessions and queued QoS 1 messages in ``workdir`` across a restart, as a production broker.
    ``devices``: lock the broker (see the module docstring): these device ids and
    :data:`SERVER_USER` get random passwords (:meth:`password`, :meth:`password_file`); None
    (the default) leaves it open to anonymous clients, as tests of other things want it.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, extra_config: str = "",
                 persistence: bool = False, devices: Sequence[str] | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edgetune-broker-")
        self.workdir = Path(workdir or self._tmp.name)
        self.port = port
        self.extra_config = extra_config
        self.persistence = persistence
        self._proc: subprocess.Popen[bytes] | None = None
        self._passwords: dict[str, str] | None = None
        if devices is not None:
            for device in devices:
                check_device_id(device)
                if device == SERVER_USER:
                    raise UsageError(f"device id {device!r} is the server's broker user; expected another id")
            self._passwords = {user: secrets.token_urlsafe(18) for user in (SERVER_USER, *devices)}
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
        lines = [f"listener {port} {self.host}", f"allow_anonymous {'false' if self.locked else 'true'}",
                 f"user {getpass.getuser()}",
                 f"persistence {'true' if self.persistence else 'false'}", f"persistence_location {self.workdir}/",
                 # Save sessions and queued messages every second, not only at a clean shutdown: a
                 # kill -9 then loses at most the last second, and what it loses the devices still
                 # hold until the server acknowledges it. Not on every change (autosave_on_changes):
                 # Mosquitto rewrites its whole file each time, measured 173 msg/s instead of 1,117
                 # device -> server with a 3,000 message backlog.
                 "autosave_on_changes false", "autosave_interval 1",
                 # Small packets (PUBACKs, acknowledgements) go at once, not after Nagle's wait.
                 "set_tcp_nodelay true",
                 "max_queued_messages 100000", *self._lock_files(), self.extra_config]
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

    @property
    def locked(self) -> bool:
        """True when anonymous clients are refused (``devices`` was given)."""
        return self._passwords is not None

    def password(self, user: str) -> str:
        """The password of ``user`` (a device id, or :data:`SERVER_USER`) on a locked broker."""
        if self._passwords is None or user not in self._passwords:
            raise UsageError(f"broker user {user!r} is unknown; expected one of {sorted(self._passwords or {})} "
                             "(a locked broker, LocalBroker(devices=[...]), has a user per device and the server's)")
        return self._passwords[user]

    def password_file(self, user: str) -> Path:
        """A file (mode 0600) holding :meth:`password` on its first line, for a device's
        ``[mqtt] password_file`` or the server's ``--mqtt-password-file``."""
        path = self.workdir / "secrets" / f"{user}.password"
        password = self.password(user)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return path

    def _lock_files(self) -> list[str]:
        """Write the password file and the ACL of a locked broker; their mosquitto.conf lines."""
        if self._passwords is None:
            return []
        passwd, acl = self.workdir / "passwd", self.workdir / "acl"
        passwd.write_text("".join(f"{user}:{password_hash(pw)}\n" for user, pw in self._passwords.items()))
        passwd.chmod(0o600)
        acl.write_text("\n".join(ACL_RULES) + "\n")
        return [f"password_file {passwd}", f"acl_file {acl}"]

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
