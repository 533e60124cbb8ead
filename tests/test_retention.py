"""Events and impressions are range-partitioned by month; replays are logged once; `recsys retention`
drops whole partitions older than the retention and keeps the rest."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from recsys.db import partitions
from recsys.features.event_log import COLUMNS, STAGING, insert_sql, write_rows
from recsys.features.impression_log import write_impressions
from recsys.services import Postgres
from tests.conftest import TEST_OVERRIDES, make_cfg

NOW = datetime.now(timezone.utc)


def event(event_id: str, ts: datetime, user: str = "retention-user") -> tuple:
    values = {"event_id": event_id, "type": "product_viewed", "user_id": user, "sku": "RET-SKU", "ts": ts}
    return tuple(values.get(c) for c in COLUMNS)


def impression(request_id: str, ts: datetime) -> dict:
    return {"request_id": request_id, "ts": ts.timestamp(), "surface": "homepage_hero", "user_id": "retention-user",
            "skus": ["A", "B"], "sources": ["als", "trending"]}


def partition_of(conn, table: str, key: str, value: str) -> list[str]:
    return [r[0] for r in conn.execute(
        f"SELECT tableoid::regclass::text FROM {table} WHERE {key} = %s ORDER BY ts", (value,))]


def month_name(table: str, ts: datetime) -> str:
    return f"{table}_p{ts.year:04d}_{ts.month:02d}"


@pytest.fixture
def tag(pg):
    tag = f"ret-{uuid.uuid4().hex[:8]}"
    yield tag
    pg.execute("DELETE FROM events WHERE event_id LIKE %s", (f"{tag}%",))
    pg.execute("DELETE FROM impressions WHERE request_id LIKE %s", (f"{tag}%",))


def test_events_and_impressions_are_partitioned_by_month_without_a_default(pg):
    for table, key in (("events", ["event_id", "ts"]), ("impressions", ["request_id", "ts"])):
        strategy = pg.execute("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = %s::regclass",
                              (table,)).fetchone()
        assert strategy == ("r",)
        pk = [r[0] for r in pg.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)", (table,))]
        assert pk == key
        bounds = [r[0] for r in pg.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass", (table,))]
        assert bounds and not any("DEFAULT" in b for b in bounds)
        names = {p.name for p in partitions.partitions(pg, table)}
        assert {month_name(table, NOW), month_name(table, partitions._next_month(NOW))} <= names  # ahead


def test_rows_land_in_their_monthly_partition(pg, tag):
    old = NOW - timedelta(days=70)
    cross = datetime(NOW.year - 2, 12, 31, 23, 59, 59, tzinfo=timezone.utc)      # a year's last second
    local = datetime(NOW.year - 2, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))  # 22:30 UTC on Dec 31
    rows = [event(f"{tag}-a", NOW - timedelta(minutes=1)), event(f"{tag}-b", old), event(f"{tag}-c", cross),
            event(f"{tag}-d", local)]
    assert write_rows(pg, rows) == 4
    assert partition_of(pg, "events", "event_id", f"{tag}-a") == [month_name("events", NOW - timedelta(minutes=1))]
    assert partition_of(pg, "events", "event_id", f"{tag}-b") == [month_name("events", old)]
    assert partition_of(pg, "events", "event_id", f"{tag}-c") == [f"events_p{NOW.year - 2}_12"]
    assert partition_of(pg, "events", "event_id", f"{tag}-d") == [f"events_p{NOW.year - 3}_12"]
    # Timestamps as ISO strings (the database reads them) land the same way.
    assert write_rows(pg, [event(f"{tag}-e", (old - timedelta(days=31)).isoformat())]) == 1
    assert partition_of(pg, "events", "event_id", f"{tag}-e") == [month_name("events", old - timedelta(days=31))]

    assert write_impressions(pg, [impression(f"{tag}-i1", NOW), impression(f"{tag}-i2", old)]) == 2
    assert partition_of(pg, "impressions", "request_id", f"{tag}-i2") == [month_name("impressions", old)]


def test_a_replayed_event_is_logged_once(pg, tag):
    ts = datetime(NOW.year - 1, 3, 31, 23, 58, tzinfo=timezone.utc)   # next to a partition boundary
    assert write_rows(pg, [event(f"{tag}-1", ts), event(f"{tag}-1", ts)]) == 1           # twice in one batch
    assert write_rows(pg, [event(f"{tag}-1", ts)]) == 0                                  # the same replayed
    assert write_rows(pg, [event(f"{tag}-1", ts + timedelta(minutes=5))]) == 0          # re-stamped, next month
    assert write_rows(pg, [event(f"{tag}-1", ts - timedelta(days=3))]) == 0             # within the window
    assert write_rows(pg, [event(f"{tag}-1", ts + timedelta(minutes=5)), event(f"{tag}-2", ts)]) == 1
    assert len(partition_of(pg, "events", "event_id", f"{tag}-1")) == 1
    # Outside the dedupe window the id is another event (ids are unique within the window only).
    assert write_rows(pg, [event(f"{tag}-1", ts + timedelta(days=30))], dedupe_s=14 * 86400) == 1

    assert write_impressions(pg, [impression(f"{tag}-r", NOW)]) == 1
    assert write_impressions(pg, [impression(f"{tag}-r", NOW)]) == 0


def test_a_month_dropped_behind_the_writers_back_is_created_again(pg, tag):
    ts = datetime(NOW.year - 4, 6, 15, tzinfo=timezone.utc)
    assert write_rows(pg, [event(f"{tag}-x", ts)]) == 1
    assert write_impressions(pg, [impression(f"{tag}-x", ts)]) == 1
    # Dropped behind this process's back: it still believes both months exist.
    pg.execute(f"DROP TABLE {month_name('events', ts)}, {month_name('impressions', ts)}")
    assert write_rows(pg, [event(f"{tag}-y", ts)]) == 1
    assert write_impressions(pg, [impression(f"{tag}-y", ts)]) == 1
    assert partition_of(pg, "events", "event_id", f"{tag}-y") == [month_name("events", ts)]


def test_a_naive_timestamp_lands_where_postgres_reads_it(pg, tag):
    """Postgres reads a naive timestamp in the session's time zone; the writer learns the month from
    the failed insert and creates the partition Postgres wants."""
    pg.execute("SET TimeZone = 'Asia/Tokyo'")
    naive = datetime(NOW.year - 5, 5, 1, 3, 0)                     # 18:00 UTC on 30 April
    assert write_rows(pg, [event(f"{tag}-tz", naive)]) == 1
    assert partition_of(pg, "events", "event_id", f"{tag}-tz") == [f"events_p{NOW.year - 5}_04"]


def test_the_replay_check_probes_the_index_and_never_scans_the_log(pg, tag):
    """The anti-join stays a per-row probe of the primary key, pruned to the window's partitions: a
    hash join over the whole log would cost a full scan per batch as the log grows."""
    rows = [event(f"{tag}-bulk-{i}", NOW - timedelta(seconds=i)) for i in range(2_000)]
    assert write_rows(pg, rows) == 2_000
    with pg.transaction():
        pg.execute(STAGING)
        with pg.cursor() as cur:
            with cur.copy(f"COPY events_staging ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            plan = "\n".join(r[0] for r in cur.execute("EXPLAIN (ANALYZE, COSTS OFF) " + insert_sql(14 * 86400)))
        raise psycopg.Rollback()
    assert "Tuples Inserted: 0" in plan and "Hash Anti Join" not in plan, plan
    # An empty month (next month's, made ahead) may be planned as a scan, but the window prunes it.
    assert all("never executed" in line for line in plan.splitlines() if "Seq Scan on events_p" in line), plan
    assert "Index" in plan and "loops=2000" in plan, plan


@pytest.fixture(scope="module")
def retention_db(stack):
    """A database of its own: retention drops partitions, which the suite's shared log must keep."""
    name = f"recsys_retention_{uuid.uuid4().hex[:6]}"
    cfg = make_cfg(f"services.postgres.database={name}")
    Postgres(cfg).start()   # creates the database and migrates it
    yield cfg, [f"services.postgres.database={name}"]
    with Postgres(stack)._admin() as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def recsys(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_recsys_retention_drops_only_whole_old_partitions(retention_db):
    cfg, overrides = retention_db
    old_event, kept_event = NOW - timedelta(days=500), NOW - timedelta(days=300)
    old_imp, kept_imp = NOW - timedelta(days=200), NOW - timedelta(days=10)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        write_rows(conn, [event("old", old_event), event("kept", kept_event), event("now", NOW)])
        write_impressions(conn, [impression("old", old_imp), impression("kept", kept_imp)])
        # the next month's partition is created ahead by `recsys retention`
        conn.execute(f"DROP TABLE IF EXISTS {month_name('events', partitions._next_month(NOW))}")

        dry = recsys("retention", "--dry-run", *TEST_OVERRIDES, *overrides).stdout
        assert f"would drop {month_name('events', old_event)}" in dry
        assert f"would drop {month_name('impressions', old_imp)}" in dry
        assert month_name("events", kept_event) not in dry
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (3,)      # nothing dropped

        out = recsys("retention", *TEST_OVERRIDES, *overrides).stdout
        assert f"dropped {month_name('events', old_event)}" in out and "with 1 rows" in out
        assert f"dropped {month_name('impressions', old_imp)}" in out
        assert f"created {month_name('events', partitions._next_month(NOW))}" in out
        assert {r[0] for r in conn.execute("SELECT event_id FROM events")} == {"kept", "now"}
        assert {r[0] for r in conn.execute("SELECT request_id FROM impressions")} == {"kept"}
        names = {p.name for p in partitions.partitions(conn, "events")}
        assert month_name("events", old_event) not in names
        assert {month_name("events", kept_event), month_name("events", partitions._next_month(NOW))} <= names
        # The old month can take rows again (a late event): its partition comes back on demand.
        assert write_rows(conn, [event("late", old_event)]) == 1

        again = recsys("retention", *TEST_OVERRIDES, *overrides).stdout
        assert f"dropped {month_name('events', old_event)}" in again
        assert "impressions" not in again.split("kept:")[0]                     # nothing left to drop there
