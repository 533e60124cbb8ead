"""The merchandising rules' cost on the slots stage, in process (no services): a rule set of 50 rules
of every kind applied to 120 ranked candidates over a 12,000-SKU catalog.

Each timed call is `Slots.arrange(req, user, ranked, compiled)` (blocks, boosts/buries, MMR, floors,
caps, quotas, pins) and, right after it on the same request, `Slots.arrange(..., rules=None)` (MMR and
the fallback fill alone), so that drift in the machine's load hits both alike. The requests vary:
candidate lists, surfaces (a page SKU on pdp_fbt, a cart on cart_upsell), devices and countries (some
rules hold only for some of them). Figures, the median of `runs` runs:

  rules.arrange.p95_ms            with the rule set
  rules.arrange_no_rules.p95_ms   the same calls without rules
  rules.apply.p95_ms              the first minus the second: what the rules add at p95
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd

N_ITEMS = 12_000
N_RULES = 50
N_CANDIDATES = 120
N_REQUESTS = 64        # distinct requests the timed calls cycle through
SEED = 20261129
NOW = datetime(2026, 11, 29, 12, tzinfo=timezone.utc).timestamp()   # fixed: windows and ages do not drift

BRANDS = ["Zenta", "Volt", "Orbi", "Kora", "Lumo", "Nexa", "Pivo", "Quill", "Rako", "Sora", "Tavi", "Umbra",
          "Vexo", "Wend", "Xylo", "Yara", "Zolo", "Arko", "Bexa", "Cimo"]
CATEGORIES = ["Phones", "Cases", "Screen Protectors", "Chargers", "Cables", "Wireless Chargers", "Power Banks",
              "Batteries", "Laptops", "Sleeves & Bags", "Docks & Hubs", "Headphones", "Earbuds", "Cameras",
              "Lenses", "Memory Cards", "Tablets", "Smartwatches", "Straps", "Speakers"]
DEVICES = {"Phones", "Laptops", "Tablets", "Cameras", "Smartwatches"}
SURFACES = ("homepage_hero", "pdp_fbt", "cart_upsell")


def build_catalog(n: int = N_ITEMS, seed: int = SEED):
    """A deterministic in-memory catalog snapshot shaped like the synthetic one (attributes, tags, an
    accessory graph from devices to accessories)."""
    from recsys.catalog.store import CatalogSnapshot

    rng = np.random.default_rng(seed)
    category = rng.choice(CATEGORIES, n)
    kind = np.where(np.isin(category, list(DEVICES)), "device", np.where(rng.random(n) < 0.8, "accessory", "part"))
    models = ["X21", "X22", "Pro 5", "Air 3", "Max 9", "Mini 2", "S10", "Ultra"]
    skus = [f"B{i:06d}" for i in range(1, n + 1)]
    port = rng.choice(["usb-c", "lightning", "micro-usb"], n)
    tags = []
    for i in range(n):
        t = [str(kind[i])]
        if rng.random() < 0.4:
            t.append(f"port:{port[i]}")
        if rng.random() < 0.1:
            t.append("new")
        if rng.random() < 0.08:
            t.append("sale")
        if rng.random() < 0.05:
            t.append("eco")
        tags.append(t)
    items = pd.DataFrame({
        "sku": skus,
        "title": [f"{BRANDS[b]} {c} {models[m]}" for b, c, m in
                  zip(rng.integers(0, len(BRANDS), n), category, rng.integers(0, len(models), n))],
        "family": rng.choice(["phones", "laptops", "audio", "cameras", "wearables"], n),
        "category": category,
        "kind": kind,
        "brand": rng.choice(BRANDS, n),
        "price": rng.lognormal(3.8, 0.9, n).round(2),
        "margin": rng.uniform(0.05, 0.6, n).round(3),
        "price_band": rng.integers(0, 5, n),
        "stock": np.where(rng.random(n) < 0.03, 0, rng.integers(1, 200, n)),
        "launch_date": [pd.Timestamp("2025-06-01") + pd.Timedelta(days=int(d)) for d in rng.integers(0, 540, n)],
        "tags": tags,
    }).set_index("sku")
    devices = [s for s, k in zip(skus, kind) if k == "device"]
    others = [s for s, k in zip(skus, kind) if k != "device"]
    accessories: dict[str, list[tuple[str, float]]] = {}
    fits: dict[str, list[str]] = {}
    for device in devices:
        fitting = rng.choice(others, 30, replace=False)
        accessories[device] = [(str(a), float(w)) for a, w in zip(fitting, np.sort(rng.random(30))[::-1])]
        for a in fitting:
            fits.setdefault(str(a), []).append(device)
    return CatalogSnapshot(items, accessories, fits, frozenset(items.index[items["stock"] > 0]))


def _leaf(rng: np.random.Generator) -> dict:
    pick = int(rng.integers(0, 11))
    if pick == 0:
        return {"field": "brand", "in": [str(b) for b in rng.choice(BRANDS, int(rng.integers(1, 4)), replace=False)]}
    if pick == 1:
        return {"field": "category", "eq": str(rng.choice(CATEGORIES))}
    if pick == 2:
        low = float(rng.uniform(5, 200))
        return {"field": "price", "between": [round(low, 2), round(low * float(rng.uniform(1.5, 4)), 2)]}
    if pick == 3:
        return {"field": "margin", "gte": round(float(rng.uniform(0.2, 0.5)), 2)}
    if pick == 4:
        return {"field": "tags", "contains": str(rng.choice(["new", "sale", "eco", "accessory", "port:usb-c"]))}
    if pick == 5:
        return {"field": "title", "contains": str(rng.choice(["X21", "Pro", "Air", "Max", "Mini"]))}
    if pick == 6:
        return {"field": "age_days", "lte": int(rng.integers(30, 365))}
    if pick == 7:
        return {"field": "stock", "gte": int(rng.integers(5, 100))}
    if pick == 8:
        return {"field": "price_band", "in": [int(b) for b in rng.choice(5, 2, replace=False)]}
    if pick == 9:
        return {"field": "kind", "eq": str(rng.choice(["accessory", "part", "device"]))}
    return {"field": "accessory_of_context", "eq": True}   # the one leaf evaluated per request


def _filter(rng: np.random.Generator, narrow: bool = False) -> dict:
    """1-4 leaves under all / any / not."""
    n = int(rng.integers(1, 5))
    leaves = [_leaf(rng) for _ in range(n)]
    if n == 1:
        return {"not": leaves[0]} if rng.random() < 0.2 and not narrow else leaves[0]
    if rng.random() < 0.3:   # one negated leaf inside
        leaves[-1] = {"not": leaves[-1]}
    combine = "all" if narrow or rng.random() < 0.6 else "any"
    if n == 4 and rng.random() < 0.5:   # a nested group
        other = "any" if combine == "all" else "all"
        return {combine: leaves[:2] + [{other: leaves[2:]}]}
    return {combine: leaves}


# how many rules of each kind make the 50
MIX = {"block": 5, "boost": 10, "bury": 6, "cap": 4, "quota": 6, "floor_count": 4, "floor_average": 3, "pin": 12}


def build_ruleset(skus: list[str], n_rules: int = N_RULES, seed: int = SEED) -> dict:
    """A deterministic rule set of `n_rules` rules mixing every kind (the proportions of MIX), most of
    them on every surface; some hold only for a device or a country, some only in a time window (one
    around today, one that opens later)."""
    rng = np.random.default_rng(seed + 1)
    kinds = [k for k, n in MIX.items() for _ in range(n)]
    kinds = (kinds * (n_rules // len(kinds) + 1))[:n_rules]
    rules = []
    for i, kind in enumerate(kinds):
        surfaces = list(SURFACES) if rng.random() < 0.8 else \
            sorted({str(s) for s in rng.choice(SURFACES, int(rng.integers(1, 3)), replace=False)})
        rule: dict = {"id": f"r{i:02d}-{kind.replace('_', '-')}", "label": f"bench rule {i} ({kind})", "surfaces": surfaces}
        if kind == "block":
            rule.update(kind="block", filter=_filter(rng, narrow=True))
        elif kind == "boost":
            rule.update(kind="boost", filter=_filter(rng), factor=round(float(rng.uniform(1.2, 3)), 2))
        elif kind == "bury":
            rule.update(kind="bury", filter=_filter(rng), factor=round(float(rng.uniform(0.1, 0.8)), 2))
        elif kind == "cap":
            rule.update(kind="cap", by=str(rng.choice(["brand", "category"])), max=int(rng.integers(2, 5)))
        elif kind == "quota":
            rule.update(kind="quota", filter=_filter(rng), slots=int(rng.integers(1, 3)))
        elif kind == "floor_count":
            rule.update(kind="margin_floor", margin=round(float(rng.uniform(0.3, 0.45)), 2), at_least=int(rng.integers(2, 5)))
        elif kind == "floor_average":
            rule.update(kind="margin_floor", margin=round(float(rng.uniform(0.3, 0.4)), 2), average=True)
        else:
            rule.update(kind="pin", sku=str(rng.choice(skus)), slot=int(rng.integers(1, 13)))
        rule["priority"] = int(rng.integers(-5, 6))
        roll = rng.random()
        if roll < 0.15:
            rule["when"] = {"field": "device", "in": [str(d) for d in rng.choice(["mobile", "desktop", "tablet"], 2, replace=False)]}
        elif roll < 0.22:
            rule["when"] = {"any": [{"field": "geo", "eq": str(rng.choice(["DE", "FR", "US"]))},
                                    {"not": {"field": "cohort", "eq": "new"}}]}
        elif roll < 0.27:   # open now (serving reads the clock: windows around today, whenever it runs)
            rule["window"] = {"start": _day(-30), "end": _day(30), "timezone": "Europe/Berlin"}
        elif roll < 0.30:   # not yet open
            rule["window"] = {"start": _day(60), "timezone": "UTC"}
        rules.append(rule)
    return {"name": "bench-50", "description": "recsys/bench/rules.py: every kind, generated", "rules": rules}


def _day(offset: int) -> str:
    """Midnight `offset` days from today, as a window bound without an offset."""
    day = datetime.now(timezone.utc).date() + timedelta(days=offset)
    return f"{day.isoformat()}T00:00:00"


class _Snapshots(SimpleNamespace):
    """What the slots stage reads of serving's Resources, in memory."""

    def refresh(self):
        pass


