"""The store's bad days, end to end: a corrupt file, a newer schema, a second agent,
a power loss that rolls the store back, and a cap reached during an outage."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Plant, Process, Rig, agent_config, busy_device, counter_device
from delivery import assert_copies_identical, assert_no_seq_gap, drained_since, envelopes

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import Received
from edge_agent.store.capacity import file_bytes

pytestmark = pytest.mark.fault

COUNTER = [{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}]


def run_agent_once(config: Path) -> subprocess.CompletedProcess[str]:
    """`edge-agent run` expected to refuse at start: it must exit by itself, quickly."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def latest_state(messages: list[Received]) -> dict[str, Any]:
    return [m for m in messages if m.kind == "state" and m.body.get("online")][-1].body


def test_a_corrupt_store_is_set_aside_and_the_agent_carries_on(rig: Rig) -> None:
    sim = rig.plant(COUNTER)
    agent = rig.start_agent([counter_device(sim.port, 0.2, level=False)])
    rig.platform.wait_for(lambda ms: len(envelopes(ms)) >= 5, 15, "five messages")
    assert agent.terminate() == 0
    before = max(m.body["seq"] for m in envelopes(rig.platform.messages))
    (rig.tmp_path / "store.db").write_bytes(b"\x00garbage, not SQLite\x00" * 512)

    agent.start()
    rig.platform.wait_for(
        lambda ms: any("losses" in m.body for m in ms if m.kind == "state"), 15, "losses"
    )
    rig.platform.wait_for(
        lambda ms: max(m.body["seq"] for m in envelopes(ms)) > before + 3, 15, "new messages"
    )
    assert agent.terminate() == 0
    assert list(rig.tmp_path.glob("store.db.corrupt-*")), "the damaged file is kept for forensics"
    state = latest_state(rig.platform.messages)
    assert state["losses"][0]["reason"].startswith("store set aside")
    after = sorted(
        m.body["seq"] for m in envelopes(rig.platform.messages) if m.body["seq"] > before
    )
    assert after[0] == before + 1, "numbering continues above everything published"
    assert_copies_identical(rig.platform.messages)


def wal_pages(wal: Path) -> set[int]:
    """The database pages a WAL holds newer copies of (each frame header starts with one)."""
    if not wal.exists() or wal.stat().st_size <= 32:
        return set()
    data = wal.read_bytes()
    (page_size,) = struct.unpack(">I", data[8:12])
    frame = 24 + page_size
    return {
        struct.unpack(">I", data[at : at + 4])[0] for at in range(32, len(data) - frame + 1, frame)
    }


