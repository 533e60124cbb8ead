"""The simulated A/B test (`recsys sim ab`): the platform against static bestseller rails.

The synthetic world's shoppers (recsys/sim/shoppers.py, after their history) come back to the store for
`sim.days` days at the history's rates. Each shopper is in one arm for the whole run, by a salted hash of
their id (`unit_hash`, the canary's assignment). A visit is a walk through the three surfaces:

    home (homepage_hero) -> the first product viewed from it (pdp_fbt) -> if something was added to the
    cart, the cart (cart_upsell)

When the home rail gets no click the shopper browses on their own (`ShopperWorld.organic_visit`: search
and category pages, as in history, which no arm controls) and the product page they land on first shows
the arm's pdp_fbt rail. Each rail comes from the arm's policy: `bestsellers` (the best sellers minus what is on the page or in
the cart) or `served` (the real Recommender, in process, with the arm's rule set or none). The shopper's
answer to each rail is `ShopperWorld.respond` — position bias, hidden tastes, price sensitivity, the
accessory needs a device purchase creates — which sees the slate and never the arm. Its events are
validated as the API validates them and applied to the online features as the consumer applies them,
under a Redis key prefix of the run's own, so session features and the response cache's invalidation
behave as in production; they do not go into the offline event log (a simulated future must not train
the models) and the Recommender's impressions are counted here, not logged.

Outcomes per arm and seed (`ArmTally.summary`), then lifts against the baseline arm with 95% intervals
over seeds (`lifts`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from recsys.features.events import IntakeLimits, parse_event
from recsys.release.arms import unit_hash
from recsys.serve.request import RecRequest

log = logging.getLogger(__name__)


def assign(salt: str, user_id: str, arms: list[str]) -> str:
    """The arm of a shopper: equal shares of the hash's unit interval, stable for the whole run."""
    return arms[min(int(unit_hash(salt, user_id) * len(arms)), len(arms) - 1)]


@dataclass
class ArmTally:
    """What one arm's rails and shoppers did in one run."""

    sessions: int = 0
    rails: int = 0                 # rails shown (impressions)
    clicked: int = 0               # rails with at least one product viewed from them
    slots: int = 0
    long_tail_slots: int = 0
    high_margin_slots: int = 0     # accessories and parts at web.high_margin or more
    converted: int = 0             # sessions with a purchase
    orders: int = 0
    units: int = 0                 # items bought (quantities summed)
    revenue: float = 0.0
    margin: float = 0.0
    rail_revenue: float = 0.0      # revenue of items a rail led to (the rest: organic browsing)
    revenue_by_kind: dict = field(default_factory=lambda: {"device": 0.0, "accessory": 0.0, "part": 0.0})
    shown: set = field(default_factory=set)
    shown_late: set = field(default_factory=set)   # shown after zero_impression_after_h into the run
    device_buys: list = field(default_factory=list)     # (user, sku, ts) of every device bought
    accessory_buys: dict = field(default_factory=dict)  # user -> [(sku, ts)] of accessories and parts bought

    def attach_rate(self, fits: dict[str, set], window: timedelta) -> float:
        """Share of the devices bought whose buyer bought something made for them (the accessory graph)
        within `window` after: the case study's attach rate."""
        attached = [any(sku in fits.get(device, ()) and at <= when <= at + window
                        for sku, when in self.accessory_buys.get(user, ()))
                    for user, device, at in self.device_buys]
        return float(np.mean(attached)) if attached else 0.0

    def summary(self, n_items: int, fits: dict[str, set], attach_window: timedelta) -> dict[str, float]:
        s, r, rev = max(self.sessions, 1), max(self.rails, 1), self.revenue or 1.0
        return {"sessions": self.sessions, "ctr": self.clicked / r, "conversion": self.converted / s,
                "aov": self.revenue / self.orders if self.orders else 0.0,
                "units_per_order": self.units / self.orders if self.orders else 0.0,
                "revenue_per_session": self.revenue / s, "margin_per_session": self.margin / s,
                "rail_revenue_share": self.rail_revenue / rev,
                **{f"{kind}_revenue_share": v / rev for kind, v in self.revenue_by_kind.items()},
                "long_tail_share": self.long_tail_slots / max(self.slots, 1),
                "high_margin_share": self.high_margin_slots / max(self.slots, 1),
                "coverage": len(self.shown) / n_items, "zero_impression_skus": n_items - len(self.shown_late),
                "devices_bought": len(self.device_buys), "attach_rate": self.attach_rate(fits, attach_window)}


class BestsellerRails:
    """The before: one static list of best sellers for everyone, minus the page's and the cart's SKUs."""

    def __init__(self, bestsellers: list[str]):
        self.bestsellers = bestsellers

    def rail(self, req: RecRequest) -> list[str]:
        context = set(req.context_skus)
        return [s for s in self.bestsellers if s not in context][: req.k]


