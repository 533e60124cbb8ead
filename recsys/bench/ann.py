"""The approximate nearest-neighbour query alone: pgvector HNSW over the live two-tower set (purpose
'retrieval') and the live content set, timed as serving issues it (`vectors.search` on a prepared
connection: one round trip), its recall@K against exact search with the same metric (cosine: both
sides normalised), and exact search in numpy over the same matrix beside it.

The two-tower set is queried with user vectors (what serving sends it: the precomputed ones in Redis),
the content set with item vectors. The curve (m x ef_construction x ef_search, `bench.ann_curve`) is
measured on a scratch copy of the two-tower set: a table of its own, dropped afterwards, so the live
rows and index are never touched. It goes to docs/benchmarks-ann.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from datetime import date
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from recsys.catalog import vectors

SCRATCH_PREFIX = "ann_scratch_"
COMMAND = ".venv/bin/recsys bench --only ann"
WARMUP = 20
BUSY_FLAG_PCT = 30.0   # a row measured while the machine was busier than this is flagged
PAGE_QUERIES = 50      # queries whose pages touched are counted (EXPLAIN ANALYZE) per run


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def user_queries(client, prefix: str, version: str, dim: int, n: int, rng) -> np.ndarray:
    """Up to n user vectors of `version` from Redis (`{prefix}u:{<id>}:vec`), a seeded sample of all
    of them (keys sorted first, so the sample does not depend on the SCAN order)."""
    keys = sorted(client.scan_iter(match=_glob_escape(prefix) + "u:*:vec", count=1000))
    picked, out = rng.permutation(len(keys)), []
    for start in range(0, len(picked), 256):
        pipe = client.pipeline(transaction=False)
        for i in picked[start:start + 256]:
            pipe.hmget(keys[i], ["version", "vector"])
        for got_version, raw in pipe.execute():
            if got_version is not None and got_version.decode() == version and raw and len(raw) == 4 * dim:
                out.append(np.frombuffer(raw, dtype=np.float32))
                if len(out) == n:
                    return np.stack(out)
    return np.stack(out) if out else np.zeros((0, dim), np.float32)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def exact_topk(matrix: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """What an in-memory exact search does: one float32 mat-vec, argpartition, the k sorted."""
    scores = matrix @ query
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def time_exact(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[list[float], list[set[int]]]:
    """(ms per query, the exact top-k of each) over the normalised matrix and queries."""
    for q in queries[:WARMUP]:
        exact_topk(matrix, q, k)
    ms, truth = [], []
    for q in queries:
        start = time.perf_counter()
        top = exact_topk(matrix, q, k)
        ms.append((time.perf_counter() - start) * 1000)
        truth.append(set(top.tolist()))
    return ms, truth


def exact_percentiles(matrix: np.ndarray, queries: np.ndarray, k: int, repeats: int = 1,
                      idle: "Idle | None" = None) -> tuple[float, float]:
    """(p50, p95) ms of the in-memory exact search, the best of `repeats` runs (as `_best`)."""
    p50s, p95s = [], []
    for _ in range(max(1, repeats)):
        if idle:
            idle.wait()
        ms = time_exact(matrix, queries, k)[0]
        p50s.append(float(np.percentile(ms, 50)))
        p95s.append(float(np.percentile(ms, 95)))
    return min(p50s), min(p95s)


def geometry(matrix: np.ndarray, queries: np.ndarray, rng, sample: int = 1000) -> dict[str, float]:
    """Why a set is easy or hard for a graph index, on normalised rows: how far the queries lie from the
    items (their best item's cosine) next to how close items lie to each other (an item's nearest other
    item), and how one-sided the items are (the length of their mean) with the queries' component along it."""
    items = matrix[rng.choice(len(matrix), size=min(sample, len(matrix)), replace=False)]
    near = items @ matrix.T
    near[near > 1 - 1e-6] = -1.0   # the item itself
    mean = matrix.mean(axis=0)
    return {"query_best_cos": float(np.median((unit(queries) @ matrix.T).max(axis=1))),
            "item_nearest_cos": float(np.median(near.max(axis=1))),
            "item_mean_length": float(np.linalg.norm(mean)),
            "query_along_mean": float(np.median(unit(queries) @ (mean / max(np.linalg.norm(mean), 1e-12))))}


