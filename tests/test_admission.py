"""Admission by event-loop lag: a replica whose loop runs late refuses new recommendation requests at
once with 503 and Retry-After, and admits them again when the lag is gone; other paths are never shed."""

import asyncio
import time

from recsys.serve.admission import PROBE_S, LoopLagAdmission


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _ask(app, path: str) -> tuple[int, dict]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    await app({"type": "http", "path": path, "headers": []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


def test_a_late_loop_sheds_recommendations_and_recovers():
    async def scenario():
        app = LoopLagAdmission(_ok, lambda: (0.05, 2))
        assert (await _ask(app, "/v1/recommendations/homepage_hero"))[0] == 200   # starts the probe
        await asyncio.sleep(3 * PROBE_S)
        time.sleep(0.2)                        # a request that blocks the loop for 200 ms
        await asyncio.sleep(PROBE_S / 2)       # the overdue probe wakes first and records the lag
        status, headers = await _ask(app, "/v1/recommendations/pdp_fbt")
        assert status == 503 and headers[b"retry-after"] == b"2" and app.shed == 1
        assert (await _ask(app, "/v1/events"))[0] == 200                        # intake is never shed
        await asyncio.sleep(5 * PROBE_S)       # the loop is on time again
        assert (await _ask(app, "/v1/recommendations/pdp_fbt"))[0] == 200

    asyncio.run(scenario())


def test_without_limits_everything_is_admitted():
    async def scenario():
        app = LoopLagAdmission(_ok, lambda: None)
        time.sleep(0.05)
        return await _ask(app, "/v1/recommendations/homepage_hero")

    assert asyncio.run(scenario())[0] == 200
