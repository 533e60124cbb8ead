"""`recsys nightly` on the small world: the pipeline and the ranker train as candidates, then one release
puts all three versions through their gates and into one canary against the live versions, with one
progress line per step."""

from __future__ import annotations

import uuid

import psycopg

from recsys import registry
from recsys.release import canary as canaries
from tests.conftest import live_restored, make_cfg
from tests.test_pipeline import TINY
from tests.test_rank_ltr import OVERRIDES as RANKER


def test_nightly_trains_everything_then_releases_it_as_one_canary(world, capsys):
    from recsys.release.promote import make_live
    from recsys.services import Postgres
    from recsys.train.nightly import run

    cfg = make_cfg(*TINY, *RANKER, "ranker.mlp.epochs=2", "release.canary.enabled=true")
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as restored, live_restored(restored, "ranker"):
        _nightly(cfg, capsys, make_live, run)


def _nightly(cfg, capsys, make_live, run):
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        assert canaries.running(pg) is None
        # something live to compare with (a canary, not "live"), and a bar the nightly ranker clears
        version = f"ranker-nightly-baseline-{uuid.uuid4().hex[:6]}"
        registry.register(pg, version, "ranker", "/nonexistent", {"type": "popularity"},
                          {"lightgbm_ndcg@12": 0.02, "retrieval_order_ndcg@12": 0.01})
        make_live(pg, version)   # test setup: its low metrics are the point (the gates would refuse it)
    result = run(cfg)
    out = capsys.readouterr().out
    try:
        assert [line.split("] ")[1][:3] for line in out.splitlines() if line.startswith("[nightly")] == \
            ["1/3", "2/3", "3/3", "don"]
        assert "7/8 item vectors into pgvector" in out               # the pipeline's own progress lines
        # each step's time, as the bench reports it: the three make up the run (after Ray's start-up)
        assert list(result["steps"]) == ["pipeline", "ranker", "release"]
        assert all(s > 0 for s in result["steps"].values())
        assert 0.5 * result["seconds"] < sum(result["steps"].values()) <= result["seconds"]
        assert result["release"] == "canary", out[-3000:]
        with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
            c = canaries.get(pg, result["canary_id"])
            assert c.candidate == result["versions"] and set(c.candidate) == {"two_tower", "als", "ranker"}
            for version in c.candidate.values():
                record = registry.get(pg, version)
                assert record.stage == "canary" and record.gates["passed"]
    finally:
        with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
            if result.get("canary_id") and canaries.get(pg, result["canary_id"]).state == "running":
                canaries.abort(pg, result["canary_id"], "test", "test over")


def test_a_version_that_fails_its_gates_does_not_hold_back_the_others(pg):
    """Each version stands on its own gates: the ones that pass go on, the failing one is rejected."""
    from recsys.release.promote import release

    cfg = make_cfg()
    good, bad = (f"ranker-gates-{n}-{uuid.uuid4().hex[:6]}" for n in ("good", "bad"))
    registry.register(pg, good, "ranker", "/nonexistent", {"type": "popularity"},
                      {"lightgbm_ndcg@12": 0.9, "retrieval_order_ndcg@12": 0.01})
    registry.register(pg, bad, "content", "/nonexistent", {}, {"content.self_recall@120": 0.0})
    with live_restored(pg, "ranker"):
        outcome = release(pg, cfg, {"ranker": good, "content": bad}, "test")
        assert outcome.action == "live" and outcome.versions == {"ranker": good} and outcome.rejected == {"content": bad}
        assert "rejected by the gates: content.self_recall@120 = 0.0000 < floor 0.2000" in outcome.line()
        assert registry.get(pg, bad).stage == "rejected" and registry.live(pg, "ranker").version == good
