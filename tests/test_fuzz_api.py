"""Fuzz: schemathesis against the HTTP API's OpenAPI document, in-process, for every endpoint; then
everything the API accepted is put through the feature consumer, which must store or dead-letter it.

- Every endpoint, positive and negative inputs, with a storefront key where the document declares a
  security scheme: no 5xx, and every response conforms to the document (status declared, content type,
  headers, body schema).
- Without a key, an operation that declares one is refused (401, or 413/422 for a body refused before
  the key is looked at), never answered 2xx or 5xx.
- Event-shaped bodies with hostile field values (NUL and other control characters, lone surrogates,
  huge numbers, far-away timestamps, another user's key suffix): answered 202/413/422, never 5xx.
- Then every accepted event and every impression the GETs produced goes through the real consumer
  (topics of this module's own): each accepted event lands in the Postgres log or on the dead-letter
  topic, and no message makes the consumer fail (a poison message would stop ingestion).

Bounded: a few dozen examples per operation, no deadline (a busy 2-core machine stalls at random).
"""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest
import schemathesis
from confluent_kafka import Consumer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

from recsys.serve.api import api, set_recommender
from recsys.services import Kafka, Postgres
from tests.conftest import PATIENT, make_cfg

MAX_EXAMPLES = 40          # per operation and test: the whole file stays well under 2 minutes on 2 cores
EVENT_EXAMPLES = 250
TAG = uuid.uuid4().hex[:8]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]

RULES = "^/v1/admin/rules"
full_schema = schemathesis.openapi.from_asgi("/openapi.json", api)
full_schema.config.generation.update(modes=["positive", "negative"], with_security_parameters=False,
                                     max_examples=MAX_EXAMPLES)
schema = full_schema.exclude(path_regex=RULES)
# The rule set bodies are a recursive schema (filters nest): schemathesis' coverage phase enumerates its
# boundary cases combinatorially (one operation ran past 10 minutes), so those operations are fuzzed
# with its example and fuzzing phases only.
rules_schema = schemathesis.openapi.from_asgi("/openapi.json", api)
rules_schema.config.generation.update(modes=["positive", "negative"], with_security_parameters=False,
                                      max_examples=MAX_EXAMPLES)
rules_schema.config.phases.update(phases=["examples", "fuzzing"])
rules_schema = rules_schema.include(path_regex=RULES)
# Operations whose document declares a security scheme (a key is needed): (METHOD, path).
RAW = full_schema.raw_schema
SECURED = {(method.upper(), path) for path, ops in RAW.get("paths", {}).items() for method, op in ops.items()
           if isinstance(op, dict) and (op.get("security") or (RAW.get("security") and op.get("security") != []))}