def setup(cfg, n_items: int = N_ITEMS, n_rules: int = N_RULES, n_candidates: int = N_CANDIDATES,
          n_requests: int = N_REQUESTS, seed: int = SEED):
    """The slots stage, the compiled rule set and the varied requests (request, user, ranked pool)."""
    from recsys.features.online_store import UserState
    from recsys.rules.engine import CompiledRuleSet
    from recsys.rules.filters import ItemTable
    from recsys.rules.schema import validate
    from recsys.serve.request import Pooled, RecRequest, Score
    from recsys.serve.stages.slots import Slots

    catalog = build_catalog(n_items, seed)
    skus = list(catalog.items.index)
    rng = np.random.default_rng(seed + 2)
    bestsellers = [(str(s), float(200 - i)) for i, s in enumerate(rng.choice(skus, 200, replace=False))]
    ruleset, errors = validate(build_ruleset(skus, n_rules, seed), list(SURFACES))
    if errors:
        raise AssertionError(f"the generated rule set is invalid: {errors[:3]}")
    table = ItemTable(catalog, NOW)
    compiled = CompiledRuleSet("rules-bench", ruleset, table, [s for s, _ in bestsellers])
    res = _Snapshots(catalog=catalog, bestsellers=bestsellers, head_skus=frozenset(s for s, _ in bestsellers),
                     rules=SimpleNamespace(live=compiled, live_version=compiled.version))
    slots = Slots(cfg, res)
    devices = [s for s in skus if catalog.items.at[s, "kind"] == "device"]
    sources = ["two_tower", "als", "content_session", "trending", "bestsellers", "accessories"]
    requests = []
    for i in range(n_requests):
        surface = SURFACES[i % len(SURFACES)]
        page = [str(rng.choice(devices))] if surface == "pdp_fbt" else []
        cart = [str(s) for s in rng.choice(devices, int(rng.integers(1, 3)), replace=False)] if surface == "cart_upsell" else []
        req = RecRequest(surface, user_id=f"u{i}", skus=page, cart=cart, device=str(rng.choice(["mobile", "desktop", "tablet"])),
                         geo=str(rng.choice(["DE", "FR", "US", "NL"])), k=12)
        pool = [page[0]] if page else []
        accessories = [a for a, _ in catalog.accessories.get(page[0], [])] if page else []
        picks = list(dict.fromkeys(accessories[:40] + [str(s) for s in rng.choice(skus, n_candidates * 2, replace=False)]))
        picks = [s for s in picks if s not in set(pool + cart)][:n_candidates]
        scores = np.sort(rng.normal(0, 1, len(picks)))[::-1]
        ranked = [(Pooled(s, str(rng.choice(sources))), Score(float(v))) for s, v in zip(picks, scores)]
        user = UserState(user_id=f"u{i}", device=req.device, geo=req.geo,
                         purchased={str(rng.choice(skus)): NOW} if i % 4 == 0 else {})
        requests.append((req, user, ranked))
    return slots, compiled, requests


