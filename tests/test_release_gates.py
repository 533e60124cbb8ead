"""Release gates: each check says why it failed; a failing version is rejected and never goes live; a
passing one goes live (no live version yet) or enters a canary; no code but the release makes a
model live."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from recsys import registry
from recsys.release import canary as canaries
from recsys.release.gates import metric_checks
from recsys.release.promote import release
from tests.conftest import make_cfg


def test_each_check_kind_passes_and_fails_with_a_reason():
    spec = [{"metric": "m.ndcg@12", "floor": 0.01, "live_tolerance": 0.002, "above_metric": "base@12"},
            {"metric": "m.coverage@12", "floor": 0.3}]
    good = metric_checks(spec, {"m.ndcg@12": 0.05, "base@12": 0.04, "m.coverage@12": 0.4}, {"m.ndcg@12": 0.051})
    assert all(c.passed for c in good) and len(good) == 4
    bad = metric_checks(spec, {"m.ndcg@12": 0.045, "base@12": 0.05, "m.coverage@12": float("nan")},
                        {"m.ndcg@12": 0.06})
    reasons = [c.reason for c in bad if not c.passed]
    assert reasons == ["m.ndcg@12 = 0.0450 < live 0.0600 - 0.0020", "m.ndcg@12 = 0.0450 <= base@12 = 0.0500",
                       "m.coverage@12: missing from the version's metrics"]
    # the live version scored on the candidate's own data beats the number it was registered with
    same_data = [{**spec[0], "live_metric": "live_m@12"}]
    checks = metric_checks(same_data, {"m.ndcg@12": 0.05, "base@12": 0.04, "live_m@12": 0.049}, {"m.ndcg@12": 0.09})
    assert all(c.passed for c in checks) and "live 0.0490" in checks[1].reason


def _popularity_ranker(pg, ndcg: float, base: float = 0.05) -> str:
    version = f"ranker-test-{uuid.uuid4().hex[:8]}"
    registry.register(pg, version, "ranker", "/nonexistent", {"type": "popularity"},
                      {"lightgbm_ndcg@12": ndcg, "retrieval_order_ndcg@12": base})
    return version


def test_a_failing_version_is_rejected_with_its_reasons_and_never_goes_live(pg):
    cfg = make_cfg("release.canary.enabled=true")
    live_before = registry.live(pg, "ranker")
    version = _popularity_ranker(pg, ndcg=0.04)          # below the retrieval order it re-ranks
    outcome = release(pg, cfg, {"ranker": version}, "test")
    assert outcome.action == "rejected" and "lightgbm_ndcg@12 = 0.0400 <= retrieval_order_ndcg@12" in outcome.line()
    record = registry.get(pg, version)
    assert record.stage == "rejected" and record.gates["passed"] is False
    assert any("latency" in c["reason"] and c["passed"] for c in record.gates["checks"])   # it was timed
    assert registry.live(pg, "ranker") == live_before
    with pytest.raises(canaries.CanaryError, match="has not passed its gates"):
        canaries.start(pg, cfg, {"ranker": version}, "test", "forced")


def test_the_first_version_goes_live_then_the_next_enters_a_canary(pg):
    from recsys.release.promote import make_live

    cfg = make_cfg("release.canary.enabled=true")
    assert canaries.running(pg) is None
    earlier = registry.live(pg, "ranker")   # another test's: out of the way, restored at the end
    if earlier is not None:
        pg.execute("UPDATE models SET stage = 'retired' WHERE version = %s", (earlier.version,))
    first = _popularity_ranker(pg, ndcg=0.2)
    assert release(pg, cfg, {"ranker": first}, "test").action == "live"   # nothing to compare with
    assert registry.live(pg, "ranker").version == first
    second = _popularity_ranker(pg, ndcg=0.199)           # within the live version's tolerance
    outcome = release(pg, cfg, {"ranker": second}, "test")
    try:
        assert outcome.action == "canary" and registry.get(pg, second).stage == "canary"
        third = _popularity_ranker(pg, ndcg=0.3)
        assert release(pg, cfg, {"ranker": third}, "test").action == "held"   # one canary at a time
        assert registry.get(pg, third).stage == "candidate"
    finally:
        canaries.abort(pg, outcome.canary_id, "test", "test over")
        if earlier is not None:
            make_live(pg, earlier.version)
    assert registry.get(pg, second).stage == "candidate"


def test_only_the_release_makes_a_model_live():
    """Every promotion path goes through recsys/release/promote.py (and the canary's promote step)."""
    root = Path(__file__).resolve().parents[1] / "recsys"
    # embed.py switches the MiniLM content vectors: a packaged, pretrained encoder, not a trained model
    allowed = {root / "release" / "promote.py", root / "catalog" / "embed.py"}
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        if path not in allowed and (re.search(r"set_stage\([^)]*['\"]live['\"]", text) or "vectors.make_live(" in text):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