class ServedRails:
    """The real serving code in process: features, retrieval, the ranker, rules and MMR, 12 slots."""

    def __init__(self, recommender):
        self.recommender = recommender

    def rail(self, req: RecRequest) -> list[str]:
        return [i["sku"] for i in self.recommender.recommend(req)["items"]]


class Catalog:
    """What the tallies need per SKU: index, price, margin, long tail, high-margin accessory."""

    def __init__(self, conn, cfg):
        rows = conn.execute("SELECT sku, category, kind, price, margin FROM items ORDER BY sku").fetchall()
        self.skus = [r[0] for r in rows]
        self.kind = {r[0]: r[2] for r in rows}
        self.category_of = {r[0]: r[1] for r in rows}
        self.margin = {r[0]: float(r[4] or 0.0) for r in rows}
        high = float(cfg.web.high_margin)
        self.high_margin = {r[0] for r in rows if r[2] in ("accessory", "part") and (r[4] or 0) >= high}
        views = dict(conn.execute("SELECT sku, count(*) FROM events WHERE type = 'product_viewed' "
                                  "GROUP BY sku").fetchall())
        from recsys.train.metrics import long_tail_mask

        tail = long_tail_mask(np.array([views.get(s, 0) for s in self.skus]), float(cfg.web.head_share))
        self.long_tail = {s for s, t in zip(self.skus, tail) if t}
        self.fits: dict[str, set] = {}   # device -> what is made for it or fits it (the accessory graph)
        for device, accessory in conn.execute("SELECT src_sku, dst_sku FROM item_edges"):
            self.fits.setdefault(device, set()).add(accessory)


def _events(raw: list[dict], limits: IntakeLimits) -> list:
    out = []
    for e in raw:
        event, reason = parse_event({**e, "ts": e["ts"].isoformat()}, limits)
        if event is None:
            raise ValueError(f"the simulator produced an invalid event ({reason}): {e}")
        out.append(event)
    return out


class Run:
    """One seed: every visit of the window, each arm's rails, the shoppers' answers, the tallies."""

    def __init__(self, cfg, world, policies: dict, store, catalog: Catalog, seed: int, start: datetime):
        self.cfg, self.world, self.policies, self.store, self.catalog = cfg, world, policies, store, catalog
        self.seed, self.start = seed, start
        self.arms = list(policies)
        self.tallies = {arm: ArmTally() for arm in self.arms}
        self.limits = IntakeLimits(max_age=timedelta(days=3650),
                                   max_clock_skew=timedelta(days=float(cfg.sim.days) + 2))   # the run's clock
        self.late = start + timedelta(hours=float(cfg.sim.zero_impression_after_h))
        self.pending: list = []

    def _show(self, arm: str, req: RecRequest, at: datetime) -> list[dict]:
        """The arm's rail for `req`, the shopper's answer to it, both tallied; the answer's events."""
        skus = self.policies[arm].rail(req)
        t = self.tallies[arm]
        t.rails += 1
        t.slots += len(skus)
        t.long_tail_slots += sum(s in self.catalog.long_tail for s in skus)
        t.high_margin_slots += sum(s in self.catalog.high_margin for s in skus)
        t.shown.update(skus)
        if at >= self.late:
            t.shown_late.update(skus)
        events = self.world.respond(req.user_id, skus, at, rng_seed=self._rng.integers(2**31), surface=req.surface,
                                    request_id=req.request_id, session_id=req.session_id)
        if any(e["type"] == "product_viewed" for e in events):
            t.clicked += 1
        self._take(arm, events)
        return events

    def _take(self, arm: str, events: list[dict]) -> None:
        """A visit's events: purchases into the tally, every event into the feature path."""
        t = self.tallies[arm]
        for e in events:
            if e["type"] == "purchase_completed":
                amount = e["price"] * e["quantity"]
                t.units += e["quantity"]
                t.revenue += amount
                t.margin += amount * self.catalog.margin.get(e["sku"], 0.0)
                kind = self.catalog.kind.get(e["sku"], "part")
                t.revenue_by_kind[kind] += amount
                if kind == "device":
                    t.device_buys.append((e["user_id"], e["sku"], e["ts"]))
                else:
                    t.accessory_buys.setdefault(e["user_id"], []).append((e["sku"], e["ts"]))
                t.rail_revenue += amount if (e["context"] or {}).get("surface") else 0.0
        self.pending += _events(events, self.limits)

    def visit(self, user: str, at: datetime, n: int) -> None:
        arm = assign(f"{self.cfg.sim.salt}:{self.seed}", user, self.arms)   # a new split per seed
        t = self.tallies[arm]
        t.sessions += 1
        session = f"ab{self.seed}-{n}"
        base = {"user_id": user, "session_id": session}
        events = self._show(arm, RecRequest(surface="homepage_hero", ts=at.timestamp(), **base), at)
        if not any(e["type"] == "product_viewed" for e in events):   # no click: the shopper browses alone
            organic = self.world.organic_visit(user, at, int(self._rng.integers(2**31)), session)
            self._take(arm, organic)
            events += organic
        seen = list(events)
        viewed = [e for e in events if e["type"] == "product_viewed"]
        if viewed:
            at = viewed[0]["ts"].to_pydatetime()
            seen += self._show(arm, RecRequest(surface="pdp_fbt", skus=[viewed[0]["sku"]], ts=at.timestamp(), **base), at)
        cart = list(dict.fromkeys(e["sku"] for e in seen if e["type"] == "add_to_cart"))
        if cart:
            at = max(e["ts"] for e in seen).to_pydatetime()
            seen += self._show(arm, RecRequest(surface="cart_upsell", cart=cart, ts=at.timestamp(), **base), at)
        orders = {e["order_id"] for e in seen if e["type"] == "purchase_completed"}
        t.orders += len(orders)
        if orders:
            t.converted += 1

    def flush(self) -> None:
        """The events so far into the online features, as the consumer's feature stage applies them."""
        if self.pending:
            self.store.apply(self.pending, self.catalog.category_of)
            self.pending = []

    def run(self) -> dict[str, ArmTally]:
        self._rng = np.random.default_rng(np.random.SeedSequence([int(self.cfg.seed), 4, self.seed]))
        visits = self.world.visits(float(self.cfg.sim.days), self.start, self.seed)
        every = int(self.cfg.sim.flush_every)
        for n, (user, at) in enumerate(visits):
            self.visit(user, at, n)
            if n % every == every - 1:
                self.flush()
        self.flush()
        return self.tallies


