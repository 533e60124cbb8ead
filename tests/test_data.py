"""Loading a world: Postgres holds it once, Redis is rebuilt from the log whenever it lost it."""

import time

from recsys.data import fingerprint, load_world
from recsys.features.online_store import OnlineStore


def test_world_is_loaded_once_with_a_consistent_graph(world, pg):
    items, edges, events = (pg.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                            for t in ("items", "item_edges", "events"))
    assert abs(items - world.data.n_skus) <= 0.03 * world.data.n_skus
    assert edges > items and events > 10 * world.data.n_users
    dangling = pg.execute("SELECT count(*) FROM item_edges e LEFT JOIN items d ON d.sku = e.dst_sku "
                          "WHERE d.sku IS NULL").fetchone()[0]
    assert dangling == 0
    unknown_sku = pg.execute("SELECT count(*) FROM events e LEFT JOIN items i USING (sku) "
                             "WHERE i.sku IS NULL").fetchone()[0]
    assert unknown_sku == 0
    again = load_world(world)
    assert "already loaded" in again and "already built" in again
    assert pg.execute("SELECT count(*) FROM events").fetchone()[0] == events


def test_redis_is_rebuilt_from_the_event_log(world, pg):
    store = OnlineStore.from_config(world)
    user = pg.execute("SELECT user_id FROM events WHERE user_id ~ '^u[0-9]+$' ORDER BY ts DESC LIMIT 1").fetchone()[0]
    now = time.time()
    before = store.user_state(user, now=now)
    assert before.known and before.views
    store.r.delete(f"{store.p}dataset")               # as if Redis had restarted empty
    store.r.delete(store.user_key(user))
    message = load_world(world)
    assert "events applied to Redis" in message
    assert store.user_state(user, now=now) == before
    assert (store.r.get(f"{store.p}dataset") or b"").decode().startswith(fingerprint(world) + "@")
    assert store.bestsellers(5) and store.trending(5)
