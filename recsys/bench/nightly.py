"""`recsys bench --only nightly`: the nightly job (`recsys nightly`) on the running stack's world, timed
end to end (`pipeline.nightly.seconds`; target <= 10 minutes for 12k SKUs on this 2-core machine).

The job's release would start a canary against the demo's live models: the bench aborts it afterwards
(its versions go back to `candidate`), so the stack serves what it served before.
"""

from __future__ import annotations

import psycopg

COMMAND = "recsys bench --only nightly"


def bench_nightly(cfg) -> dict[str, tuple[float, str]]:
    from recsys.release import canary as canaries
    from recsys.services import Postgres
    from recsys.train.nightly import run

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    result = run(cfg)
    if result["release"] == "canary":
        with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
            canaries.abort(conn, result["canary_id"], "bench", "the nightly benchmark's release, not a real one")
    print(f"  nightly on {items} SKUs and {events} events: {result['seconds']:.0f} s ({result['release']})")
    return {"pipeline.nightly.seconds": (result["seconds"], f"s ({items} SKUs, {events} events)")}