def cpu_busy_pct(seconds: float = 0.5) -> float:
    """The whole machine's CPU use over `seconds` (this process sleeps meanwhile), from /proc/stat."""
    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]   # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 100.0 * (1 - (idle1 - idle0) / max(total1 - total0, 1))


class Idle:
    """Before each timed run: wait until the machine's CPU use over 0.5 s is under `max_busy_pct`, at
    most `max_wait_s` per run and `budget_s` in all (a busy machine flags its rows instead of stalling
    the bench for long); `wait` returns the last reading."""

    def __init__(self, max_busy_pct: float = 100.0, max_wait_s: float = 0.0, budget_s: float = 0.0):
        self.max_busy_pct, self.max_wait_s, self.left_s = max_busy_pct, max_wait_s, budget_s

    def wait(self) -> float:
        start = time.monotonic()
        deadline = start + min(self.max_wait_s, max(self.left_s, 0.0))
        busy = cpu_busy_pct()
        while busy > self.max_busy_pct and time.monotonic() < deadline:
            busy = cpu_busy_pct()
        self.left_s -= time.monotonic() - start
        return busy


def _settings(conn: psycopg.Connection, ef_search: int, iterative: str | None) -> None:
    vectors.set_ef_search(conn, ef_search)
    if iterative is not None:
        conn.execute(sql.SQL("SET hnsw.iterative_scan = {}").format(sql.Literal(iterative)))


def uses_index(conn: psycopg.Connection, version: str, dim: int, query: np.ndarray, k: int, table: str) -> bool:
    """Whether the planner answers the search through the HNSW index at the connection's settings (at a
    high ef_search pgvector's cost estimate can make a sequential scan, an exact and slow search, win)."""
    plan = "\n".join(r[0] for r in conn.execute(
        sql.SQL("EXPLAIN ") + vectors.search_sql(version, dim, table), {"q": np.asarray(query, np.float32), "k": k}))
    return "Index Scan" in plan


def pages_per_search(conn: psycopg.Connection, version: str, dim: int, queries: np.ndarray, k: int,
                     table: str = vectors.TABLE) -> float:
    """The median number of buffer pages one search touches (EXPLAIN ANALYZE BUFFERS, shared hits and
    reads) at the connection's settings: the work of a setting, free of the timing noise of a shared
    machine (the ranking of settings by it matches their latency on a quiet one)."""
    explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, COSTS OFF) ") + vectors.search_sql(version, dim, table)
    pages = []
    for q in queries:
        plan = "\n".join(r[0] for r in conn.execute(explain, {"q": np.asarray(q, np.float32), "k": k}))
        top = next((line for line in plan.splitlines() if "Buffers:" in line), "")
        pages.append(sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", top)))
    return float(np.median(pages))


def _timed(conn, version, dim, index, queries, truth, k, table) -> tuple[list[float], list[float]]:
    for q in queries[:WARMUP]:
        vectors.search(conn, version, dim, q, k, table)
    ms, recalls = [], []
    for q, exact in zip(queries, truth):
        start = time.perf_counter()
        found = vectors.search(conn, version, dim, q, k, table)
        ms.append((time.perf_counter() - start) * 1000)
        recalls.append(len({index[sku] for sku, _ in found} & exact) / k)
    return ms, recalls


def _run(conn, version, dim, index, queries, truth, k, ef_search, table, iterative, idle) -> dict:
    """One run of the queries at one setting: its p50/p95 ms, recall and plan."""
    _settings(conn, ef_search, iterative)
    try:
        busy = idle.wait() if idle else 0.0
        on_index = uses_index(conn, version, dim, queries[0], k, table)
        ms, recalls = _timed(conn, version, dim, index, queries, truth, k, table)
        pages = pages_per_search(conn, version, dim, queries[:PAGE_QUERIES], k, table)
    finally:
        if iterative is not None:
            conn.execute("RESET hnsw.iterative_scan")
    return {"ef_search": ef_search, "iterative": iterative or "off", "index_scan": on_index,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "recall": float(np.mean(recalls)), "recall_p5": float(np.percentile(recalls, 5)), "pages": pages,
            "cpu_busy_pct": busy}


def _best(runs: list[dict]) -> dict:
    """Runs of one setting as one row: the lowest p50 and p95 (other processes on the machine only ever
    add time, so the least disturbed run is the closest to the setting's own cost); the recall is the
    same in every run (the search is deterministic)."""
    row = dict(runs[0])
    row["p50_ms"] = min(r["p50_ms"] for r in runs)
    row["p95_ms"] = min(r["p95_ms"] for r in runs)
    row["cpu_busy_pct"] = min(r["cpu_busy_pct"] for r in runs)
    row["index_scan"] = all(r["index_scan"] for r in runs)
    return row


def measure(conn: psycopg.Connection, version: str, dim: int, index: dict[str, int], queries: np.ndarray,
            truth: list[set[int]], k: int, ef_search: int, table: str = vectors.TABLE,
            iterative: str | None = None, repeats: int = 1, idle: Idle | None = None) -> dict:
    """p50/p95 ms of `vectors.search` at this ef_search (the connection as serving prepares it) and
    recall@k against `truth` (row indices into the set's skus, `index` maps sku -> row); with repeats,
    the best of that many runs (`_best`); with `idle`, each run first waits for a quieter machine."""
    return _best([_run(conn, version, dim, index, queries, truth, k, ef_search, table, iterative, idle)
                  for _ in range(max(1, repeats))])


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True   # not a pid of ours, or another user's process: leave it
    return True


@contextlib.contextmanager
def scratch_copy(conn: psycopg.Connection, version: str):
    """A table of this process's own with item_vectors' columns and rows (all sets: the planner then
    weighs an index scan against the same table size as on item_vectors) and no index, dropped on the
    way out: the curve's indexes are built on it, never on item_vectors. The rows of `version` must exist."""
    table = f"{SCRATCH_PREFIX}{os.getpid()}"
    drop = sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table))
    conn.execute(drop)
    for (left,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                (SCRATCH_PREFIX.replace("_", r"\_") + "%",)).fetchall():
        if not _alive(left[len(SCRATCH_PREFIX):]):   # left behind by a bench that was killed
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(left)))
    try:
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE item_vectors INCLUDING DEFAULTS)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM item_vectors").format(sql.Identifier(table)))
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        if not conn.autocommit:
            conn.commit()
        yield table
    finally:
        if not conn.autocommit:
            conn.rollback()
        conn.execute(drop)
        if not conn.autocommit:
            conn.commit()