accepted_ids: set[str] = set()     # event_ids answered 202, across the tests of this module
fuzz_settings = settings(deadline=None, max_examples=MAX_EXAMPLES, derandomize=True,
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_cfg(world):
    """The suite's services with topics of this module's own, so nothing fuzzed reaches another test's
    consumer; the per-key event rate limit raised past what the fuzzer sends."""
    cfg = make_cfg(*PATIENT, f"services.kafka.topics.events=fuzz.events.{TAG}",
                   f"services.kafka.topics.dlq=fuzz.dlq.{TAG}", f"services.kafka.topics.impressions=fuzz.impressions.{TAG}",
                   "++auth.events_per_s_per_key=1000000", "++auth.burst=1000000")
    Kafka(cfg).create_topics()
    return cfg


@pytest.fixture(scope="module")
def app(fuzz_cfg):
    from recsys.serve.recommender import Recommender

    set_recommender(Recommender(fuzz_cfg))
    yield api
    set_recommender(Recommender(make_cfg(*PATIENT)))  # what tests/test_api.py installs
    from recsys.rules import store   # a rule set the fuzzer published must not steer later modules' rails

    with psycopg.connect(Postgres(fuzz_cfg).dsn, autocommit=True) as conn:
        for state in ("live", "shadow"):
            current = store.in_state(conn, state)
            if current is not None:
                store.archive(conn, current.version, "test:fuzz-cleanup")


@pytest.fixture(scope="module")
def keys(fuzz_cfg) -> dict[str, str]:
    """A storefront and an admin key once API keys exist (recsys.auth); none before."""
    try:
        from recsys.auth import create_key
    except ImportError:
        return {}
    with psycopg.connect(Postgres(fuzz_cfg).dsn, autocommit=True) as conn:
        return {role: create_key(conn, role, f"fuzz-{TAG}")[1] for role in ("storefront", "admin")}


@pytest.fixture(scope="module")
def existing_keys(keys, fuzz_cfg) -> set[str]:
    """Ids and prefixes of every key in the store: the fuzzer must not revoke a key a test relies on."""
    if not keys:
        return set()
    with psycopg.connect(Postgres(fuzz_cfg).dsn) as conn:
        return {str(v) for row in conn.execute("SELECT key_id, prefix FROM api_keys") for v in row}


@pytest.fixture(scope="module")
def skus(world) -> list[str]:
    with psycopg.connect(Postgres(world).dsn) as conn:
        return [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku LIMIT 50")]


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _role_for(path: str) -> str:
    return "admin" if path.startswith("/v1/admin") else "storefront"


def _needs_key(case, cfg) -> bool:
    """The document declares a key and the configuration does not make the operation public."""
    if (case.method.upper(), case.path) not in SECURED:
        return False
    public = bool(cfg.get("auth", {}).get("public_recommendations", True))
    return not (case.path.startswith("/v1/recommendations") and public)


def _remember_accepted(response) -> None:
    if response.status_code == 202:
        accepted_ids.update(response.json().get("event_ids") or [])


def _answers_within_its_document(case, keys, existing_keys):
    for name, value in (case.path_parameters or {}).items():
        if case.method.upper() == "DELETE" and str(value) in existing_keys:
            case.path_parameters[name] = f"fuzz-no-such-key-{TAG}"   # never revoke a key a test relies on
    response = case.call_and_validate(headers=_auth(keys.get(_role_for(case.path))), checks=CHECKS)
    _remember_accepted(response)


@schema.parametrize()
@fuzz_settings
def test_every_endpoint_answers_within_its_document(case, app, keys, existing_keys):
    """With the key its role needs (admin for /v1/admin, storefront elsewhere): no 5xx, and every
    answer is one the OpenAPI document declares, in the declared shape."""
    _answers_within_its_document(case, keys, existing_keys)


@rules_schema.parametrize()
@fuzz_settings
def test_every_rules_endpoint_answers_within_its_document(case, app, keys, existing_keys):
    """The same for /v1/admin/rules (an admin key may do what a merchandiser may)."""
    _answers_within_its_document(case, keys, existing_keys)


def _refused_without_a_key(case, fuzz_cfg):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
    if _needs_key(case, fuzz_cfg):
        assert response.status_code in (400, 401, 413, 422), \
            f"{case.method} {case.path} without a key: {response.status_code} {response.text[:300]}"
    else:
        _remember_accepted(response)


@schema.parametrize()
@fuzz_settings
def test_without_a_key_nothing_is_accepted(case, app, fuzz_cfg):
    """An operation that needs a key, called without one: 401 (or 400/413/422 for a request refused
    before the key is read), never 2xx, never 5xx. Public ones (and all before keys exist): never 5xx."""
    _refused_without_a_key(case, fuzz_cfg)


@rules_schema.parametrize()
@fuzz_settings
def test_without_a_key_no_rules_endpoint_accepts_anything(case, app, fuzz_cfg):
    _refused_without_a_key(case, fuzz_cfg)


# Hostile field values: what a client can put into JSON that some store (Postgres text and numeric
# columns, Redis keys, the broker) might not hold.
NASTY_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Co", "So"]), min_size=1, max_size=8),
    st.sampled_from(["\x00", "u\x00", "a\tb", "\x1b[31m", "\u2028", "\ud800", "x" * 129, "x" * 65, "😀" * 40,
                     "u1:views", "{u1}", "u1}:cart", "*", "' OR 1=1 --", "../../etc", " ", ""]),
)
NASTY_NUMBER = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                         st.sampled_from([0, -0.01, 9_999_999_999.99, 1e10, 1e12, 1e308, 2**63, -2**63]))
NASTY_TS = st.one_of(st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z",
                                      "2026-11-27T10:00:00", "not a date", "2026-02-30T00:00:00Z", ""]),
                     st.datetimes().map(lambda d: d.isoformat() + "+00:00"), st.integers(-2**40, 2**40))


