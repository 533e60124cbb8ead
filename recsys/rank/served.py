"""The served home rail measured offline: `python -m recsys.rank.served` (`recsys bench --only served`).

Each shopper's first visit in the last `ranker.out_of_time.valid_days` of the log (which neither the
live two-tower and ALS nor the live ranker trained on: recsys/rank/out_of_time.py) is a homepage_hero
request at that moment. Retrieval runs as the ranker's lists build it (every source, the models' scores
out of time), the live ranker scores the 28 features, and the serving slot stage (recsys/serve/stages/
slots.py: diversity and long-tail slots, no rule set) fills 12 slots. Against what the shopper then did
in that session (purchase 3 > cart 2 > view 1), over every item they touched, not only those retrieved:
NDCG@12, hit rate, catalog coverage and the long-tail share of the slots, for the retrieval order,
the ranker's top 12, and the slot stage with and without its long-tail slots.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import numpy as np
import psycopg

from recsys.config import load_config
from recsys.rank.features import SCORE_COLUMNS, ItemTable, compute
from recsys.rank.offline import CounterSweep, EventLog, OfflineRetrieval, labels_after, request_context

ORDERS = ("retrieval_order", "ranker", "served_no_tail", "served")


def first_visits(log: EventLog, since: float, max_users: int, seed: int) -> np.ndarray:
    """Log rows of each user's first session start at or after `since` (a sample of `max_users`), in time order."""
    rows = np.flatnonzero(log.t >= since)
    first_of_user: dict[str, int] = {}
    for r in rows:
        first_of_user.setdefault(log.user[r], int(r))
    picked = np.array(sorted(first_of_user.values()), dtype=np.int64)
    if len(picked) > max_users:
        picked = np.sort(np.random.default_rng(seed).choice(picked, size=max_users, replace=False))
    return picked


def head_before(log: EventLog, until: float, days: float, share: float) -> frozenset[str]:
    """Resources.head_skus as serving computed it at `until`: the most-interacted share of the catalog
    over the `days` before."""
    window = (log.t < until) & (log.t >= until - days * 86400)
    counts = np.bincount(log.item[window], minlength=len(log.items.skus))
    n = int(round(share * len(counts)))
    top = np.lexsort((np.arange(len(counts)), -counts))[:n]
    return frozenset(log.items.skus[i] for i in top if counts[i] > 0)


def ndcg(slots: list[str], labels: dict[str, int], k: int) -> float:
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    gains = np.array([2.0 ** labels.get(s, 0) - 1 for s in slots[:k]])
    ideal = np.sort([2.0 ** g - 1 for g in labels.values()])[::-1][:k]
    return float(gains @ discount[: len(gains)] / (ideal @ discount[: len(ideal)]))


