"""Shadow runs: the rule set in shadow applied beside the live one on a sample of requests, never served.

The request thread only decides whether a request is sampled (a salted hash of its user, session or
request id: `rules.shadow.share`) and hands the ranked pool and the live answer to a queue; a thread
of the replica's own arranges the slots under the shadow set after the response has gone, compares
the two rails, and writes one row per run to `rule_shadow_runs` every `rules.shadow.flush_s`. A full
queue drops runs (counted), so a slow Postgres never backs up into serving. `report()` aggregates.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from copy import copy
from typing import Callable

import numpy as np
import psycopg

from recsys.rules.store import label

log = logging.getLogger(__name__)

INSERT = ("INSERT INTO rule_shadow_runs (version, request_id, surface, live_version, live_skus, shadow_skus, overlap, "
          "pins_applied, pins_honoured, blocked_removed, live_margin, shadow_margin, live_price, shadow_price, "
          "live_long_tail, shadow_long_tail, live_ms, shadow_ms) VALUES "
          "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def _version_number(version_label: str | None) -> int | None:
    return int(version_label.removeprefix("rules-v")) if version_label else None


class ShadowRunner:
    def __init__(self, cfg, res, build_slots: Callable[[], object]):
        s = cfg.rules.shadow
        self.res, self._build_slots, self._slots = res, build_slots, None
        self.head_skus = int(s.head_skus)
        self.flush_s = float(s.flush_s)
        self.queue: queue.Queue = queue.Queue(maxsize=int(s.max_queued))
        self.dropped = 0
        self.recorded = 0
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def offer(self, req, user, candidates, scores, response: dict, live_ms: float) -> None:
        """On the request path: a hash, and at most a queue put."""
        book = self.res.rules
        shadow = book.shadow
        if shadow is None or not book.sampled(req.user_id, req.session_id, req.request_id):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="rules-shadow", daemon=True)
            self._thread.start()
        try:
            self._idle.clear()
            self.queue.put_nowait((shadow, req, user, candidates, scores,
                                   [i["sku"] for i in response["items"]], response["rule_set_version"], live_ms))
        except queue.Full:
            self.dropped += 1

    def slots_of(self):
        """The slots stage the shadow set is arranged with (topology split: one of this replica's own)."""
        if self._slots is None:
            self._slots = self._build_slots()
        return self._slots

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until every offered run is recorded (tests)."""
        return self._idle.wait(timeout)

    def _work(self) -> None:
        rows: list[tuple] = []
        next_flush = time.monotonic() + self.flush_s
        while True:
            try:
                job = self.queue.get(timeout=self.flush_s)
            except queue.Empty:
                job = None
            if job is not None:
                try:
                    rows.append(self._run(*job))
                except Exception:
                    log.warning("shadow run failed", exc_info=True)
            if rows and (time.monotonic() >= next_flush or self.queue.empty()):
                rows = self._write(rows)
                next_flush = time.monotonic() + self.flush_s
            if not rows and self.queue.empty():
                self._idle.set()

    def _run(self, shadow, req, user, candidates, scores, live_skus, live_version, live_ms) -> tuple:
        slots = self.slots_of()
        started = time.perf_counter()
        req = copy(req)
        req.explain = True   # the shadow run reports what its rules did
        slate = slots.arrange(req, user, slots.ranked(candidates, scores), shadow)
        shadow_ms = (time.perf_counter() - started) * 1000
        shadow_skus = [i["sku"] for i in slate.items]
        k = max(len(live_skus), 1)
        table = shadow.table
        from recsys.serve.stages.slots import request_facts   # serving code: imported where it runs

        facts = request_facts(table, req, user)
        blocked = shadow.plan(req.surface, facts).blocked(table.rows(live_skus), facts)
        pins = slate.rules["pins"] if slate.rules else {}
        head = {sku for sku, _ in self.res.bestsellers[: self.head_skus]}

        def mean(column: str, skus: list[str]) -> float | None:
            values = table.columns[column][table.rows(skus)] if skus else np.array([])
            values = values[~np.isnan(values)]
            return float(values.mean()) if len(values) else None

        def long_tail(skus: list[str]) -> float | None:
            return sum(s not in head for s in skus) / len(skus) if skus else None

        return (_version_number(shadow.version), req.request_id, req.surface, _version_number(live_version),
                live_skus, shadow_skus, len(set(live_skus) & set(shadow_skus)) / k,
                len(pins), sum(p["honoured"] for p in pins.values()), int(blocked.sum()),
                mean("margin", live_skus), mean("margin", shadow_skus), mean("price", live_skus),
                mean("price", shadow_skus), long_tail(live_skus), long_tail(shadow_skus), live_ms, shadow_ms)

    def _write(self, rows: list[tuple]) -> list[tuple]:
        """Rows written, or kept for the next flush while Postgres is down (at most max_queued)."""
        try:
            with self.res.pool.connection(timeout=2) as conn:
                with conn.cursor() as cur:
                    cur.executemany(INSERT, rows)
            self.recorded += len(rows)
            return []
        except Exception as exc:
            log.warning("shadow runs not written yet: %s", exc)
            time.sleep(self.flush_s)
            return rows[-self.queue.maxsize:]


def report(conn: psycopg.Connection, version: int, catalog_size: int | None = None) -> dict:
    """What a rule set did in shadow against live, over all its runs and per surface."""
    per = conn.execute(
        "SELECT surface, count(*), avg(overlap), sum(pins_applied), sum(pins_honoured), sum(blocked_removed), "
        "avg(live_margin), avg(shadow_margin), avg(live_price), avg(shadow_price), avg(live_long_tail), "
        "avg(shadow_long_tail), avg(live_ms), percentile_cont(0.5) WITHIN GROUP (ORDER BY shadow_ms), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY shadow_ms), min(at), max(at) "
        "FROM rule_shadow_runs WHERE version = %s GROUP BY ROLLUP (surface) ORDER BY surface NULLS FIRST",
        (version,)).fetchall()
    coverage = dict(conn.execute(
        "SELECT side, count(DISTINCT sku) FROM ("
        " SELECT 'live' AS side, unnest(live_skus) AS sku FROM rule_shadow_runs WHERE version = %s"
        " UNION ALL SELECT 'shadow', unnest(shadow_skus) FROM rule_shadow_runs WHERE version = %s) s GROUP BY side",
        (version, version)).fetchall())

    def rounded(x, digits=4):
        return None if x is None else round(float(x), digits)

    def block(row) -> dict:
        (_, runs, overlap, pins, honoured, blocked, lm, sm, lp, sp, ltail, stail, live_ms, p50, p95, first, last) = row
        return {"runs": runs, "overlap_at_k": rounded(overlap),
                "pins": {"applied": int(pins or 0), "honoured": int(honoured or 0),
                         "share": rounded(honoured / pins) if pins else None},
                "blocked_removed": int(blocked or 0),
                "margin": {"live": rounded(lm), "shadow": rounded(sm)},
                "price": {"live": rounded(lp, 2), "shadow": rounded(sp, 2)},
                "long_tail_share": {"live": rounded(ltail), "shadow": rounded(stail)},
                "extra_ms": {"live_slots_mean": rounded(live_ms, 3), "shadow_p50": rounded(p50, 3),
                             "shadow_p95": rounded(p95, 3)},
                "first_run": first.isoformat() if first else None, "last_run": last.isoformat() if last else None}

    overall = block(per[0]) if per and per[0][1] else block((None, 0) + (None,) * 15)
    distinct = {side: int(coverage.get(side, 0)) for side in ("live", "shadow")}
    overall["coverage"] = {"distinct_skus": distinct, **({f"{side}_share": rounded(n / catalog_size)
                                                          for side, n in distinct.items()} if catalog_size else {})}
    return {"version": version, "label": label(version), **overall,
            "surfaces": {row[0]: block(row) for row in per[1:]}}
