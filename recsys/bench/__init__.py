"""`make bench`: ingestion throughput and freshness; the serving pipeline in-process (the floor); the
ANN query alone; HTTP serving for each topology (the saturation curve with wrk, latency per surface at a
fixed rate, cache hits, CPU per request by process); a soak and chaos faults under a mixed load
(docs/reliability.md). Written to docs/benchmarks.*

`recsys bench --only floor,ann` runs some of them: models, ingest, floor, ann, http, soak, chaos, rules
(the merchandising rules' cost on the slots stage, in process: needs no services), canary (a worse
ranker's canary against simulated shoppers until the controller rolls it back; docs/release.md), nightly
(`recsys nightly` on the running stack's world, timed), autoscale (Serve's autoscaling on a load ramp, on
two Ray nodes of its own: recsys/bench/autoscale.py), dashboard (the dashboard's queries on 1M
impressions in a scratch database: recsys/bench/dashboard.py), rails (would a merchandiser sign off the
rails: what fits a device's page, no variant of a device in its cart: recsys/bench/rails.py), served (the
home rail through retrieval, the live ranker and the slot stage on the last days of the log, offline:
recsys/rank/served.py).
"""

from __future__ import annotations

from pathlib import Path

from recsys.bench.report import DOCS, record

COMMAND = "make bench"
PARTS = ("models", "ingest", "floor", "ann", "http", "soak", "chaos", "rules", "canary", "nightly",
         "autoscale", "dashboard", "rails", "served")


def run_bench(cfg, only: str | None = None, docs: Path = DOCS, overrides: list[str] | None = None) -> int:
    from recsys.bench import http
    from recsys.bench.ann import bench_ann
    from recsys.bench.floor import bench_floor
    from recsys.bench.ingestion import bench_ingestion
    from recsys.demo import bring_up

    wanted = set((only or ",".join(PARTS)).split(","))
    if wanted - set(PARTS):
        raise SystemExit(f"unknown benchmark(s) {sorted(wanted - set(PARTS))}; known: {', '.join(PARTS)}")
    b = cfg.bench
    if "http" in wanted:   # before minutes of bring-up
        from recsys.bench.wrk import require_wrk

        require_wrk()
    # chaos brings up a stack of its own; rules runs in process on an in-memory catalog; dashboard needs
    # only Postgres (a scratch database of its own)
    url = bring_up(cfg, overrides) if wanted - {"chaos", "rules", "dashboard"} else None
    if "models" in wanted:  # the live models' offline metrics, as their training jobs measured them
        from recsys.bench.models import record_models

        record_models(cfg, docs)
    if "served" in wanted:  # the live models and ranker, offline on the last days of the log
        from recsys.rank.served import evaluate, figures

        print("\n== served: the home rail through retrieval, the live ranker and the slot stage, offline")
        result = evaluate(cfg)
        for name, value in result.items():
            print(f"  {name:<36} {value:.4f}" if isinstance(value, float) else f"  {name:<36} {value}")
        record(figures(result), f"python -m recsys.rank.served (ranker {result['ranker_version']})", docs)
    if "ingest" in wanted:
        figures = bench_ingestion(cfg, int(b.ingest_events), int(b.freshness_samples))
        for name, (value, unit) in figures.items():
            print(f"  {name:<34} {value:10.1f} {unit}")
        record(figures, COMMAND, docs)
    if "floor" in wanted:
        record(bench_floor(cfg, http.sample(cfg, int(b.floor_requests)), int(b.floor_requests)), COMMAND, docs)
    if "ann" in wanted:
        record(bench_ann(cfg, int(b.ann_queries), int(b.ann_k)), COMMAND, docs)
    if "http" in wanted:  # replaces every serve.<topology>.* figure: names a change of the bench retired go
        record(http.bench_http(cfg, live_url=url), COMMAND, docs, drop_prefixes=http.owned_prefixes(cfg))
    if "soak" in wanted:  # the running stack, at a share of the saturation rate the HTTP part measured
        from recsys.bench.soak import bench_soak

        print("\n== soak: the mixed load on the running stack")
        record(bench_soak(cfg, url, docs), COMMAND, docs)
    if "chaos" in wanted:  # a stack of its own: its services are the ones killed
        from recsys.bench.chaos import bench_chaos

        print("\n== chaos: faults one after another under the mixed load")
        record(bench_chaos(cfg, overrides), COMMAND, docs)
    if "rules" in wanted:  # in process, no services: 50 rules on 120 candidates (recsys/bench/rules.py)
        from recsys.bench.rules import bench_rules

        print("\n== rules: the slots stage with and without a 50-rule set")
        sizes = {k: int(b[f"rules_{k}"]) for k in ("calls", "warmup", "runs", "n_items") if f"rules_{k}" in b}
        record(bench_rules(cfg, **sizes), COMMAND, docs)   # sizes: +bench.rules_calls=50 for a quick look
    if "canary" in wanted:  # the running stack's live models against a worse ranker (recsys/bench/canary.py)
        from recsys.bench.canary import COMMAND as CANARY, bench_canary

        print("\n== canary: a worse ranker against simulated shoppers, until the controller decides")
        record(bench_canary(cfg), CANARY, docs)
    if "autoscale" in wanted:  # two Ray nodes of its own; the stack's services, data and models
        from recsys.bench.autoscale import COMMAND as AUTOSCALE, bench_autoscale

        print("\n== autoscale: a load ramp on the application autoscaled over two Ray nodes")
        record(bench_autoscale(cfg, overrides, docs), AUTOSCALE, docs, drop_prefixes=["serve.autoscale."])
    if "dashboard" in wanted:  # a scratch database of 1M impressions (recsys/bench/dashboard.py)
        from recsys.bench.dashboard import COMMAND as DASHBOARD, bench_dashboard

        print("\n== dashboard: the dashboard's queries on 1M impressions")
        record(bench_dashboard(cfg), DASHBOARD, docs)
    if "rails" in wanted:  # the live rails on device pages and carts, in process (recsys/bench/rails.py)
        from recsys.bench.rails import COMMAND as RAILS, bench_rails

        print("\n== rails: device pages and one-device carts through the live models")
        record(bench_rails(cfg), RAILS, docs)
    if "nightly" in wanted:  # last: it trains for minutes (recsys/bench/nightly.py)
        from recsys.bench.nightly import bench_nightly, command

        print("\n== nightly: recsys nightly on this world, timed")
        record(bench_nightly(cfg), command(overrides), docs)
    print(f"written: {docs / 'benchmarks.md'}, {docs / 'benchmarks.json'}")
    return 0
