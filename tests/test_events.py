"""Event validation: good events parse, bad ones come back with a reason naming the field."""

import json
from datetime import datetime, timedelta, timezone

from recsys.features.events import parse_event

GOOD = {"type": "product_viewed", "user_id": "u1", "sku": "E000001", "ts": "2026-01-02T03:04:05+00:00"}


def test_valid_event_gets_an_id_and_keeps_fields():
    event, reason = parse_event(json.dumps(GOOD).encode())
    assert reason is None
    assert event.user_id == "u1" and event.type == "product_viewed" and len(event.event_id) == 36
    assert event.ts == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_context_of_a_recommendation_is_kept():
    event, _ = parse_event({**GOOD, "context": {"surface": "pdp_fbt", "request_id": "r1", "slot": 3}})
    assert event.context.slot == 3 and event.context.surface == "pdp_fbt"


def test_reasons_name_the_bad_fields():
    cases = {
        b"{not json": "not JSON",
        b"[1, 2]": "JSON object",
        json.dumps({**GOOD, "type": "clicked"}): "type:",
        json.dumps({k: v for k, v in GOOD.items() if k != "user_id"}): "user_id: Field required",
        json.dumps({**GOOD, "quantity": 0}): "quantity:",
        json.dumps({**GOOD, "price": -1}): "price:",
        json.dumps({**GOOD, "ts": "2026-01-02T03:04:05"}): "ts:",  # no timezone
        json.dumps({**GOOD, "colour": "red"}): "colour: Extra inputs",
        json.dumps({**GOOD, "type": "purchase_completed"}): "order_id",
        json.dumps({**GOOD, "context": {"slot": 500}}): "context.slot",
        b"\xff\xfe": "UTF-8",
    }
    for raw, expected in cases.items():
        event, reason = parse_event(raw)
        assert event is None, raw
        assert expected in reason, (raw, reason)


def test_future_events_are_refused():
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    event, reason = parse_event({**GOOD, "ts": future})
    assert event is None and "future" in reason