@st.composite
def event_bodies(draw, skus: list[str]):
    """One event-shaped object, each field either plausible or hostile."""
    def pick(good, bad):
        return draw(st.one_of(good, bad)) if draw(st.booleans()) else draw(good)

    body = {
        "event_id": pick(st.just(f"fz-{TAG}-{uuid.uuid4().hex}"), NASTY_TEXT),
        "type": pick(st.sampled_from(["product_viewed", "add_to_cart", "purchase_completed"]), NASTY_TEXT),
        "user_id": pick(st.just(f"fuzz-{TAG}"), NASTY_TEXT),
        "sku": pick(st.sampled_from(skus), NASTY_TEXT),
        "session_id": pick(st.just("s1"), NASTY_TEXT),
        "device": pick(st.sampled_from(["mobile", "desktop"]), NASTY_TEXT),
        "geo": pick(st.just("US-CA"), NASTY_TEXT),
        "price": pick(st.floats(0, 5000, allow_nan=False), NASTY_NUMBER),
        "quantity": pick(st.integers(1, 5), NASTY_NUMBER),
        "order_id": pick(st.just("o-1"), NASTY_TEXT),
        "ts": pick(st.just(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())), NASTY_TS),
        "context": pick(st.fixed_dictionaries({"surface": st.just("pdp_fbt"), "request_id": st.just("r1"),
                                               "slot": st.integers(0, 11)}),
                        st.fixed_dictionaries({"surface": NASTY_TEXT, "request_id": NASTY_TEXT, "slot": NASTY_NUMBER})),
    }
    keep = draw(st.sets(st.sampled_from(sorted(body)), min_size=0, max_size=len(body)))
    return {k: v for k, v in body.items() if k in keep or k in ("type", "user_id", "sku") and draw(st.booleans())}


def _json(value) -> bytes:
    """JSON as a hostile client writes it: lone surrogates escaped, NaN/Infinity tokens left in."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


def test_hostile_events_are_refused_or_stored_never_a_server_error(app, keys, skus):
    with TestClient(app) as client:

        @given(st.one_of(event_bodies(skus), st.lists(event_bodies(skus), min_size=1, max_size=4)))
        @settings(deadline=None, max_examples=EVENT_EXAMPLES, derandomize=True, suppress_health_check=list(HealthCheck))
        def post(body):
            r = client.post("/v1/events", content=_json(body),
                            headers={"Content-Type": "application/json", **_auth(keys.get("storefront"))})
            assert r.status_code in (202, 413, 422), f"{r.status_code} for {_json(body)[:400]!r}: {r.text[:400]}"
            _remember_accepted(r)

        post()
    assert accepted_ids, "no event was accepted: the fuzzer never reached the broker"


def _dead_lettered_ids(cfg, timeout_s: float = 5.0) -> set[str]:
    c = Consumer({"bootstrap.servers": Kafka(cfg).bootstrap, "group.id": f"fuzz-dlq-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "session.timeout.ms": 2000, "heartbeat.interval.ms": 500})
    c.subscribe([cfg.services.kafka.topics.dlq])
    ids, idle_until = set(), time.monotonic() + timeout_s
    while time.monotonic() < idle_until:
        m = c.poll(0.5)
        if m is None or m.error() is not None:
            continue
        idle_until = time.monotonic() + 2.0
        try:
            payload = json.loads(json.loads(m.value())["payload"])
            ids.add(payload.get("event_id"))
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
    c.close()
    return ids


def test_everything_accepted_is_stored_or_dead_lettered(fuzz_cfg, app):
    """The fuzzed intake through the real consumer: no message stops it, and every accepted event
    reaches the Postgres log or the dead-letter topic."""
    from recsys.features.consumer import FeatureConsumer

    assert accepted_ids, "run with the fuzz tests above"
    consumer = FeatureConsumer(fuzz_cfg, group_id=f"fuzz-{TAG}")
    try:
        idle_until, deadline = time.monotonic() + 8.0, time.monotonic() + 60.0
        while time.monotonic() < idle_until and time.monotonic() < deadline:
            try:
                stats = consumer.poll_once(0.5)
            except Exception as exc:  # a poison message: the real consumer would retry this batch for ever
                pytest.fail(f"the consumer failed on fuzzed input (ingestion would stop): {exc!r}")
            if stats.messages:
                idle_until = time.monotonic() + 3.0
    finally:
        consumer.close()
    with psycopg.connect(Postgres(fuzz_cfg).dsn) as conn:
        logged = {r[0] for r in conn.execute("SELECT event_id FROM events WHERE event_id = ANY(%s)",
                                             (sorted(accepted_ids),))}
    missing = accepted_ids - logged - _dead_lettered_ids(fuzz_cfg)
    assert not missing, f"{len(missing)} of {len(accepted_ids)} accepted events neither logged nor dead-lettered"

