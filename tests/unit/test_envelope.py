"""The wire format of spec uplink-v1: topics, the envelope and the state payloads."""

from __future__ import annotations

import json

from edge_agent.store import Backlog, Loss, StoredMessage, Totals
from edge_agent.uplink.envelope import Identity, envelope, offline_payload, state_payload

IDENTITY = Identity("safety/v1", "91370200MA3C00000K", "GW-0001")


def test_topics_are_prefix_enterprise_gateway_name() -> None:
    assert IDENTITY.topic("rt") == "safety/v1/91370200MA3C00000K/GW-0001/rt"


def test_the_envelope_carries_the_stored_items_verbatim_and_only_sent_varies() -> None:
    message = StoredMessage(1042, "rt", False, 1, '[{"tag":"A","hz":"H","ts":1,"v":1.5,"q":0}]')
    first = json.loads(envelope(IDENTITY, message, sent_ms=100))
    again = json.loads(envelope(IDENTITY, message, sent_ms=200))
    assert first == {
        "v": 1,
        "ent": "91370200MA3C00000K",
        "gw": "GW-0001",
        "seq": 1042,
        "sent": 100,
        "hist": False,
        "items": [{"tag": "A", "hz": "H", "ts": 1, "v": 1.5, "q": 0}],
    }
    assert {**again, "sent": 100} == first


def test_state_reports_backlog_and_device_links() -> None:
    body = json.loads(
        state_payload(
            IDENTITY,
            ts_ms=5,
            version="0.1.0",
            backlog=Backlog(3, 1000),
            devices={"plc-1": "up", "plc-2": "down"},
            losses=([], Totals(0, 0)),
        )
    )
    assert body == {
        "v": 1,
        "ent": "91370200MA3C00000K",
        "gw": "GW-0001",
        "online": True,
        "ts": 5,
        "version": "0.1.0",
        "backlog": 3,
        "oldest": 1000,
        "devices": {"plc-1": "up", "plc-2": "down"},
    }


def test_the_will_says_offline_and_nothing_else() -> None:
    assert json.loads(offline_payload(IDENTITY)) == {
        "v": 1,
        "ent": "91370200MA3C00000K",
        "gw": "GW-0001",
        "online": False,
    }


def test_state_carries_the_loss_ledger_once_anything_was_lost() -> None:
    losses = [
        Loss("store full: thinned back-log", 512, 1000, 2000),
        Loss("seq skipped: power loss", seq=(1400, 1999)),
    ]
    body = json.loads(
        state_payload(
            IDENTITY,
            ts_ms=5,
            version="0.1.0",
            backlog=Backlog(0, None),
            devices={},
            losses=(losses, Totals(2, 512)),
        )
    )
    assert body["losses"] == [
        {"reason": "store full: thinned back-log", "items": 512, "first": 1000, "last": 2000},
        {"reason": "seq skipped: power loss", "seq": [1400, 1999]},
    ]
    assert body["losses_total"] == {"entries": 2, "items": 512}


def test_state_says_whether_the_clock_is_synchronised() -> None:
    body = json.loads(
        state_payload(
            IDENTITY,
            ts_ms=5,
            version="0.1.0",
            backlog=Backlog(0, None),
            devices={},
            losses=([], Totals(0, 0)),
            clock="unsynced",
        )
    )
    assert body["clock"] == "unsynced"
