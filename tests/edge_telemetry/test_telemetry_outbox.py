"""The outbox: sequence numbers that never repeat, bounded storage with counted drops."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edgetune.contract import ContractError, messages
from edgetune.edge.telemetry.outbox import Outbox
from edgetune.errors import UsageError

DEVICE = "jetson-test-01"


def body(i: int) -> dict[str, Any]:
    return {"pipeline": "audio", "head": "keywords", "label": "yes", "score": 0.9, "modality": "audio",
            "source": "wav:/data/clip.wav", "offset_s": 0.1 * i, "bundle_id": "kws-demo", "bundle_version": "1.0.0", "head_version": 0}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite"


def test_put_stores_a_valid_envelope_on_the_device_topic(path: Path) -> None:
    # Prepare
    with Outbox(path, DEVICE, first_seq=10) as outbox:
        # Execute
        env = outbox.put("event", body(1), observed_at=1_795_000_000.5)
        (stored,) = outbox.pending()
    # Assert
    assert env is not None and env["seq"] == 10 and env["observed_at"] == 1_795_000_000.5
    assert stored.seq == 10 and stored.topic == f"edgetune/v1/{DEVICE}/events"
    assert messages.decode_for_topic(DEVICE, "events", stored.payload) == env


def test_seq_strictly_increases_and_survives_reopening(path: Path) -> None:
    # Prepare
    with Outbox(path, DEVICE) as first:
        seqs = [first.put("event", body(i), 1.0)["seq"] for i in range(5)]
        first.ack(seqs[-1])
        reserved = first.reserve_seqs(2)
    # Execute: a new object on the same file, as after a restart
    with Outbox(path, DEVICE) as second:
        later = [second.put("event", body(i), 1.0)["seq"] for i in range(3)]
        counts = second.counts()
    # Assert
    everything = seqs + [reserved, reserved + 1] + later
    assert everything == sorted(everything) and len(set(everything)) == len(everything)
    assert later[0] == reserved + 2
    assert (counts.pending, counts.sent) == (4 + 3, 1)


def test_a_new_file_starts_numbering_at_the_clock_in_microseconds(path: Path) -> None:
    import time

    before = int(time.time() * 1e6)
    with Outbox(path, DEVICE) as outbox:
        seq = outbox.put("event", body(0), 1.0)["seq"]
    assert before <= seq <= int(time.time() * 1e6)


def test_seq_is_never_reused_after_the_writer_is_killed(path: Path) -> None:
    # Prepare: a process that puts messages as fast as it can until it is SIGKILLed
    script = (
        "import sys\n"
        "from edgetune.edge.telemetry.outbox import Outbox\n"
        f"o = Outbox(sys.argv[1], {DEVICE!r})\n"
        "body = dict(pipeline='audio', head='keywords', label='yes', score=0.9, modality='audio', source='-',\n"
        "            offset_s=0.0, bundle_id='b', bundle_version='1', head_version=0)\n"
        "i = 0\n"
        "while True:\n"
        "    env = o.put('event', body, 1.0)\n"
        "    i += 1\n"
        "    if i == 20: print(env['seq'], flush=True)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        seen = int(proc.stdout.readline())
        # Execute
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Outbox(path, DEVICE) as outbox:
        stored = [m.seq for m in outbox.pending(limit=1_000_000)]
        next_seq = outbox.put("event", body(0), 1.0)["seq"]
    # Assert: nothing committed was lost, and the next number is above every stored one
    assert seen in stored
    assert stored == sorted(stored) and stored == list(range(stored[0], stored[0] + len(stored)))
    assert next_seq > stored[-1]


def test_a_bad_body_is_refused_and_takes_no_number(path: Path) -> None:
    with Outbox(path, DEVICE, first_seq=0) as outbox:
        with pytest.raises(ContractError, match="score"):
            outbox.put("event", {**body(0), "score": 1.5}, 1.0)
        with pytest.raises(ContractError, match="observed_at"):
            outbox.put("event", body(0), float("nan"))
        with pytest.raises(ContractError, match="type"):
            outbox.put("detection", body(0), 1.0)
        counts = outbox.counts()
        env = outbox.put("event", body(0), 1.0)
    assert counts.pending == 0 and counts.next_seq == 0
    assert env is not None and env["seq"] == 0


def test_drop_oldest_keeps_the_newest_and_counts_the_drops(path: Path) -> None:
    # Prepare
    with Outbox(path, DEVICE, max_messages=3, overflow="drop_oldest", first_seq=0) as outbox:
        # Execute
        for i in range(5):
            assert outbox.put("event", body(i), 1.0) is not None
        kept = [m.seq for m in outbox.pending()]
        counts = outbox.counts()
    # Assert
    assert kept == [2, 3, 4]
    assert (counts.pending, counts.dropped_overflow) == (3, 2)


def test_drop_newest_refuses_new_messages_and_counts_them_across_restarts(path: Path) -> None:
    # Prepare
    with Outbox(path, DEVICE, max_messages=2, overflow="drop_newest", first_seq=0) as outbox:
        results = [outbox.put("event", body(i), 1.0) for i in range(4)]
        kept = [m.seq for m in outbox.pending()]
    # Execute
    with Outbox(path, DEVICE, max_messages=2, overflow="drop_newest") as reopened:
        counts = reopened.counts()
    # Assert: the refused ones took numbers, so the gap the server sees is explained by the counter
    assert [r is None for r in results] == [False, False, True, True]
    assert kept == [0, 1]
    assert (counts.pending, counts.dropped_overflow, counts.next_seq) == (2, 2, 4)


def test_ack_deletes_once_and_counts_sent(path: Path) -> None:
    with Outbox(path, DEVICE, first_seq=0) as outbox:
        for i in range(3):
            outbox.put("event", body(i), 1.0)
        first, again, unknown = outbox.ack(1), outbox.ack(1), outbox.ack(99)
        assert [m.seq for m in outbox.pending()] == [0, 2]
        assert [m.seq for m in outbox.pending(after_seq=0)] == [2]
        counts = outbox.counts()
    assert (first, again, unknown) == (True, False, False)
    assert (counts.pending, counts.sent) == (2, 1)


def test_ack_ranges_delete_exactly_the_named_seqs_in_one_go(path: Path) -> None:
    # Prepare
    with Outbox(path, DEVICE, first_seq=0) as outbox:
        for i in range(10):
            outbox.put("event", body(i), 1.0)
        # Execute: the server names 0-2 and 5, then names 1 and 5 again (a resend it re-acknowledged)
        deleted = outbox.ack_ranges([(0, 2), (5, 5)])
        again = outbox.ack_ranges([(1, 1), (5, 5)])
        kept = [m.seq for m in outbox.pending()]
        counts = outbox.counts()
    # Assert
    assert (deleted, again) == (4, 0)
    assert kept == [3, 4, 6, 7, 8, 9]
    assert (counts.pending, counts.sent) == (6, 4)


def test_pending_reads_between_two_seqs(path: Path) -> None:
    with Outbox(path, DEVICE, first_seq=0) as outbox:
        for i in range(10):
            outbox.put("event", body(i), 1.0)
        outbox.ack_ranges([(0, 1)])
        window = [m.seq for m in outbox.pending(limit=100, after_seq=2, upto_seq=5)]
        first_two = [m.seq for m in outbox.pending(limit=2)]
    assert window == [3, 4, 5]
    assert first_two == [2, 3]


def test_sync_fsyncs_only_when_a_put_came_since(path: Path) -> None:
    with Outbox(path, DEVICE, first_seq=0) as outbox:
        nothing_yet = outbox.sync()
        outbox.put("event", body(0), 1.0)
        first, second = outbox.sync(), outbox.sync()
    assert (nothing_yet, first, second) == (False, True, False)


def test_an_ack_for_a_message_overflow_dropped_changes_nothing(path: Path) -> None:
    # Prepare: seq 0 was sent, then dropped to make room before its acknowledgement came
    with Outbox(path, DEVICE, max_messages=2, overflow="drop_oldest", first_seq=0) as outbox:
        for i in range(3):
            outbox.put("event", body(i), 1.0)
        # Execute
        acked = outbox.ack(0)
        kept = [m.seq for m in outbox.pending()]
        counts = outbox.counts()
    # Assert
    assert acked is False
    assert kept == [1, 2]
    assert (counts.pending, counts.sent, counts.dropped_overflow) == (2, 0, 1)


def test_puts_and_acks_from_two_threads_keep_the_counts_exact(path: Path) -> None:
    # Prepare
    n = 300
    outbox = Outbox(path, DEVICE, first_seq=0)
    acked: list[int] = []

    def acker() -> None:
        while len(acked) < n:
            for message in outbox.pending(limit=50):
                if outbox.ack(message.seq):
                    acked.append(message.seq)

    thread = threading.Thread(target=acker)
    # Execute
    thread.start()
    for i in range(n):
        outbox.put("event", body(i), 1.0)
    thread.join(20)
    counts = outbox.counts()
    outbox.close()
    # Assert
    assert sorted(acked) == list(range(n))
    assert (counts.pending, counts.sent, counts.next_seq) == (0, n, n)


def test_a_file_belongs_to_one_device(path: Path) -> None:
    Outbox(path, DEVICE).close()
    with pytest.raises(UsageError, match="belongs to device 'jetson-test-01'"):
        Outbox(path, "jetson-test-02")


def test_a_file_that_is_not_an_outbox_is_refused_with_a_hint(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UsageError, match="move it away"):
        Outbox(path, DEVICE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_messages": 0}, "max_messages is 0"), ({"overflow": "drop_random"}, "'drop_oldest', 'drop_newest'")],
)
def test_bad_settings_name_the_value_and_what_is_allowed(path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Outbox(path, DEVICE, **kwargs)
