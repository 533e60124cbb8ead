"""The ingress's autoscaling signal (recsys/serve/autoscaling.py): requests inside the app averaged over
time and the process's CPU share, whenever they are read, and the policy that turns them into replicas."""

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from recsys.serve.autoscaling import (BLIND_DECISIONS, BUSY, CPU, IN_APP, BusyPolicy, LoadMeter, MeteredApp, add_meter,
                                      metered)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_the_meter_is_the_time_average_of_requests_in_flight_or_the_cpu_share():
    clock, cpu = Clock(), Clock()
    meter = LoadMeter(clock, cpu)
    meter.enter()                       # one request for 0.3 s of a 1 s report
    clock.t = 0.3
    meter.leave()
    clock.t = cpu.t = 1.0               # ... while the process used a whole core
    assert meter.read() == pytest.approx({IN_APP: 0.3, CPU: 1.0, BUSY: 1.0})
    meter.enter()
    meter.enter()                       # two at once for the whole next second, still in flight
    clock.t = 2.0
    cpu.t = 1.5
    assert meter.read() == pytest.approx({IN_APP: 2.0, CPU: 0.5, BUSY: 2.0})
    clock.t = 2.5
    meter.leave()
    meter.leave()
    clock.t = 3.0
    assert meter.read()[IN_APP] == pytest.approx(1.0)   # 2 x 0.5 s over 1 s
    clock.t = 4.0
    assert meter.read() == {IN_APP: 0.0, CPU: 0.0, BUSY: 0.0}
    cpu.t = 9.0                          # start-up work...
    clock.t = 10.0
    meter.reset()                        # ...is not in the next report
    clock.t = 11.0
    assert meter.read()[CPU] == 0.0


def test_the_middleware_counts_every_http_request():
    import recsys.serve.autoscaling as autoscaling

    app = FastAPI()

    @app.get("/x")
    def x():
        return {"in_flight": autoscaling.METER.in_flight}

    assert add_meter(app) and add_meter(app)                      # added once
    assert sum(m.cls is MeteredApp for m in app.user_middleware) == 1
    with TestClient(app) as client:
        assert client.get("/x").json() == {"in_flight": 1}
    assert autoscaling.METER.in_flight == 0
    assert autoscaling.report()[BUSY] >= 0


def test_the_policy_asks_for_the_busy_total_over_the_target():
    policy = BusyPolicy(target=0.5)

    def ctx(busy):
        return SimpleNamespace(aggregated_metrics={BUSY: busy} if busy is not None else {}, target_num_replicas=3)

    assert policy(ctx({"a": 0.9, "b": 0.6}))[0] == pytest.approx(3.0)
    assert policy(ctx({"a": 0.1}))[0] == pytest.approx(0.2)      # Serve keeps min_replicas
    assert policy(ctx(None))[0] == 3                              # nothing reported yet: no change
    with pytest.raises(ValueError):
        BusyPolicy(target=0)


def test_the_served_api_carries_the_meter_whoever_started_it_first():
    """The meter is on recsys.serve.api's `api` from its creation: in a whole test run `api` has served
    (TestClient, schemathesis' from_asgi at import) long before anything imports recsys.serve.app, and a
    meter added only then was refused (Starlette), so replicas reported no busy and never scaled out."""
    from recsys.serve.api import api

    assert metered(api)
    assert next(m.cls for m in api.user_middleware) is MeteredApp     # the outermost
    started = FastAPI()
    with TestClient(started) as client:
        client.get("/")
    with pytest.raises(RuntimeError, match="already serves"):        # loudly, never a silent no-meter
        add_meter(started)


def test_the_policy_says_so_when_replicas_never_report_busy(caplog):
    policy = BusyPolicy(target=0.5)
    blind = SimpleNamespace(aggregated_metrics={"running_requests": {"a": 0.0}}, target_num_replicas=1,
                            deployment_name="recsys_api")
    with caplog.at_level("WARNING", logger="ray.serve"):
        for _ in range(BLIND_DECISIONS - 1):
            assert policy(blind)[0] == 1
        assert not caplog.records
        for _ in range(3):
            assert policy(blind)[0] == 1
    assert len(caplog.records) == 1 and "no 'busy'" in caplog.records[0].getMessage()