def mean_interval(values) -> dict:
    """The mean of per-seed values with a 95% t interval (nan-free values; NaN bounds for one seed)."""
    from scipy import stats

    values = np.asarray([v for v in values if not np.isnan(v)], dtype=float)
    mean = float(values.mean()) if len(values) else float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))) \
        if len(values) > 1 else float("nan")
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": len(values)}


def lifts(summaries: list[dict[str, dict]], baseline: str, metric: str) -> dict[str, dict]:
    """Per arm: the mean over seeds of (arm / baseline - 1) for `metric`, with a 95% t interval."""
    return {arm: mean_interval([s[arm][metric] / s[baseline][metric] - 1 if s[baseline][metric] else np.nan
                                for s in summaries])
            for arm in summaries[0] if arm != baseline}


def levels(summaries: list[dict[str, dict]], metric: str) -> dict[str, dict]:
    """Per arm (the baseline too): the mean over seeds of `metric` with a 95% t interval."""
    return {arm: mean_interval([s[arm][metric] for s in summaries]) for arm in summaries[0]}


def build_policies(cfg, sim_cfg) -> dict:
    """{arm name: rails} from `sim.arms`: one Recommender per served arm, its rule set fixed."""
    import hashlib
    import json
    from pathlib import Path

    from recsys.rules.engine import CompiledRuleSet
    from recsys.rules.filters import ItemTable
    from recsys.rules.schema import validate
    from recsys.serve.recommender import Recommender

    policies, bestsellers = {}, None
    for arm in sim_cfg.arms:
        if arm.policy == "bestsellers":
            policies[arm.name] = arm
            continue
        recommender = Recommender(cfg)
        res = recommender.res
        res.refresh(wait=True)
        res.writes.impression = lambda impression: None   # counted by the run; never the live log
        rules = None
        if arm.get("rules"):
            body = Path(arm.rules).read_text()
            ruleset, errors = validate(json.loads(body), list(cfg.surfaces))
            if errors:
                raise ValueError(f"sim arm {arm.name}: invalid rule set {arm.rules}: {errors}")
            popularity = [s for s, _ in res.bestsellers]
            # the version names the body: the response cache never serves a rail an earlier body built
            version = f"sim-{arm.name}-{hashlib.sha1(body.encode()).hexdigest()[:10]}"
            rules = CompiledRuleSet(version, ruleset, ItemTable(res.catalog, time.time()), popularity)
        res.rules.fix(rules)   # the arm's rule set stays, whatever is live
        policies[arm.name] = ServedRails(recommender)
        bestsellers = bestsellers or [s for s, _ in res.bestsellers]
    for arm in sim_cfg.arms:
        if arm.policy == "bestsellers":
            policies[arm.name] = BestsellerRails(bestsellers or [])
    return policies


