"""The rules bench at a tiny size: it runs without services, and `recsys bench --only rules` writes its
figures (with command, machine and date) into benchmarks.json and a `rules` section of benchmarks.md."""

from __future__ import annotations

import json

from recsys.bench import run_bench
from recsys.bench.rules import bench_rules, build_ruleset, setup
from recsys.rules.schema import KINDS, validate
from tests.conftest import make_cfg

TIMINGS = ("rules.apply.p95_ms", "rules.arrange.p95_ms", "rules.arrange.p50_ms", "rules.arrange_no_rules.p95_ms",
           "rules.arrange_no_rules.p50_ms")


def test_the_generated_rule_set_is_valid_and_mixes_every_kind():
    body = build_ruleset([f"B{i:06d}" for i in range(1, 501)])
    ruleset, errors = validate(body, ["homepage_hero", "pdp_fbt", "cart_upsell"])
    assert errors == [] and len(ruleset.rules) == 50
    assert {r.kind for r in ruleset.rules} == set(KINDS)
    floors = [r for r in ruleset.rules if r.kind == "margin_floor"]
    assert any(r.average for r in floors) and any(r.at_least for r in floors)
    assert body == build_ruleset([f"B{i:06d}" for i in range(1, 501)])   # deterministic


def test_the_requests_have_120_candidates_and_the_rules_change_the_rails():
    slots, compiled, requests = setup(make_cfg(), n_items=3000, n_requests=6)
    assert all(len(ranked) == 120 for _, _, ranked in requests)
    assert {req.surface for req, _, _ in requests} == {"homepage_hero", "pdp_fbt", "cart_upsell"}
    differ = 0
    for req, user, ranked in requests:
        with_rules = [i["sku"] for i in slots.arrange(req, user, ranked, compiled).items]
        without = [i["sku"] for i in slots.arrange(req, user, ranked, None).items]
        assert len(with_rules) == len(without) == 12
        differ += with_rules != without
    assert differ


def test_bench_rules_figures_at_a_tiny_size():
    figures = bench_rules(make_cfg(), calls=50, warmup=5, runs=1, n_items=3000)
    for name in TIMINGS:
        value, unit = figures[name]
        assert unit == "ms" and isinstance(value, float) and value > 0, (name, value)
    assert figures["rules.load_avg_1m_before"][0] >= 0


def test_recsys_bench_only_rules_writes_the_docs(tmp_path):
    cfg = make_cfg("+bench.rules_calls=30", "+bench.rules_warmup=5", "+bench.rules_runs=1", "+bench.rules_n_items=3000")
    assert run_bench(cfg, only="rules", docs=tmp_path) == 0
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    for name in TIMINGS + ("rules.load_avg_1m_before",):
        assert set(data[name]) == {"value", "unit", "command", "date", "machine"}
    assert data["rules.apply.p95_ms"]["value"] > 0
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "## rules" in markdown and "`rules.apply.p95_ms`" in markdown
