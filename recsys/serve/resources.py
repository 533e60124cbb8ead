"""Connections and in-memory snapshots a serving replica holds, each allowed to be missing.

A dead dependency at start-up must not stop a replica: what failed is retried on use, and the
pipeline degrades around it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from recsys.catalog import vectors
from recsys.catalog.store import CatalogSnapshot, read_catalog
from recsys.features import event_log
from recsys.features.online_store import OnlineStore
from recsys.rank.features import COUNTER_KEYS
from recsys.release.arms import ReleaseBook
from recsys.rules.rulebook import RuleBook
from recsys.serve.item_counters import ItemCounters
from recsys.serve.vector_index import VectorIndex
from recsys.serve.write_behind import WriteBehind

log = logging.getLogger(__name__)


MODEL_SETS_KEPT = 4   # arms' model sets a replica keeps loaded: control and canary, and the ones just before

# What tells a catalog snapshot is stale: items and edges counted, the latest item update.
CATALOG_STATE = "SELECT count(*), max(updated_at), (SELECT count(*) FROM item_edges) FROM items"


def _poll_forever(resources: "weakref.ref[Resources]", every_s: float) -> None:
    """Poll the rule sets and the release state (live models, canary) every `every_s` (ten times less
    often while Postgres fails) until the Resources object is gone or its pool closed."""
    wait = every_s
    while True:
        time.sleep(wait)
        res = resources()
        if res is None or res.pool.closed:
            return
        res.poll_rules()
        res.poll_release()
        wait = every_s * (10 if res._rules_failing else 1)
        del res


class Resources:
    def __init__(self, cfg):
        from recsys.services import Postgres

        self.cfg = cfg
        self.store = OnlineStore.from_config(cfg, socket_timeout=float(cfg.serve.redis_timeout_ms) / 1000)
        # min_size: connections opened (and prepared) in the background at start, so the first requests'
        # parallel searches do not each pay a connect within their budget.
        self.pool = ConnectionPool(Postgres(cfg).dsn, min_size=4, max_size=8, open=False,
                                   kwargs={"autocommit": True, "connect_timeout": 2,
                                           "options": f"-c statement_timeout={int(cfg.serve.statement_timeout_ms)}"},
                                   configure=self._configure, timeout=2)
        try:
            self.pool.open(wait=False)
        except Exception:
            log.exception("postgres pool did not open")
        self.catalog: CatalogSnapshot | None = None
        self.content: tuple[str, int] | None = None        # live content vector set (version, dim)
        self.content_vectors: dict[str, np.ndarray] = {}
        self.content_index: VectorIndex | None = None
        self.bestsellers: list[tuple[str, float]] = []
        self.head_skus: frozenset[str] = frozenset()       # the most-interacted share of the catalog (long_tail_slots)
        self._next_refresh = 0.0
        self.producer = None
        self.impressions = None
        self._verifier = None
        self._event_limiter = None
        self.release = ReleaseBook(list(cfg.release.served_kinds))   # which models serve whom (recsys/release/arms.py)
        self._model_sets: OrderedDict[tuple, object] = OrderedDict()   # versions -> ModelSet, the latest few
        self._model_sets_lock = threading.Lock()
        self._loading = threading.Lock()
        # One long-lived thread for every reload: a fresh thread per reload got a fresh malloc arena
        # from glibc, and each replica grew ~100 MB per reload (the soak in docs/reliability.md).
        self._refresher = ThreadPoolExecutor(1, thread_name_prefix="snapshot-refresh")
        self._catalog_state = None   # what the catalog snapshot was read at (CATALOG_STATE, live content set)
        self.public_recommendations = bool(cfg.auth.public_recommendations)   # read per request: a plain bool
        self.item_counters = ItemCounters(self.store, list(COUNTER_KEYS))
        self.counters_every_s = float(cfg.serve.item_counters_refresh_s)
        self._next_counters = 0.0
        w = cfg.serve.write_behind
        self.rules = RuleBook(cfg)   # the live and shadow rule sets, polled (recsys/rules/rulebook.py)
        self._rules_failing = self._release_failing = False
        self.writes = WriteBehind(self.store.r, self.impression_producer, float(w.flush_ms), int(w.max_batch),
                                  int(w.max_queued), float(w.impression_flush_ms))
        self.refresh(wait=True)
        # Rules and releases are polled on a timer of their own, not on requests: a replica answering only
        # cache hits (which skip the pipeline) must still switch sets within rules.poll_s.
        threading.Thread(target=_poll_forever, args=(weakref.ref(self), self.rules.poll_s),
                         name="rules-poll", daemon=True).start()

    def _configure(self, conn: psycopg.Connection) -> None:
        """Each new pooled connection: vector types and HNSW ef_search set once, so a search is one round trip."""
        # the widest search any live set needs (the two-tower set's recall needs 200; docs/benchmarks-ann.md)
        vectors.prepare(conn, max(vectors.hnsw_params(self.cfg.embedding, p)[2] for p in ("content", "retrieval")))

    def refresh(self, max_age_s: float = 300.0, retry_s: float = 10.0, wait: bool = False) -> None:
        """Reload the snapshots from Postgres when stale, in a background thread: a request never
        waits for it (reading 12k vectors takes longer than any request budget). The catalog and
        its vectors are read again only when CATALOG_STATE or the live content set changed. Old snapshots stay
        while Postgres is down; a failed load is retried after `retry_s`."""
        now = time.monotonic()
        if now >= self._next_counters and self.catalog is not None:
            self._next_counters = now + self.counters_every_s
            self._refresher.submit(self._read_counters)
        if now < self._next_refresh or self._loading.locked():
            return
        self._next_refresh = now + retry_s
        if wait:
            self._load(max_age_s)
            self._read_counters()
            self.poll_rules()
            self.poll_release()
        else:
            self._refresher.submit(self._load, max_age_s)

    def poll_rules(self) -> None:
        """The live and shadow rule sets' versions (recompiled when they or the catalog changed);
        every `rules.poll_s`, on the replica's rules-poll thread."""
        try:
            with self.pool.connection(timeout=1) as conn:
                self.rules.poll(conn, self.catalog, [sku for sku, _ in self.bestsellers])
            self._rules_failing = False
        except Exception as exc:   # said once per outage: the last compiled sets stay meanwhile
            if not self._rules_failing:
                log.warning("rule sets not polled (the last ones stay): %s", exc)
            self._rules_failing = True

    def poll_release(self) -> None:
        """The live model versions and the running canary; a new arm's models are loaded here, on the
        poll thread, before any request is assigned to it."""
        try:
            with self.pool.connection(timeout=1) as conn:
                self.release.poll(conn, self.models_for)
        except Exception as exc:   # the arms already loaded keep serving
            if not self._release_failing:
                log.warning("release state not polled (the current models stay): %s", exc)
            self._release_failing = True
        else:
            self._release_failing = False

    def models_for(self, versions: dict):
        """The models of one arm (recsys/serve/model_sources.py ModelSet), loaded once per replica."""
        from recsys.serve.model_sources import ModelSet

        key = tuple(sorted(versions.items()))
        with self._model_sets_lock:
            found = self._model_sets.get(key)
            if found is not None:
                self._model_sets.move_to_end(key)
                return found
        loaded = ModelSet(self, versions)   # outside the lock: a request may need another arm meanwhile
        with self._model_sets_lock:
            self._model_sets[key] = loaded
            while len(self._model_sets) > MODEL_SETS_KEPT:
                self._model_sets.popitem(last=False)
        return loaded

    def models_of(self, req):
        """The models that serve `req`: its arm's (assigned by the recommender), else the live ones."""
        arm = req.arm or self.release.live
        return self.models_for(arm.models)

    def _read_counters(self) -> None:
        """The item counters of every catalog SKU (recsys/serve/item_counters.py), every
        `serve.item_counters_refresh_s` on the refresher thread."""
        if self.catalog is None:
            return
        try:
            self.item_counters.refresh(list(self.catalog.items.index))
        except Exception as exc:
            log.warning("item counters not refreshed: %s", exc)

    def _load(self, max_age_s: float) -> None:
        from recsys.services import Postgres

        with self._loading:
            try:  # its own connection: the serving pool's statement timeout is for requests
                with psycopg.connect(Postgres(self.cfg).dsn, autocommit=True, connect_timeout=2) as conn:
                    content = vectors.live_version(conn, "content")
                    state = (conn.execute(CATALOG_STATE).fetchone(), content)
                    if state != self._catalog_state:   # rebuilding an unchanged catalog cost ~100 MB and a p95 spike
                        catalog = read_catalog(conn)
                        skus, matrix = vectors.read_vectors(conn, content[0]) if content else ([], None)
                        index = self.vector_index(*content, skus, matrix) if content else None
                        self.catalog, self.content, self.content_index = catalog, content, index
                        self.content_vectors = dict(zip(skus, matrix)) if content else {}
                        self._catalog_state = state
                    self.bestsellers = event_log.bestsellers(conn, int(self.cfg.serve.bestseller_days),
                                                             int(self.cfg.serve.bestseller_pool))
                    self.head_skus = event_log.head_skus(conn, int(self.cfg.serve.bestseller_days),
                                                         float(self.cfg.serve.head_share))
                self._next_refresh = time.monotonic() + max_age_s
            except Exception as exc:
                log.warning("catalog snapshot not refreshed: %s", exc)
            if not self.bestsellers:
                try:  # Redis keeps a copy written at data-load time
                    self.bestsellers = self.store.bestsellers(int(self.cfg.serve.bestseller_pool))
                except Exception as exc:
                    log.warning("no bestsellers available: %s", exc)

    def vector_index(self, version: str, dim: int, skus: list[str], matrix: np.ndarray) -> VectorIndex:
        """A live vector set searchable as serving is configured to (recsys/serve/vector_index.py)."""
        s = self.cfg.serve
        return VectorIndex(version, dim, skus, matrix, self.pool, int(s.exact_search_max_items),
                           int(s.vector_scan_dims), int(s.vector_rerank_factor))

    def event_producer(self):
        """Event intake's producer: a message not acknowledged within `features.intake.ack_timeout_s`
        expires in the queue, so a broker outage fails requests fast instead of piling them up."""
        if self.producer is None:
            from recsys.features.broker import EventProducer
            from recsys.services import Kafka

            timeout_ms = int(float(self.cfg.features.intake.ack_timeout_s) * 1000)
            self.producer = EventProducer(Kafka(self.cfg).bootstrap, self.cfg.services.kafka.topics,
                                          message_timeout_ms=timeout_ms)
        return self.producer

    def impression_producer(self):
        """A producer of its own for impressions (fire and forget): their backlog never delays or
        fails an event intake."""
        if self.impressions is None:
            from recsys.features.broker import EventProducer
            from recsys.services import Kafka

            self.impressions = EventProducer(Kafka(self.cfg).bootstrap, self.cfg.services.kafka.topics, linger_ms=20)
        return self.impressions

    def key_verifier(self):
        """API keys checked against Postgres through the serving pool, cached `auth.cache_ttl_s`."""
        if self._verifier is None:
            from recsys.auth import Verifier

            a = self.cfg.auth
            self._verifier = Verifier(lambda: self.pool.connection(timeout=float(a.lookup_timeout_s)),
                                      float(a.cache_ttl_s), int(a.retry_after_s))
        return self._verifier

    def event_rate_limiter(self):
        """Events per second per key, in Redis under the configured key prefix (shared by replicas)."""
        if self._event_limiter is None:
            from recsys.auth import RateLimiter

            self._event_limiter = RateLimiter(self.store.r, self.cfg.services.redis.key_prefix,
                                              float(self.cfg.auth.events_per_s_per_key), float(self.cfg.auth.burst))
        return self._event_limiter