def damage_a_page(store: Path) -> None:
    """Overwrite a table leaf page (where rows are: most pages are) in the middle of the
    file, one that no WAL frame shadows."""
    data = store.read_bytes()
    shadowed = wal_pages(store.with_name("store.db-wal"))
    pages = len(data) // 4096
    middle_first = sorted(range(2, pages), key=lambda p: abs(p - pages // 2))
    page = next(
        p
        for p in middle_first
        if p + 1 not in shadowed and data[p * 4096] == 0x0D  # a table b-tree leaf
    )
    with store.open("r+b") as file:
        file.seek(page * 4096)
        file.write(b"\xa5" * 4096)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("stop", ["clean", "kill9"])
def test_a_damaged_store_is_set_aside_as_found_and_what_it_held_declared(
    rig: Rig, stop: str
) -> None:
    device = busy_device(rig.plant, gas={"const": 5}, limits={"H": 25})
    # A small cap keeps the WAL small: most of what waits is in the file itself.
    agent = rig.start_agent([device], store={"max_size": "4MiB"})
    rig.platform.wait_for(lambda ms: bool(envelopes(ms)), 15, "first messages")
    rig.broker.stop()
    time.sleep(3)  # about 6,000 readings wait in the store
    if stop == "clean":
        assert agent.terminate() == 0
    else:
        agent.kill9()
    store = rig.tmp_path / "store.db"
    damage_a_page(store)
    found = {name: sha256(store.with_name(name)) for name in ("store.db", "store.db-wal")
             if store.with_name(name).exists()}  # fmt: skip
    before = max(m.body["seq"] for m in envelopes(rig.platform.messages))

    agent.start()
    rig.broker.start()
    rig.platform.wait_for(
        lambda ms: any(
            e["reason"].startswith("store set aside")
            for m in ms if m.kind == "state" for e in m.body.get("losses", [])
        ),
        30,
        "the set-aside declared",
    )  # fmt: skip
    rig.platform.wait_for(lambda ms: max(m.body["seq"] for m in envelopes(ms)) > before, 15, "more")
    assert agent.popen is not None
    assert agent.popen.poll() is None, "no crash, no loop"
    assert agent.terminate() == 0, agent.log()

    (aside,) = rig.tmp_path.glob("store.db.corrupt-*Z")
    kept = {name.replace("store.db", aside.name): digest for name, digest in found.items()}
    assert {name: sha256(aside.with_name(name)) for name in kept} == kept, "byte for byte"
    entry = next(
        e for e in latest_state(rig.platform.messages)["losses"]
        if e["reason"].startswith("store set aside")
    )  # fmt: skip
    assert entry["items"] > 1000, "counted"
    assert entry["first"] <= entry["last"]
    after = sorted(
        m.body["seq"] for m in envelopes(rig.platform.messages) if m.body["seq"] > before
    )
    assert after[0] == before + 1 or "seq" in entry
    assert_copies_identical(rig.platform.messages)


def test_a_store_from_a_newer_version_is_refused_and_kept(tmp_path: Path) -> None:
    config = agent_config(tmp_path, 1, [counter_device(1, 0.2, level=False)])
    store = tmp_path / "store.db"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE future (x)")
        db.execute("PRAGMA user_version = 7")
    before = store.read_bytes()
    result = run_agent_once(config)
    assert result.returncode != 0
    assert "newer edge-agent" in result.stderr
    assert store.read_bytes() == before


def test_a_second_agent_on_the_same_store_is_refused(
    tmp_path: Path,
    broker: Mosquitto,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> None:
    sim = plant(COUNTER)
    config = agent_config(tmp_path, broker.port, [counter_device(sim.port, 0.2, level=False)])
    first = spawn("agent", "run", str(config))
    deadline = time.monotonic() + 10
    while "agent_started" not in first.log():
        assert time.monotonic() < deadline, first.log()
        time.sleep(0.05)
    second = run_agent_once(config)
    assert second.returncode != 0
    assert "another edge-agent" in second.stderr
    assert first.popen is not None
    assert first.popen.poll() is None, "the first agent keeps running"


def test_a_power_loss_rollback_never_reuses_a_seq(rig: Rig) -> None:
    """Imitates a power loss by bringing back an older copy of the store files."""
    sim = rig.plant(COUNTER)
    agent = rig.start_agent([counter_device(sim.port, 0.2, level=False)])
    rig.platform.wait_for(lambda ms: len(envelopes(ms)) >= 3, 15, "first messages")
    agent.kill9()
    backup = rig.tmp_path / "backup"
    backup.mkdir()
    for file in rig.tmp_path.glob("store.db*"):
        if not file.name.endswith((".seq", ".lock")):
            shutil.copy(file, backup / file.name)
    agent.start()
    seen = len(envelopes(rig.platform.messages))
    rig.platform.wait_for(lambda ms: len(envelopes(ms)) >= seen + 10, 20, "later messages")
    agent.kill9()
    for file in backup.iterdir():  # the rollback; the seq mark outside the store stays
        shutil.copy(file, rig.tmp_path / file.name)
    restarted = time.time()
    agent.start()
    rig.platform.wait_for(drained_since(restarted), 20, "drained")
    published = len(envelopes(rig.platform.messages))
    rig.platform.wait_for(lambda ms: len(envelopes(ms)) >= published + 3, 15, "new messages")
    assert agent.terminate() == 0

    assert_copies_identical(rig.platform.messages)  # no seq carries two different contents
    state = latest_state(rig.platform.messages)
    assert any(entry["reason"].startswith("seq skipped") for entry in state["losses"])


def test_the_cap_reached_during_an_outage_thins_readings_and_keeps_alarms(rig: Rig) -> None:
    device = busy_device(
        rig.plant, gas={"step": {"before": 10, "after": 60, "at": "6s"}}, limits={"H": 25, "HH": 50}
    )
    agent = rig.start_agent([device], store={"max_size": "1MiB"})
    rig.platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 15, "first readings")
    rig.broker.stop()
    deadline = time.monotonic() + 40
    while "thinned" not in _ledger_reasons(rig.tmp_path / "store.db"):
        assert time.monotonic() < deadline, "the cap should force thinning"
        time.sleep(0.5)
    rig.broker.start()
    rig.platform.wait_for(drained_since(time.time()), 60, "drained after the outage")
    assert agent.terminate() == 0

    messages = rig.platform.messages
    assert_no_seq_gap(messages)
    alarms = [i for m in envelopes(messages) if m.kind == "alarm" for i in m.body["items"]]
    assert {(a["kind"], a["state"]) for a in alarms} >= {("H", "raised"), ("HH", "raised")}
    state = latest_state(messages)
    assert state["losses_total"]["items"] > 0
    reasons = {e["reason"] for e in state["losses"]}
    assert "store full: thinned back-log" in reasons
    # A thinning pass runs on the event loop and may hold a 50 ms poll past its deadline:
    # declared as such, never silent.
    assert reasons <= {"store full: thinned back-log", "not sampling: plc-1 missed poll deadlines"}
    assert file_bytes(rig.tmp_path / "store.db") <= 1024 * 1024, "the cap counts the WAL too"


def _ledger_reasons(store: Path) -> str:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return " ".join(r for (r,) in db.execute("SELECT reason FROM loss"))
    except sqlite3.Error:
        return ""
