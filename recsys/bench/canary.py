"""`recsys bench --only canary`: how many impressions the canary needs to roll back a worse ranker on the
demo world, at the production canary settings (10% first stage, mSPRT at alpha 0.05).

The control is the live ranker; the candidate ranks the least-viewed candidates first and is registered
with the live ranker's offline numbers, so its gates pass and only the canary can catch it. The real
`Recommender` serves simulated shoppers in process (recsys/release/simulate.py), the controller ticks
every 100 impressions. Three runs (seeds); the median is published.
"""

from __future__ import annotations

import statistics
import time
import uuid

import psycopg
from omegaconf import OmegaConf

COMMAND = "recsys bench --only canary"


def bench_canary(cfg, runs: int = 3, max_impressions: int = 30_000) -> dict[str, tuple[float, str]]:
    from recsys import registry
    from recsys.data import history_end
    from recsys.release import canary as canaries
    from recsys.release.promote import release
    from recsys.release.simulate import forget, run_canary
    from recsys.serve.recommender import Recommender
    from recsys.services import Postgres
    from recsys.sim.catalog import generate_catalog
    from recsys.sim.shoppers import ShopperWorld

    cfg = cfg.copy()
    OmegaConf.update(cfg, "release.canary.enabled", True)
    OmegaConf.update(cfg, "serve.ranker", "ltr")
    d = cfg.data
    print(f"  the shoppers of the {d.n_skus}-SKU world: their history replayed", flush=True)
    shoppers = ShopperWorld(generate_catalog(n_skus=int(d.n_skus), seed=int(cfg.seed)), n_users=int(d.n_users),
                            seed=int(cfg.seed))
    shoppers.history(days=int(d.days), end=history_end(d.end))
    recommender = Recommender(cfg)
    decided, seconds, ctrs = [], [], []
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        live = registry.live(conn, "ranker")
        if live is None:
            raise SystemExit("no live ranker: run `make demo` (or python -m recsys.rank.train) first")
        if canaries.running(conn) is not None:
            raise SystemExit("a canary is running: `recsys canary status`; abort it or let it finish first")
        for seed in range(runs):
            version = f"ranker-long-tail-bench-{uuid.uuid4().hex[:6]}"
            registry.register(conn, version, "ranker", live.artifact_uri, {"type": "popularity", "least_first": True},
                              live.metrics)
            outcome = release(conn, cfg, {"ranker": version}, "bench")
            if outcome.action != "canary":
                raise SystemExit(f"the bench's candidate did not enter a canary: {outcome.line()}")
            recommender.res.poll_release()
            started = time.monotonic()
            result = run_canary(conn, recommender, shoppers, outcome.canary_id, max_impressions,
                                seconds_per_impression=0.05, seed=seed)
            seconds.append(time.monotonic() - started)
            if result.outcome == "running":
                canaries.abort(conn, outcome.canary_id, "bench", "the bench ran out of impressions")
            since = result.final.get("since_start", {})
            print(f"  run {seed + 1}: {result.outcome} after {result.impressions} impressions "
                  f"({seconds[-1]:.0f} s); CTR control {since.get('control', {}).get('ctr', 0):.4f}, "
                  f"canary {since.get('canary', {}).get('ctr', 0):.4f}", flush=True)
            forget(conn, outcome.canary_id)   # the simulated shoppers' events leave the demo's log
            decided.append(result.impressions if result.outcome == "rolled_back" else float("nan"))
            ctrs.append((since.get("control", {}).get("ctr", 0.0), since.get("canary", {}).get("ctr", 0.0)))
            recommender.res.poll_release()
    return {
        "canary.rollback.impressions_to_decision": (statistics.median(decided), "impressions (both arms, median of 3)"),
        "canary.rollback.rolled_back_runs": (sum(x == x for x in decided), f"of {runs} runs"),
        "canary.rollback.ctr_control": (statistics.median(c for c, _ in ctrs), "fraction of impressions"),
        "canary.rollback.ctr_canary": (statistics.median(c for _, c in ctrs), "fraction of impressions"),
        "canary.rollback.seconds": (statistics.median(seconds), "s per run, in process"),
    }