def _percentile(ms: list[float], q: float) -> float:
    return float(np.percentile(ms, q))


def one_run(slots, compiled, requests, calls: int, warmup: int) -> dict[str, float]:
    """p50/p95 of the arrange with and without the rules over `calls` calls each, interleaved."""
    with_rules, without = [], []
    clock = time.perf_counter
    for i in range(warmup + calls):
        req, user, ranked = requests[i % len(requests)]
        t0 = clock()
        slots.arrange(req, user, ranked, compiled)
        t1 = clock()
        slots.arrange(req, user, ranked, None)
        t2 = clock()
        if i >= warmup:
            with_rules.append((t1 - t0) * 1000)
            without.append((t2 - t1) * 1000)
    return {"arrange.p50": _percentile(with_rules, 50), "arrange.p95": _percentile(with_rules, 95),
            "none.p50": _percentile(without, 50), "none.p95": _percentile(without, 95)}


def bench_rules(cfg, calls: int = 2000, warmup: int = 200, runs: int = 3, n_items: int = N_ITEMS,
                n_rules: int = N_RULES, n_candidates: int = N_CANDIDATES) -> dict[str, tuple[float, str]]:
    """The figures for docs/benchmarks.json: the median over `runs` runs of `calls` timed calls each."""
    load_before = os.getloadavg()[0]
    print(f"  load average before the run: {load_before:.2f} (1 min), {os.cpu_count()} cores")
    started = time.perf_counter()
    slots, compiled, requests = setup(cfg, n_items, n_rules, n_candidates)
    print(f"  {n_items} SKUs, {len(compiled.rules)} rules compiled, {len(requests)} requests of {n_candidates} "
          f"candidates: set up in {time.perf_counter() - started:.1f} s")
    active = [len(compiled.active(req.surface, _facts(compiled, req, user), NOW)[0]) for req, user, _ in requests]
    print(f"  rules active per request: {min(active)}-{max(active)} (mean {statistics.mean(active):.1f})")
    results = []
    for run in range(runs):
        r = one_run(slots, compiled, requests, calls, warmup)
        r["apply.p95"] = r["arrange.p95"] - r["none.p95"]
        results.append(r)
        print(f"  run {run + 1}: with rules p50 {r['arrange.p50']:.3f} p95 {r['arrange.p95']:.3f} ms; without "
              f"p50 {r['none.p50']:.3f} p95 {r['none.p95']:.3f} ms; the rules add {r['apply.p95']:.3f} ms at p95")

    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in results))

    figures = {
        "rules.apply.p95_ms": (median("apply.p95"), "ms"),
        "rules.arrange.p95_ms": (median("arrange.p95"), "ms"),
        "rules.arrange.p50_ms": (median("arrange.p50"), "ms"),
        "rules.arrange_no_rules.p95_ms": (median("none.p95"), "ms"),
        "rules.arrange_no_rules.p50_ms": (median("none.p50"), "ms"),
        "rules.load_avg_1m_before": (load_before, "load"),
    }
    for name, (value, unit) in figures.items():
        print(f"  {name:<34} {value:10.3f} {unit}")
    return figures


def _facts(compiled, req, user):
    from recsys.serve.stages.slots import request_facts

    return request_facts(compiled.table, req, user)


if __name__ == "__main__":   # a quick look without writing the docs: python -m recsys.bench.rules [calls]
    import sys

    from recsys.config import load_config

    bench_rules(load_config(), calls=int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