def build_scratch_index(conn: psycopg.Connection, table: str, version: str, dim: int, m: int,
                        ef_construction: int) -> tuple[str, float, float]:
    """(index name, build seconds, size MB) of an HNSW index on the scratch table, built by the
    statement write_vectors uses."""
    start = time.perf_counter()
    name = vectors.create_index(conn, version, dim, m, ef_construction, table=table, name=f"{table}_hnsw")
    seconds = time.perf_counter() - start
    size = conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()[0]
    return name, seconds, size / 2**20


def curve(conn: psycopg.Connection, version: str, dim: int, skus: list[str], queries: np.ndarray,
          truth: list[set[int]], k: int, ms: list[int], efcs: list[int], ef_searches: list[int],
          iterative_ef_searches: list[int] = (), repeats: int = 1, idle: Idle | None = None,
          log=print) -> list[dict]:
    """For each m x ef_construction: an index on a scratch copy of the set, then latency and recall at
    each ef_search (and with hnsw.iterative_scan = strict_order at each of `iterative_ef_searches`,
    which may be below k)."""
    index = {sku: i for i, sku in enumerate(skus)}
    rows = []
    with scratch_copy(conn, version) as table:
        for m in ms:
            for efc in efcs:
                name, build_s, size_mb = build_scratch_index(conn, table, version, dim, m, efc)
                settings = [(ef, None) for ef in ef_searches if ef >= k]
                settings += [(ef, "strict_order") for ef in iterative_ef_searches]
                runs = {setting: [] for setting in settings}
                for _ in range(max(1, repeats)):   # interleaved: a burst of load spoils one run of a setting
                    for ef, iterative in settings:
                        runs[(ef, iterative)].append(
                            _run(conn, version, dim, index, queries, truth, k, ef, table, iterative, idle))
                for setting in settings:
                    row = {"m": m, "ef_construction": efc, "build_s": build_s, "size_mb": size_mb,
                           **_best(runs[setting])}
                    rows.append(row)
                    log("  " + format_row(row))
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
    return rows


