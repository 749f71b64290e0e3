"""The uplink's in-flight window: every QoS 1 publish counts; alarms keep a slot and go
ahead of bytes; back-fill holds at most half; without priority, first in, first out."""

from __future__ import annotations

from edge_agent.store import StoredMessage
from edge_agent.uplink.ratelimit import ByteRate
from edge_agent.uplink.window import TopUp, Window

NOW = 1000.0


def message(seq: int, topic: str = "rt", hist: bool = False, size: int = 100) -> StoredMessage:
    return StoredMessage(seq, topic, hist, 1, "x" * size)


def window(size: int = 4, priority: bool = True, **kwargs: object) -> Window:
    return Window(size, priority=priority, max_bytes=64 * 1024, **kwargs)  # type: ignore[arg-type]


def test_every_publish_counts_retained_ones_too() -> None:
    w = window(4)
    w.sent(1, message(1), 100, NOW)
    w.sent(2, None, 50, NOW)  # a retained state
    assert (w.in_flight, w.seqs, w.retained) == (2, {1}, {2})
    assert w.top_up(NOW).slots == 2
    assert w.acked(2, NOW) == (True, None)
    assert w.acked(1, NOW) == (True, message(1))
    assert w.acked(9, NOW) == (False, None), "a mid of an earlier connection"
    assert w.in_flight == 0


def test_a_publish_in_flight_knows_when_it_was_sent_for_its_pubacks_latency() -> None:
    w = window(4)
    w.sent(1, message(1), 100, NOW)
    assert (w.sent_at(1), w.sent_at(2)) == (NOW, None)
    w.acked(1, NOW + 0.05)
    assert w.sent_at(1) is None


def test_one_slot_is_kept_for_an_alarm() -> None:
    top_up = window(2).top_up(NOW)
    assert top_up.admit(message(1), packed=False)
    assert not top_up.allows("live")
    assert top_up.allows("alarm")
    assert top_up.admit(message(2, "alarm"), packed=False)
    assert top_up.slots == 0


def test_back_fill_takes_at_most_half_the_window() -> None:
    top_up = window(4).top_up(NOW)
    assert top_up.admit(message(1, hist=True), packed=False)
    assert top_up.admit(message(2, hist=True), packed=False)
    assert not top_up.allows("backfill")
    assert not top_up.admit(message(3, hist=True), packed=False), "a resend that does not fit"
    assert top_up.allows("live")


def test_readings_stay_within_the_byte_budget_of_a_slow_link() -> None:
    top_up = window(20).top_up(NOW)
    assert top_up.bulk_bytes is not None
    assert top_up.admit(message(1, size=top_up.bulk_bytes), packed=True)
    assert not top_up.allows("live")
    assert top_up.allows("alarm")


def test_a_message_packed_for_the_top_up_always_counts() -> None:
    top_up = window(2).top_up(NOW)
    top_up.admit(message(1), packed=False)
    assert top_up.admit(message(2), packed=True)
    assert top_up.slots == 0


def test_without_priority_everything_goes_in_order_with_no_slot_kept() -> None:
    top_up: TopUp = window(2, priority=False).top_up(NOW)
    assert top_up.bulk_bytes is None
    assert top_up.admit(message(1, hist=True), packed=False)
    assert top_up.admit(message(2, hist=True), packed=False)
    assert top_up.slots == 0


def test_no_back_fill_while_the_rate_is_spent() -> None:
    rate = ByteRate(100, clock=lambda: NOW)
    w = window(10, backfill_rate=rate)
    w.sent(1, message(1, hist=True), 500, NOW)  # 500 bytes at 100/s: in debt
    assert not w.top_up(NOW).allows("backfill")
    assert w.top_up(NOW).allows("live")


def test_an_acknowledgement_asks_for_a_top_up_only_when_the_last_one_ran_out() -> None:
    w = window(4)
    top_up = w.top_up(NOW)
    for seq in (1, 2):
        assert top_up.admit(message(seq), packed=True)
        w.sent(seq, message(seq), 100, NOW)
    assert not top_up.spent, "the store had nothing more that was due"
    w.acked(1, NOW)
    assert not w.wants_top_up, "the freed slot waits for what becomes due"
    w.acked(2, NOW)
    assert not w.wants_top_up, "nothing in flight, and nothing more was due"


def test_an_acknowledgement_asks_for_a_top_up_after_one_that_ran_out_of_room() -> None:
    w = window(4)
    top_up = w.top_up(NOW)
    for seq in (1, 2, 3):
        assert top_up.admit(message(seq), packed=True)
        w.sent(seq, message(seq), 100, NOW)
    assert top_up.spent, "only the alarm's slot is left"
    w.acked(1, NOW)
    assert w.wants_top_up


def test_back_fill_that_fills_its_half_spends_a_top_up() -> None:
    top_up = window(8).top_up(NOW)
    assert not top_up.spent
    for seq in range(4):
        top_up.admit(message(seq, hist=True), packed=True)
    assert top_up.spent


def test_alarms_that_take_the_last_slots_spend_the_top_up() -> None:
    w = window(2)
    top_up = w.top_up(NOW)
    for seq in (1, 2):
        assert top_up.admit(message(seq, topic="alarm"), packed=True)
    assert top_up.spent, "no slot left, though readings never took one"


def test_a_retained_publish_is_not_the_paces() -> None:
    w = window(4)
    w.sent(100, None, 300, NOW)  # `state`, acknowledged ...
    w.acked(100, NOW + 0.001)
    w.sent(1, message(1, size=35_000), 35_000, NOW + 1)  # ... a second before readings
    w.acked(1, NOW + 1.002)
    assert w.pace.rate(NOW + 1.002) > 10_000_000, "the burst began with its own publish"
