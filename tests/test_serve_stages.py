"""The serving stages and their composition in-process, without Ray: diversity, time budgets,
degradation, the response cache and explanations, on the small world."""

import time
import uuid

import numpy as np
import psycopg
import pytest

from recsys.features.events import Event
from recsys.serve.recommender import Recommender
from recsys.serve.request import RecRequest
from recsys.serve.stages.ranker import RankBlend
from recsys.serve.stages.slots import Slots, mmr
from tests.conftest import PATIENT, make_cfg

NO_CACHE = [f"surfaces.{s}.cache_ttl_s=0" for s in ("homepage_hero", "pdp_fbt", "cart_upsell")]


@pytest.fixture(scope="module")
def shopper(world):
    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn) as conn:
        user = conn.execute("SELECT user_id FROM events WHERE type = 'product_viewed' "
                            "GROUP BY user_id ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
        device = conn.execute("SELECT src_sku FROM item_edges GROUP BY src_sku HAVING count(*) >= 15 "
                              "ORDER BY src_sku LIMIT 1").fetchone()[0]
    return {"user": user, "device": device}


@pytest.fixture(scope="module")
def recommender(world):
    return Recommender(make_cfg(*PATIENT))


class Sleepy:
    """Wraps a source or a stage: sleeps past any budget, then answers as the real one would."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds, self.calls = inner, seconds, 0

    def __getattr__(self, method):
        def slow(*args):
            self.calls += 1
            time.sleep(self.seconds)
            return getattr(self.inner, method)(*args)
        return slow


def test_mmr_keeps_the_ranker_order_at_lambda_one_and_spreads_below_it():
    relevance = np.linspace(1.0, 0.0, 6)
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [2, 2], [3, 0]])   # (category, price band)
    weights = np.array([0.7, 0.3])
    assert [i for i, _ in mmr(relevance, codes, weights, 1.0, 4)] == [0, 1, 2, 3]
    picks = mmr(relevance, codes, weights, 0.3, 4)
    assert [i for i, _ in picks] == [0, 3, 4, 5]
    assert picks[0][1] == 0.0 and picks[3][1] == pytest.approx(0.7 * 0.3)  # shares the price band of slot 1


def test_diversity_spreads_twelve_slots_over_more_categories_and_price_bands(world, recommender, shopper):
    # A product page: the device's accessories, a few kinds of them in the ranker's top 12.
    req = RecRequest("pdp_fbt", user_id=shopper["user"], skus=[shopper["device"]])
    user = recommender.stages["features"].lookup(req).user
    candidates = recommender.stages["retrieval"].candidates(req, user).candidates
    scores = RankBlend(world).score(req, user, candidates)
    items = recommender.res.catalog.items

    def spread(lam: float) -> tuple[int, int]:
        slots = Slots(make_cfg(f"surfaces.pdp_fbt.diversity.lambda={lam}"), recommender.res)
        skus = [i["sku"] for i in slots.select(req, user, candidates, scores).items]
        assert len(skus) == 12
        return items.loc[skus, "category"].nunique(), items.loc[skus, "price_band"].nunique()

    by_relevance, diverse = spread(1.0), spread(0.3)
    assert diverse[0] >= by_relevance[0] and diverse[1] >= by_relevance[1], (by_relevance, diverse)
    assert sum(diverse) > sum(by_relevance), (by_relevance, diverse)


def test_a_source_past_its_budget_is_left_out_then_benched_and_the_rail_still_fills(shopper):
    recommender = Recommender(make_cfg(*PATIENT, "+serve.budgets_ms.sources.trending=50", "serve.source_cooldown_s=60",
                                       *NO_CACHE))
    sources = recommender.stages["retrieval"].sources
    sources["trending"] = Sleepy(sources["trending"], 0.5)
    body = recommender.recommend(RecRequest("homepage_hero", user_id=shopper["user"]))
    assert body["degraded"] == ["trending: over its 50 ms budget"]
    assert len(body["items"]) == 12 and "trending" not in {i["source"] for i in body["items"]}
    body = recommender.recommend(RecRequest("homepage_hero", user_id=shopper["user"]))
    assert sources["trending"].calls == 1      # benched: the next requests do not wait for it
    assert body["degraded"] == ["trending: benched after a failure"] and len(body["items"]) == 12


def test_past_the_deadline_the_remaining_stages_are_replaced_by_their_fallbacks(shopper):
    recommender = Recommender(make_cfg(*PATIENT, "serve.deadline_ms=50", *NO_CACHE))
    recommender.calls["features"] = Sleepy(recommender.stages["features"], 0.1).lookup
    body = recommender.recommend(RecRequest("pdp_fbt", user_id=shopper["user"], skus=[shopper["device"]]))
    assert body["degraded"] == [f"{stage}: skipped, past the request's 50 ms deadline"
                                for stage in ("retrieval", "ranker", "slots")]
    assert len(body["items"]) == 12 and {i["source"] for i in body["items"]} == {"bestsellers"}


def test_a_failing_source_and_a_slow_stage_degrade_to_fallbacks(recommender, shopper):
    healthy = recommender.recommend(RecRequest("pdp_fbt", user_id=shopper["user"], skus=[shopper["device"]],
                                               explain=True))    # explain: computed, not cached
    assert healthy["degraded"] == []
    expected = [i["sku"] for i in healthy["items"]]
    recommender = Recommender(make_cfg(*PATIENT, "serve.budgets_ms.ranker=50"), resources=recommender.res)

    class Broken:
        def fetch(self, *args):
            raise ConnectionError("pgvector is gone")

    recommender.stages["retrieval"].sources["content_item"] = Broken()
    recommender.calls["ranker"] = Sleepy(recommender.stages["ranker"], 0.5).score
    req = RecRequest("pdp_fbt", user_id=shopper["user"], skus=[shopper["device"]])
    body = recommender.recommend(req)
    assert body["degraded"] == ["content_item: ConnectionError", "ranker: over its 50 ms budget"]
    skus = [i["sku"] for i in body["items"]]
    assert len(skus) == 12 and len(set(skus) & set(expected)) >= 6   # the blend ranker stood in
    assert recommender.cache.get(req)[0] is None                     # degraded responses are never cached


def test_second_request_is_a_cache_hit_until_the_user_acts(recommender, shopper, monkeypatch):
    logged = []
    recommender.res.writes.flush()      # impressions of earlier tests' requests, still queued
    monkeypatch.setattr(recommender.res.impression_producer(), "send_impressions",
                        lambda batch: logged.extend(i["request_id"] for i in batch))
    store = recommender.res.store
    user = f"cache-{uuid.uuid4().hex[:8]}"
    store.apply([Event(type="product_viewed", user_id=user, sku=shopper["device"])], {})

    def timed():
        start = time.perf_counter()
        body = recommender.recommend(RecRequest("homepage_hero", user_id=user))
        elapsed = time.perf_counter() - start
        recommender.res.writes.flush()    # the cache entry and the impression are written behind the response
        return body, elapsed

    def cached(req):   # the rail cached for `req` under the models of its arm (part of the key)
        req.arm = recommender.res.release.arm_for(req.user_id, req.session_id, req.request_id)
        return recommender.cache.get(req)[0]

    first, miss_s = timed()
    second, hit_s = timed()
    assert second["items"] == first["items"] and second["degraded"] == []
    assert second["request_id"] != first["request_id"] and logged == [first["request_id"], second["request_id"]]
    assert hit_s < miss_s
    assert cached(RecRequest("homepage_hero", user_id=user)) is not None

    store.apply([Event(type="add_to_cart", user_id=user, sku=shopper["device"])], {})
    assert cached(RecRequest("homepage_hero", user_id=user)) is None  # a new event: stale
    timed()
    assert cached(RecRequest("homepage_hero", user_id=user)) is not None
    assert cached(RecRequest("homepage_hero", user_id=user, k=6)) is None


def test_cached_rails_expire_after_the_surface_ttl(shopper):
    recommender = Recommender(make_cfg(*PATIENT, "surfaces.homepage_hero.cache_ttl_s=0.3"))
    req = RecRequest("homepage_hero", session_id=f"ttl-{uuid.uuid4().hex[:8]}")
    recommender.recommend(req)
    recommender.res.writes.flush()
    assert recommender.cache.get(req)[0] is not None
    time.sleep(0.4)
    assert recommender.cache.get(req)[0] is None


def test_explain_says_where_each_slot_came_from_and_what_diversity_did(recommender, shopper):
    body = recommender.recommend(RecRequest("pdp_fbt", user_id=shopper["user"], skus=[shopper["device"]], explain=True))
    assert set(body["stage_ms"]) == {"features", "retrieval", "ranker", "slots"}
    for slot, item in enumerate(body["items"], 1):
        e = item["explain"]
        assert e["slot"] == slot and item["source"]
        if e["rank"] is not None:   # filled slots have no rank
            assert item["source"] in e["contributions"] and e["mmr_penalty"] >= 0
    assert body["items"][0]["explain"]["rank"] == 1 and body["items"][0]["explain"]["mmr_penalty"] == 0


def test_the_catalog_snapshot_is_read_again_only_when_it_changed(world, pg):
    """A replica's periodic refresh keeps an unchanged catalog (rebuilding it cost ~100 MB and a p95
    spike each time) and reads a changed one."""
    from recsys.serve.resources import Resources

    res = Resources(make_cfg())
    try:
        first = res.catalog
        res._next_refresh = 0.0
        res.refresh(wait=True)
        assert res.catalog is first
        pg.execute("UPDATE items SET updated_at = now() WHERE sku = (SELECT min(sku) FROM items)")
        res._next_refresh = 0.0
        res.refresh(wait=True)
        assert res.catalog is not first and len(res.catalog.items) == len(first.items)
    finally:
        res.pool.close()


def test_a_cart_or_page_device_never_brings_its_own_variants(world, recommender, shopper, pg):
    """The same model in another colour or storage is no upsell for the phone in the cart, nor a
    'bought together' for the phone on the page: excluding a device excludes its variants."""
    model, skus = pg.execute(
        "SELECT specs->>'model', array_agg(sku ORDER BY sku) FROM items WHERE kind = 'device' "
        "GROUP BY 1 HAVING count(*) >= 3 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()
    recommender.res.refresh(wait=True)
    assert set(recommender.res.catalog.variants[skus[0]]) == set(skus[1:])
    for surface, ask in (("cart_upsell", {"cart": [skus[0]]}), ("pdp_fbt", {"skus": [skus[0]]})):
        items = recommender.recommend(RecRequest(surface=surface, user_id=shopper["user"], k=40, **ask))["items"]
        assert len(items) >= 12 and not {i["sku"] for i in items} & set(skus), (surface, model)


def test_a_device_page_and_a_device_cart_lead_with_what_fits_the_device(world, recommender, shopper):
    """surfaces.<pdp_fbt|cart_upsell>.fits_first: the first slots are accessory-graph fits of the page's
    (the cart's) device, those made for the model first; a surface without it (home) is unchanged."""
    device = shopper["device"]
    recommender.res.refresh(wait=True)
    fits = dict(recommender.res.catalog.accessories[device])
    for surface, ask in (("pdp_fbt", {"skus": [device]}), ("cart_upsell", {"cart": [device]})):
        items = recommender.recommend(RecRequest(surface=surface, user_id=shopper["user"], explain=True, **ask))["items"]
        top = [i["sku"] for i in items[:4]]
        assert all(s in fits for s in top), (surface, top)
        later = [fits[i["sku"]] for i in items[4:] if i["sku"] in fits]
        assert min(fits[s] for s in top) >= max(later, default=0.0), (top, later)   # made-for-the-model first


def test_long_tail_slots_give_the_last_slots_to_the_best_ranked_tail_candidates(world, recommender, shopper):
    """surfaces.<s>.long_tail_slots: at least that many slots outside the head (the serve.head_share most
    interacted SKUs); tail candidates the rail lacked, the most similar to the session first (then by
    rank), take the places of its last head picks, and the other slots keep their order."""
    recommender.res.refresh(wait=True)
    head, n_items = recommender.res.head_skus, len(recommender.res.catalog.items)
    assert 0 < len(head) <= round(0.2 * n_items)
    req = RecRequest("homepage_hero", user_id=shopper["user"])
    user = recommender.stages["features"].lookup(req).user
    candidates = recommender.stages["retrieval"].candidates(req, user).candidates
    scores = RankBlend(world).score(req, user, candidates)

    def rail(n: int) -> list[str]:
        slots = Slots(make_cfg(f"surfaces.homepage_hero.long_tail_slots={n}"), recommender.res)
        return [i["sku"] for i in slots.select(req, user, candidates, scores).items]

    plain = rail(0)
    n = sum(s not in head for s in plain) + 2            # two more than the rail holds anyway: it binds
    tailed = rail(n)
    def similarity(c) -> float:   # to the session: the content sources' score
        return max((v for source, v in c.scores.items() if source.startswith("content")), default=-np.inf)

    ranked_tail = [c.sku for c, _ in sorted(Slots.ranked(candidates, scores), key=lambda pair: -similarity(pair[0]))
                   if c.sku not in head and c.sku not in plain]
    assert len(ranked_tail) >= 2 and len(tailed) == len(plain) == 12
    added = [s for s in tailed if s not in plain]
    assert added == ranked_tail[:2] and tailed[-2:] == added                # the closest of the tail, last
    assert [s for s in tailed if s not in added] == [s for s in plain if s in tailed]   # the rest in order
    dropped = [s for s in plain if s not in tailed]
    assert all(s in head for s in dropped) and sum(s not in head for s in tailed) == n