def format_row(r: dict) -> str:
    it = "" if r["iterative"] == "off" else f" iterative {r['iterative']}"
    flags = ("" if r["index_scan"] else " [sequential scan: exact]") + (
        f" [machine {r['cpu_busy_pct']:.0f}% busy]" if r.get("cpu_busy_pct", 0) > BUSY_FLAG_PCT else "")
    return (f"m {r['m']:>2} ef_construction {r['ef_construction']:>3} (build {r['build_s']:5.1f} s, "
            f"{r['size_mb']:5.1f} MB) ef_search {r['ef_search']:>3}{it}: p50 {r['p50_ms']:.2f} ms, "
            f"p95 {r['p95_ms']:.2f} ms, {r['pages']:.0f} pages, recall {r['recall']:.4f} "
            f"(p5 {r['recall_p5']:.3f}){flags}")


def choose(rows: list[dict], min_recall: float, max_p95_ms: float) -> tuple[dict | None, bool]:
    """(row, whether it meets both targets). The cheapest row through the index with recall >= min_recall
    and p95 <= max_p95_ms, cheapest by the pages a search touches (its work: timings on a shared machine
    are too noisy to rank close settings), then p95. When no row meets both, the cheapest that meets the
    recall target (None when none does)."""
    good = [r for r in rows if r["recall"] >= min_recall and r["index_scan"]]
    ok = [r for r in good if r["p95_ms"] <= max_p95_ms]
    pool = ok or good
    if not pool:
        return None, False
    return min(pool, key=lambda r: (r["pages"], r["p95_ms"])), bool(ok)


