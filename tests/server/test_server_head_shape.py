"""A head is stored only if its embedding size D is the one its bundle's head already has: a
[C][D'] head cannot have been fitted on that bundle's embeddings. Real SQLite, no broker."""

from __future__ import annotations

from typing import Any

import pytest
from support.telemetry import T0

from edgetune.contract import messages
from edgetune.server.ingest import Ingest
from edgetune.server.store import HeadShapeError, Outcome


def _head(seq: int, dim: int, bundle_id: str = "kws", head: str = "keywords") -> dict[str, Any]:
    body = {"pipeline": "audio", "head": head, "bundle_id": bundle_id, "head_version": seq, "labels": ["yes", "no"],
            "n_samples": 8, "weight": [[0.5] * dim, [-0.5] * dim], "bias": [0.0, 0.0]}
    return messages.make("jetson-01", seq, T0 + seq, "head", body)


def test_the_first_head_of_a_bundle_fixes_its_embedding_size(store):
    # Prepare
    assert store.add(_head(1, dim=4), "edgetune/v1/jetson-01/heads", received_at=T0) is Outcome.STORED

    # Execute / Assert
    with pytest.raises(HeadShapeError, match="weight rows of 5 numbers; expected 4"):
        store.add(_head(2, dim=5), "edgetune/v1/jetson-01/heads", received_at=T0)
    assert [m["seq"] for m in store.messages("head", device="jetson-01")] == [1]
    assert store.add(_head(3, dim=4), "edgetune/v1/jetson-01/heads", received_at=T0) is Outcome.STORED
    assert store.add(_head(1, dim=4), "edgetune/v1/jetson-01/heads", received_at=T0) is Outcome.DUPLICATE


def test_other_bundles_and_other_heads_have_their_own_size(store):
    store.add(_head(1, dim=4), "edgetune/v1/jetson-01/heads", received_at=T0)

    assert store.add(_head(2, dim=9, bundle_id="other"), "edgetune/v1/jetson-01/heads", received_at=T0) \
        is Outcome.STORED
    assert store.add(_head(3, dim=7, head="objects"), "edgetune/v1/jetson-01/heads", received_at=T0) \
        is Outcome.STORED


def test_ingest_counts_a_wrongly_sized_head_as_a_head_shape_reject_here_and_in_the_database(store):
    # Prepare
    ingest = Ingest(store)
    ingest.store(_head(1, dim=4), "edgetune/v1/jetson-01/heads")

    # Execute
    outcome = ingest.store(_head(2, dim=3), "edgetune/v1/jetson-01/heads")

    # Assert
    assert outcome is None
    assert ingest.counters.rejected == {"head_shape": 1} == store.stats()["rejected"]
    assert "expected 4, the embedding size" in store.stats()["rejects"]["head_shape"]["last_error"]