def evaluate(cfg, k: int = 12, ranker_version: str | None = None) -> dict:
    """The figures of each order (ORDERS); `ranker_version` None: the live ranker."""
    from recsys.models.ranker import load_ranker
    from recsys.rank import out_of_time
    from recsys.rank.train import content_vectors, read_log
    from recsys.registry import models as registry
    from recsys.serve.request import Pooled, RecRequest, Score
    from recsys.serve.resources import Resources
    from recsys.serve.stages.retrieval import excluded_skus
    from recsys.serve.stages.slots import Slots
    from recsys.services import Postgres

    started = time.monotonic()
    r = cfg.ranker
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        items = ItemTable.from_postgres(conn)
        events = read_log(conn)
        content = content_vectors(conn, items)
        oot, why_not = out_of_time.from_registry(conn, r.out_of_time, items)
        ranker_record = registry.get(conn, ranker_version) if ranker_version else registry.live(conn, "ranker")
    if oot is None or ranker_record is None:
        raise SystemExit(f"needs a live ranker and the live models' training cutoff: {why_not or 'no live ranker'} "
                         "(run `make demo` or the pipeline and recsys.rank.train)")
    ranker = load_ranker(ranker_record.artifact_uri, ranker_record.config)
    log = EventLog(events, items, cfg.features)
    since = float(log.t.max()) - float(r.out_of_time.valid_days) * 86400
    retrieval = OfflineRetrieval(items, dict(r.quotas), int(r.max_candidates), content, oot.scorers)
    sweep = CounterSweep(log, list(cfg.features.counter_windows_h))
    res = Resources(cfg)
    res.head_skus = head_before(log, since, float(cfg.serve.bestseller_days), float(cfg.serve.head_share))
    slots = Slots(cfg, res)
    surface = "homepage_hero"
    plain = Slots(cfg, res)
    plain.surfaces = {**plain.surfaces, surface: {**plain.surfaces[surface], "long_tail_slots": 0}}
    rails: dict[str, list[list[str]]] = {name: [] for name in ORDERS}
    scores: dict[str, list[float]] = {name: [] for name in ORDERS}
    horizon = float(r.horizon_h) * 3600
    visits = first_visits(log, since, int(cfg.bench.served.max_users), int(r.seed))
    for row in visits:
        labels = labels_after(log, int(row), include_self=True, horizon_s=horizon)
        ctx = request_context(log, retrieval, sweep.advance(float(log.t[row])), int(row), surface)
        if ctx is None or not labels:
            continue
        user = log.user_state(log.user[row], float(log.t[row]))
        req = RecRequest(surface=surface, user_id=log.user[row], device=ctx.device, ts=float(log.t[row]))
        gone = excluded_skus(req, user, slots.surfaces[surface], res.catalog)
        keep = [i for i, s in enumerate(ctx.candidates) if s not in gone]
        ctx = replace(ctx, candidates=[ctx.candidates[i] for i in keep], source_scores=ctx.source_scores[keep],
                      counters=ctx.counters[keep])
        value = ranker.score(compute(ctx, items))
        pooled = [Pooled(sku=s, source="blend", scores={c.removeprefix("score_"): float(v)   # as serving pools them
                                                        for c, v in zip(SCORE_COLUMNS, row) if v == v})
                  for s, row in zip(ctx.candidates, ctx.source_scores)]
        ranked = sorted(zip(pooled, [Score(float(v)) for v in value]), key=lambda p: p[1].value, reverse=True)
        rail = {"retrieval_order": ctx.candidates[:k], "ranker": [c.sku for c, _ in ranked[:k]],
                "served_no_tail": [i["sku"] for i in plain.arrange(req, user, ranked, None).items],
                "served": [i["sku"] for i in slots.arrange(req, user, ranked, None).items]}
        for name, skus in rail.items():
            rails[name].append(skus)
            scores[name].append(ndcg(skus, labels, k))
    head, n_items = res.head_skus, len(items.skus)
    out = {"requests": float(len(scores["served"])), "seconds": time.monotonic() - started}
    for name in ORDERS:
        shown = [s for rail in rails[name] for s in rail]
        out[f"{name}.ndcg@{k}"] = float(np.mean(scores[name])) if scores[name] else float("nan")
        out[f"{name}.coverage@{k}"] = len(set(shown)) / n_items
        out[f"{name}.long_tail_share@{k}"] = float(np.mean([s not in head for s in shown])) if shown else 0.0
    out["ranker_version"] = ranker_record.version
    return out


def figures(result: dict) -> dict[str, tuple[float, str]]:
    """docs/benchmarks.json names: synthetic.served.* (the rail as served), synthetic.served_no_tail.*,
    synthetic.served_ranker.* (the ranker's top 12), synthetic.served_retrieval_order.*."""
    names = {"served": "served", "served_no_tail": "served_no_tail", "ranker": "served_ranker",
             "retrieval_order": "served_retrieval_order"}
    out = {f"synthetic.{names[o]}.{metric.split('.', 1)[1]}": (float(v), "fraction")
           for o in ORDERS for metric, v in result.items() if metric.startswith(o + ".")}
    out["synthetic.served.requests"] = (result["requests"], "count")
    out["synthetic.served.seconds"] = (result["seconds"], "s")
    return out


def main(argv: list[str] | None = None) -> int:
    result = evaluate(load_config(sys.argv[1:] if argv is None else argv))
    for name, value in result.items():
        print(f"{name:<36} {value:.4f}" if isinstance(value, float) else f"{name:<36} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