def run_ab(cfg, seeds: int | None = None) -> dict:
    """Every seed of the experiment; the per-seed summaries and the lifts against the baseline."""
    import psycopg

    from omegaconf import OmegaConf

    from recsys.data import history_end
    from recsys.features.online_store import OnlineStore
    from recsys.services import Postgres

    sim = cfg.sim
    seeds = int(seeds or sim.seeds)
    prefix = f"{cfg.services.redis.key_prefix}sim-ab:"
    run_cfg = OmegaConf.merge(cfg, {"services": {"redis": {"key_prefix": prefix}}})
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        catalog = Catalog(conn, cfg)
    store = OnlineStore.from_config(run_cfg)
    summaries, seed_seconds, started, load_before = [], [], time.monotonic(), os.getloadavg()[0]
    try:
        for seed in range(seeds):
            t0 = time.monotonic()
            _, world = _world(cfg)   # the shoppers as their history left them (each seed starts the same)
            _rebuild(run_cfg, store)
            policies = build_policies(run_cfg, sim)
            start = history_end(cfg.data.end)
            tallies = Run(run_cfg, world, policies, store, catalog, seed, start).run()
            window = timedelta(days=float(sim.attach_days))
            summaries.append({arm: t.summary(len(catalog.skus), catalog.fits, window) for arm, t in tallies.items()})
            seed_seconds.append(time.monotonic() - t0)
            log.info("seed %d: %.0f s", seed, seed_seconds[-1])
    finally:
        store.delete_all()
    baseline = str(sim.baseline)
    metrics = ("conversion", "aov", "ctr", "revenue_per_session", "margin_per_session", "units_per_order")
    return {"seeds": summaries, "seconds": time.monotonic() - started, "seed_seconds": seed_seconds,
            "load_average": {"before": load_before, "after": os.getloadavg()[0]},
            "lifts": {m: lifts(summaries, baseline, m) for m in metrics},
            "levels": {m: levels(summaries, m) for m in LEVELS}}


def _world(cfg):
    """The configured synthetic world after its history (the shoppers own what they bought in it)."""
    from recsys.data import history_end
    from recsys.sim.catalog import generate_catalog
    from recsys.sim.shoppers import ShopperWorld

    d = cfg.data
    catalog = generate_catalog(n_skus=int(d.n_skus), seed=int(cfg.seed))
    world = ShopperWorld(catalog, n_users=int(d.n_users), seed=int(cfg.seed))
    world.history(days=int(d.days), end=history_end(d.end))
    return catalog, world


def _rebuild(cfg, store) -> None:
    """The run's online features: the event log replayed under the run's Redis prefix."""
    import psycopg

    from recsys.data import rebuild_online_features
    from recsys.services import Postgres

    store.delete_all()
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        rebuild_online_features(cfg, conn, store)


COMMAND = "recsys sim ab --record"
REPORTED = ("conversion", "aov")   # lifts written to docs/benchmarks.json, with their intervals


SHARES = ("long_tail_share", "high_margin_share", "coverage")   # of the slots (plotted), with intervals, per arm
LEVELS = (*SHARES, "attach_rate")   # levels with intervals (a lift of the attach rate: a ratio of small shares)


def figures(result: dict, baseline: str) -> dict[str, tuple[float, str]]:
    """docs/benchmarks.json entries: per arm, the lifts (mean, 95% low and high), the shares of slots and
    the coverage with their intervals, the means of conversion and AOV; the run's seconds per seed."""
    out = {}
    for metric in REPORTED:
        for arm, lift in result["lifts"][metric].items():
            for k in ("mean", "low", "high"):
                out[f"sim.ab.{arm}.{metric}_lift" + ("" if k == "mean" else f".{k}")] = (lift[k], "ratio - 1")
    for metric in LEVELS:
        for arm, level in levels(result["seeds"], metric).items():
            for k in ("mean", "low", "high"):
                out[f"sim.ab.{arm}.{metric}" + ("" if k == "mean" else f".{k}")] = (level[k], "fraction, mean over seeds")
    for arm in result["seeds"][0]:
        for metric in ("conversion", "aov", "ctr"):
            out[f"sim.ab.{arm}.{metric}"] = (float(np.mean([s[arm][metric] for s in result["seeds"]])), "mean over seeds")
    out["sim.ab.seconds"] = (float(np.median(result["seed_seconds"])), "s per seed (median of the seeds)")
    return out


def report(result: dict, baseline: str) -> str:
    lines = [f"{len(result['seeds'])} seeds, {result['seconds']:.0f} s"]
    for arm in result["seeds"][0]:
        mean = {m: float(np.mean([s[arm][m] for s in result["seeds"]])) for m in result["seeds"][0][arm]}
        lines.append(f"  {arm:<20} " + ", ".join(f"{m} {v:.4g}" for m, v in mean.items()))
    for metric, per_arm in result["lifts"].items():
        for arm, l in per_arm.items():
            lines.append(f"  lift {metric:<20} {arm:<20} {l['mean']:+.1%}  [{l['low']:+.1%}, {l['high']:+.1%}] vs {baseline}")
    return "\n".join(lines)
