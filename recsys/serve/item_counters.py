"""The catalog's item counters (views, carts, purchases over 24 h and 7 days), held in the replica.

The ranker reads four counters for each of its ~100 candidates. Read from Redis per request, that was
a round trip and a Lua call on every cache miss; these counters span a day or a week, so a snapshot a
few seconds old ranks the same. Redis stores them as forward-decay logs (recsys/features/online_store.py),
so the snapshot keeps decaying correctly between refreshes. It is reread in the replica's background
refresher every `serve.item_counters_refresh_s`, in chunks, so Redis never serves one long script.
"""

from __future__ import annotations

import time

import numpy as np

from recsys.features.online_store import OnlineStore


class ItemCounters:
    """`counter_matrix(skus, keys, now)` as OnlineStore has it, answered from memory."""

    def __init__(self, store: OnlineStore, keys: list[str], chunk: int = 2000):
        self.store, self.keys, self.chunk = store, list(keys), chunk
        # (sku -> row, logs): swapped as one, so a request never pairs a new index with old rows. The last
        # row is for a SKU the snapshot lacks (listed since it was read): counts of 0.
        self.snapshot: tuple[dict[str, int], np.ndarray] = ({}, np.full((1, len(self.keys)), -np.inf))
        self.taus = store.counter_logs([], self.keys)[1]
        self.read_at: float | None = None

    def refresh(self, skus: list[str]) -> None:
        """Read every SKU's counters; the old snapshot serves until the new one is complete."""
        parts = [self.store.counter_logs(skus[start:start + self.chunk], self.keys)[0]
                 for start in range(0, len(skus), self.chunk)]
        unknown = np.full((1, len(self.keys)), -np.inf)
        self.snapshot = ({sku: i for i, sku in enumerate(skus)}, np.vstack([*parts, unknown]))
        self.read_at = time.time()

    def counter_matrix(self, skus: list[str], keys: list[str], now: float | None = None) -> np.ndarray:
        if list(keys) != self.keys:
            raise KeyError(f"the snapshot holds {self.keys}, not {list(keys)}")
        now = time.time() if now is None else now
        index, logs = self.snapshot
        rows = [index.get(sku, len(logs) - 1) for sku in skus]
        return np.exp(logs[rows] - now / self.taus) if rows else np.zeros((0, len(self.keys)))
