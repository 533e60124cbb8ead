"""What training reads from the platform: the catalog and event log in Postgres, the content vectors
in pgvector, turned into index-aligned arrays (item i = row i of every array)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg

from recsys.catalog import vectors
from recsys.train.splits import TimeHoldout, time_holdout
from recsys.train.two_tower import ItemFeatures, pad_lists

MAX_NEIGHBORS = 8


@dataclass
class CatalogArrays:
    skus: list[str]
    items: pd.DataFrame           # indexed 0..n-1 like skus: category, price_band, margin, kind, brand
    content: np.ndarray | None    # (n, d) content vectors of the live content set
    neighbors: list[list[int]]    # accessory-graph neighbours (both directions) as item indices

    @property
    def index(self) -> dict[str, int]:
        return {sku: i for i, sku in enumerate(self.skus)}

    def categories(self) -> list[str]:
        """The category vocabulary, in the order of the codes the item tower was trained on."""
        return [str(c) for c in self.items["category"].astype("category").cat.categories]

    def item_features(self, max_neighbors: int = MAX_NEIGHBORS) -> ItemFeatures:
        cats = self.items["category"].astype("category").cat.codes.to_numpy().astype(np.int64)
        bands = self.items["price_band"].fillna(0).to_numpy().astype(np.int64)
        margin = self.items["margin"].fillna(0).to_numpy().astype(np.float32)[:, None]
        return ItemFeatures(
            n_items=len(self.skus), content=self.content,
            categorical={"category": cats, "price_band": bands}, numeric=margin,
            neighbors=pad_lists([n[:max_neighbors] for n in self.neighbors], width=max_neighbors))


def save_item_features(feats: ItemFeatures, path) -> None:
    """The item tower's inputs as trained, so the model can be rebuilt from its artefacts alone."""
    arrays = {f"categorical.{k}": v for k, v in feats.categorical.items()}
    for name in ("content", "numeric", "neighbors"):
        if getattr(feats, name) is not None:
            arrays[name] = getattr(feats, name)
    np.savez(path, n_items=feats.n_items, **arrays)


def load_item_features(path) -> ItemFeatures:
    data = np.load(path)
    return ItemFeatures(
        n_items=int(data["n_items"]), content=data["content"] if "content" in data else None,
        numeric=data["numeric"] if "numeric" in data else None,
        neighbors=data["neighbors"] if "neighbors" in data else None,
        categorical={k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("categorical.")})


def read_catalog(conn: psycopg.Connection) -> CatalogArrays:
    items = pd.DataFrame(conn.execute(
        "SELECT sku, category, price_band, margin, kind, brand FROM items ORDER BY sku").fetchall(),
        columns=["sku", "category", "price_band", "margin", "kind", "brand"])
    skus = items["sku"].tolist()
    index = {sku: i for i, sku in enumerate(skus)}
    neighbors: list[list[int]] = [[] for _ in skus]
    for src, dst in conn.execute("SELECT src_sku, dst_sku FROM item_edges ORDER BY weight DESC, dst_sku"):
        neighbors[index[src]].append(index[dst])
        neighbors[index[dst]].append(index[src])
    content = None
    live = vectors.live_version(conn, "content")
    if live:
        have, matrix = vectors.read_vectors(conn, live[0])
        if have == skus:
            content = matrix
    return CatalogArrays(skus, items.drop(columns="sku"), content, neighbors)


def read_events(conn: psycopg.Connection) -> pd.DataFrame:
    return pd.DataFrame(conn.execute("SELECT user_id, sku, type, ts, device, geo FROM events ORDER BY ts").fetchall(),
                        columns=["user_id", "sku", "type", "ts", "device", "geo"])


@dataclass
class SequenceData:
    """Per-user sequences for training and the time-holdout targets for evaluation."""

    users: list[str]
    train: list[np.ndarray]          # item indices, time order (consecutive repeats collapsed)
    train_ts: list[np.ndarray]       # unix seconds
    holdout: TimeHoldout
    target_users: np.ndarray         # rows into `users` that have a holdout target
    targets: np.ndarray              # item index per target user


def _collapse(items: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.ones(len(items), dtype=bool)
    keep[1:] = items[1:] != items[:-1]
    return items[keep], ts[keep]


def sequences(events: pd.DataFrame, index: dict[str, int], holdout_days: float) -> SequenceData:
    """A global time cutoff `holdout_days` before the last event: before it is training, each user's
    first interaction after it is their target (no training event is later than any target)."""
    events = events.assign(item=events["sku"].map(index), t=events["ts"].map(lambda x: int(x.timestamp())))
    events = events[events["item"].notna()].astype({"item": np.int64})
    cutoff = events["ts"].max() - timedelta(days=holdout_days)
    split = time_holdout(events, cutoff)
    grouped = split.train.sort_values(["user_id", "ts"], kind="stable").groupby("user_id", sort=True)
    users, train, train_ts = [], [], []
    for user, frame in grouped:
        items, ts = _collapse(frame["item"].to_numpy(), frame["t"].to_numpy())
        users.append(user)
        train.append(items)
        train_ts.append(ts)
    row = {u: i for i, u in enumerate(users)}
    targets = split.targets[split.targets["user_id"].isin(row)]
    return SequenceData(users, train, train_ts, split,
                        targets["user_id"].map(row).to_numpy(np.int64), targets["item"].to_numpy(np.int64))
