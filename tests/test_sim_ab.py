"""The simulated A/B test (recsys/sim/ab.py) on the small world: arms by a stable salted hash, the
shoppers' response blind to the arm, the real Recommender serving the personalised arms, and the same
outcomes from the same seed."""

from __future__ import annotations

import inspect
from collections import Counter
from datetime import datetime, timezone

import pytest

from recsys.sim.ab import assign, lifts, run_ab
from tests.conftest import PATIENT, make_cfg

ARMS = ["bestsellers", "personalized", "personalized+rules"]


def test_assignment_is_stable_balanced_and_salted():
    users = [f"u{i:06d}" for i in range(6000)]
    first = [assign("sim-ab", u, ARMS) for u in users]
    assert first == [assign("sim-ab", u, ARMS) for u in users]          # the same arm on every call
    counts = Counter(first)
    assert all(abs(counts[a] - 2000) < 200 for a in ARMS), counts        # equal thirds, within sampling
    other = [assign("another-salt", u, ARMS) for u in users]
    assert 0.25 < sum(a != b for a, b in zip(first, other)) / len(users) < 0.85   # a new salt reshuffles


def test_the_shoppers_response_cannot_see_the_arm(world):
    from recsys.sim.ab import _world

    params = inspect.signature(_world(world)[1].respond).parameters
    assert not {"arm", "policy", "variant"} & set(params)   # what it is given: user, slate, time, seed, context
    _, a = _world(world)
    _, b = _world(world)
    slate = list(a._sku[:12])
    at = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    one = a.respond("u000001", slate, at, rng_seed=7, surface="homepage_hero", request_id="r1")
    two = b.respond("u000001", slate, at, rng_seed=7, surface="homepage_hero", request_id="r2")
    strip = lambda events: [{k: v for k, v in e.items() if k not in ("context",)} for e in events]
    assert strip(one) == strip(two)   # the same slate, the same answer, whoever served it


def test_lifts_have_intervals_over_seeds():
    seeds = [{"bestsellers": {"conversion": 0.10}, "personalized": {"conversion": c}} for c in (0.11, 0.12, 0.13)]
    out = lifts(seeds, "bestsellers", "conversion")["personalized"]
    assert out["mean"] == pytest.approx(0.2) and out["low"] < 0.2 < out["high"] and out["seeds"] == 3


@pytest.fixture(scope="module")
def ab_cfg(world):
    import ray

    from recsys.raycluster import ensure_ray

    if not ray.is_initialized():
        ensure_ray(world)
    return make_cfg(*PATIENT, "sim.days=7", "sim.seeds=2", "sim.zero_impression_after_h=24")


def test_a_run_serves_every_arm_and_repeats_by_seed(ab_cfg):
    first = run_ab(ab_cfg, seeds=1)
    again = run_ab(ab_cfg, seeds=1)
    one = first["seeds"][0]
    print(f"\n  {first['seconds']:.0f} s: " + "; ".join(f"{a}: {s}" for a, s in one.items()))
    assert set(one) == set(ARMS)
    for arm, s in one.items():
        assert s["sessions"] > 40 and 0 < s["ctr"] < 1 and 0 < s["coverage"] <= 1, (arm, s)
        assert 0 <= s["attach_rate"] <= 1 and s["devices_bought"] >= 0, (arm, s)
    # the bestseller arm shows one static list: little coverage; the served arms personalise
    assert one["bestsellers"]["coverage"] < one["personalized"]["coverage"]
    assert again["seeds"][0]["bestsellers"] == one["bestsellers"]   # same seed, same outcomes
    for arm in ARMS:
        assert again["seeds"][0][arm]["sessions"] == one[arm]["sessions"]


def test_attach_rate_counts_a_device_whose_buyer_bought_what_fits_it_within_the_window():
    from datetime import timedelta

    import pandas as pd

    from recsys.sim.ab import ArmTally

    t0 = pd.Timestamp("2026-12-01", tz="UTC")
    tally = ArmTally(device_buys=[("a", "PHONE", t0), ("b", "PHONE", t0), ("c", "TV", t0), ("d", "PHONE", t0)],
                     accessory_buys={"a": [("CASE", t0 + timedelta(days=2))],     # fits, in time: attached
                                     "b": [("CASE", t0 + timedelta(days=9))],     # fits, too late
                                     "c": [("CASE", t0 + timedelta(hours=1))],    # does not fit a TV
                                     "d": [("CASE", t0 - timedelta(hours=1))]})   # bought before the phone
    assert tally.attach_rate({"PHONE": {"CASE"}, "TV": {"REMOTE"}}, timedelta(days=7)) == 0.25
    assert ArmTally().attach_rate({}, timedelta(days=7)) == 0.0
