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


def test_a_new_world_retires_the_models_of_the_previous_one(world):
    """Loading a different dataset (here into a scratch database on the suite's server) aborts a running
    canary and retires every live, canary and candidate model: their SKUs and vector sets are gone, and
    the next trained version must go live on its own rather than enter a canary against them."""
    import psycopg

    from recsys import registry
    from recsys.bench.dashboard import scratch_dsn
    from recsys.data import load_postgres
    from recsys.db.migrate import migrate
    from recsys.release import canary as canaries
    from recsys.services import Postgres

    dsn, name = Postgres(world).dsn, f"{world.services.postgres.database}_world_swap"
    with psycopg.connect(scratch_dsn(dsn, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(scratch_dsn(dsn, name), autocommit=True) as conn:
            migrate(conn)
            for version, stage in (("ranker-old-live", "live"), ("ranker-old-new", "candidate"),
                                   ("als-old-live", "live")):
                registry.register(conn, version, version.split("-")[0], "/nonexistent")
                registry.set_gates(conn, version, {"passed": True, "checks": []})
                registry.set_stage(conn, version, stage)
            c = canaries.start(conn, world, {"ranker": "ranker-old-new"}, "test", "a canary of the old world")
            message = load_postgres(world, conn)
            assert "3 models of the previous world retired" in message
            assert {registry.get(conn, v).stage for v in ("ranker-old-live", "ranker-old-new", "als-old-live")} == \
                {"retired"}
            assert registry.live(conn, "ranker") is None and canaries.running(conn) is None
            entry = canaries.log(conn, c.canary_id)[-1]
            assert entry["action"] == "abort" and entry["actor"] == "data load" and "replaced the world" in entry["reason"]
            assert "already loaded" in load_postgres(world, conn)   # the same world again retires nothing
    finally:
        with psycopg.connect(scratch_dsn(dsn, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