def pgvector_version(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return row[0] if row else "?"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _measure_set(conn, cfg_emb, purpose: str, version: str, dim: int, skus, matrix, queries, k: int,
                 repeats: int = 1, idle: Idle | None = None) -> tuple[dict, dict]:
    """The set at its configured parameters (`vectors.hnsw_params`): the live index itself when it was
    built with them, else a scratch copy built with them (and the live index as it is, beside).
    Returns (row, info)."""
    m, efc, ef = vectors.hnsw_params(cfg_emb, purpose)
    truth = time_exact(matrix, unit(queries), k)[1]
    index = {sku: i for i, sku in enumerate(skus)}
    live = vectors.index_params(conn, vectors.index_name(version))
    info = {"configured": (m, efc, ef), "live_index": live}
    if live and (live["m"], live["ef_construction"]) == (m, efc):
        row = measure(conn, version, dim, index, queries, truth, k, ef, repeats=repeats, idle=idle)
        info["where"] = "the live index"
    else:
        if live:  # what serving gets today, until the set is written again with the configured parameters
            info["live_row"] = measure(conn, version, dim, index, queries, truth, k, ef, repeats=repeats, idle=idle)
        with scratch_copy(conn, version) as table:
            build_scratch_index(conn, table, version, dim, m, efc)
            row = measure(conn, version, dim, index, queries, truth, k, ef, table, repeats=repeats, idle=idle)
        info["where"] = "a scratch copy built with them; the live index was built with " + (
            f"m {live['m']}, ef_construction {live['ef_construction']}" if live else "none")
    row["exact_p50_ms"], row["exact_p95_ms"] = exact_percentiles(matrix, unit(queries), k, repeats, idle)
    return row, info


def _describe(name: str, version: str, n: int, dim: int, row: dict, info: dict, k: int) -> list[str]:
    m, efc, ef = info["configured"]
    lines = [f"{name} {version} ({n} x {dim}) at the configured m {m}, ef_construction {efc}, ef_search {ef} "
             f"({info['where']}): p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms, recall@{k} "
             f"{row['recall']:.4f}{'' if row['index_scan'] else ' (the planner chose a sequential scan)'}; "
             f"exact search in numpy (float32 mat-vec, argpartition, the {k} sorted): "
             f"p50 {row['exact_p50_ms']:.3f} ms, p95 {row['exact_p95_ms']:.3f} ms"]
    if "live_row" in info:
        r, live = info["live_row"], info["live_index"]
        lines.append(f"{name} live index as built (m {live['m']}, ef_construction {live['ef_construction']}) at "
                     f"ef_search {ef}: p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, recall@{k} "
                     f"{r['recall']:.4f}; the configured parameters apply when the set is written again "
                     "(the next `recsys train`)")
    return lines


def bench_ann(cfg, n_queries: int, k: int, docs: Path | None = None) -> dict[str, tuple[float, str]]:
    from recsys.bench.report import DOCS, machine
    from recsys.features.online_store import OnlineStore
    from recsys.services import Postgres

    docs = docs or DOCS
    b, emb = cfg.bench, cfg.embedding
    repeats = int(b.get("ann_repeats", 1))
    idle = Idle(float(b.get("ann_idle_cpu_pct", 100)), float(b.get("ann_idle_wait_s", 0)),
                float(b.get("ann_idle_budget_s", 0)))
    idle_text = (f"each run after the machine's CPU use over 0.5 s fell under {idle.max_busy_pct:g}% (waiting at "
                 f"most {idle.max_wait_s:g} s a run, {idle.left_s:g} s in all: rows measured on a busier machine "
                 "say so)")
    rng = np.random.default_rng(int(cfg.seed))
    lines: list[str] = []
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        vectors.prepare(conn)
        pgv = pgvector_version(conn)
        # The two-tower set, queried with user vectors (what serving sends it).
        live = vectors.live_version(conn, "retrieval")
        if live is None:
            raise RuntimeError("no live two-tower vector set: run `recsys train` first")
        version, dim = live
        skus, raw = vectors.read_vectors(conn, version)
        matrix = unit(raw)
        queries = user_queries(OnlineStore.from_config(cfg).r, cfg.services.redis.key_prefix, version, dim,
                               n_queries, rng)
        source = f"{len(queries)} user vectors of {version} sampled from Redis"
        if len(queries) == 0:
            queries = matrix[rng.choice(len(skus), size=min(n_queries, len(skus)), replace=False)]
            source = (f"NO user vectors of {version} in Redis: {len(queries)} of its item vectors instead "
                      "(easier than users': recall is overstated)")
        g = geometry(matrix, queries, np.random.default_rng(int(cfg.seed)))
        item_norms, query_norms = np.linalg.norm(raw, axis=1), np.linalg.norm(queries, axis=1)
        lines.append(
            f"The two-tower set's geometry: vector norms {item_norms.min():.3f}-{item_norms.max():.3f} (items), "
            f"{query_norms.min():.3f}-{query_norms.max():.3f} (queries), so cosine ranks as the model's dot "
            f"product does. A query's best item is at cosine {g['query_best_cos']:.2f} (median), while an item's "
            f"nearest other item is at {g['item_nearest_cos']:.2f}: the items crowd one side of the sphere (their "
            f"mean has length {g['item_mean_length']:.2f}) and the queries point away from it (component "
            f"{g['query_along_mean']:+.2f} along it). A graph built over the items is walked from far outside "
            "them, and each query's 120 best lie spread along the crowd's edge, so the search must keep many more "
            "candidates (ef_search) and the graph must be built more carefully (ef_construction) than for "
            "item-like queries")
        print(f"  ann: two-tower {version} ({len(skus)} x {dim}, pgvector {pgv}); queries: {source}")
        print("  " + lines[-1])
        tt, tt_info = _measure_set(conn, emb, "retrieval", version, dim, skus, matrix, queries, k, repeats, idle)
        lines += _describe("two-tower", version, len(skus), dim, tt, tt_info, k)

        c = b.get("ann_curve") or {}
        curve_rows, chosen = [], None
        if c:
            truth = time_exact(matrix, unit(queries), k)[1]
            iterative = list(c.get("iterative_ef_search", [])) if _version_tuple(pgv) >= (0, 8) else []
            print(f"  the curve on a scratch copy of {version}:")
            curve_rows = curve(conn, version, dim, skus, queries, truth, k, list(c.m), list(c.ef_construction),
                               list(c.ef_search), iterative, repeats, idle)
            chosen, met = choose(curve_rows, float(c.get("min_recall", 0.98)), float(c.get("max_p95_ms", 2.0)))

        # The content set, queried with item vectors (serving's content queries are means of a few).
        content, live_c = None, vectors.live_version(conn, "content")
        if live_c is not None:
            c_version, c_dim = live_c
            c_skus, c_matrix = vectors.read_vectors(conn, c_version)
            c_matrix = unit(c_matrix)
            c_queries = c_matrix[rng.choice(len(c_skus), size=min(n_queries, len(c_skus)), replace=False)]
            content, c_info = _measure_set(conn, emb, "content", c_version, c_dim, c_skus, c_matrix, c_queries, k,
                                           repeats, idle)
            lines += _describe("content (item-vector queries)", c_version, len(c_skus), c_dim, content, c_info, k)

    figures: dict[str, tuple[float, str]] = {}
    for name, row in (("two_tower", tt), ("content", content)):
        if row is not None:
            figures |= {f"ann.{name}.p50_ms": (row["p50_ms"], "ms"), f"ann.{name}.p95_ms": (row["p95_ms"], "ms"),
                        f"ann.{name}.recall_at_{k}": (row["recall"], "fraction"),
                        f"ann.{name}.exact_p50_ms": (row["exact_p50_ms"], "ms"),
                        f"ann.{name}.exact_p95_ms": (row["exact_p95_ms"], "ms")}
    for line in lines:
        print("  " + line)
    if c:
        target = f"recall@{k} >= {float(c.get('min_recall', 0.98)):g} and p95 <= {float(c.get('max_p95_ms', 2.0)):g} ms"
        if chosen is None:
            pick = f"No setting in this grid reaches recall@{k} >= {float(c.get('min_recall', 0.98)):g}"
        elif met:
            pick = f"The cheapest setting with {target}: {format_row(chosen)}"
        else:
            pick = (f"No setting in this grid meets {target} on this run; the cheapest (fewest pages) of those "
                    f"that reach the recall: {format_row(chosen)}")
        print("  " + pick)
        write_curve(docs / "benchmarks-ann.md", curve_rows, chosen, pick, lines, version, len(skus), dim, source,
                    k, pgv, machine(), repeats, idle_text)
    return figures


def write_curve(path: Path, rows: list[dict], chosen: dict | None, pick: str, lines: list[str], version: str,
                n: int, dim: int, source: str, k: int, pgv: str, where: str, repeats: int, idle_text: str) -> None:
    out = ["## ANN: the pgvector HNSW curve on the live two-tower set", "",
           f"`{COMMAND}` (recsys/bench/ann.py; the grid is `bench.ann_curve` in conf/bench/default.yaml), "
           f"{date.today().isoformat()}, {where}, pgvector {pgv}.", "",
           f"Set {version}: {n} x {dim}, cosine. Queries: {source}. Recall@{k} against exact search over the "
           "normalised matrix. Latency of `vectors.search` as serving issues it (prepared, autocommit, one round "
           f"trip); p50 and p95 over the queries, the best of {repeats} runs (interleaved across an index's "
           f"settings; other processes only ever add time), {idle_text}. "
           "Every index is built on a scratch copy of item_vectors (a table of its own, dropped afterwards): "
           "the live index is not touched. Build time and size are that index's. Pages: the median number of "
           f"buffer pages one search touches (EXPLAIN ANALYZE BUFFERS over {PAGE_QUERIES} of the queries), the "
           "setting's work free of timing noise; the pick below is the row with the fewest among those that "
           "meet the targets.", "",
           f"| m | ef_construction | build s | size MB | ef_search | iterative scan | p50 ms | p95 ms | pages | "
           f"recall@{k} | recall p5 | notes |",
           "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        b = "**" if r is chosen else ""
        notes = ", ".join(x for x in ("" if r["index_scan"] else "sequential scan (exact)",
                                      f"machine {r['cpu_busy_pct']:.0f}% busy" if r["cpu_busy_pct"] > BUSY_FLAG_PCT
                                      else "") if x)
        out.append(f"| {b}{r['m']}{b} | {b}{r['ef_construction']}{b} | {r['build_s']:.1f} | {r['size_mb']:.1f} | "
                   f"{b}{r['ef_search']}{b} | {r['iterative']} | {r['p50_ms']:.2f} | {b}{r['p95_ms']:.2f}{b} | "
                   f"{b}{r['pages']:.0f}{b} | "
                   f"{b}{r['recall']:.4f}{b} | {r['recall_p5']:.3f} | {notes} |")
    out += ["", pick + ".", ""] + [f"- {line}." for line in lines]
    path.write_text("\n".join(out) + "\n")
