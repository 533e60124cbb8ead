"""Incremental CF between nightly fits: fold the users with new events, and SKUs the live ALS has
never seen, into its factors (implicit's partial_fit_users / partial_fit_items); register the
result as a new ALS version, which goes live after the ALS gates (recsys/release).

    python -m recsys.train.incremental [hydra overrides]
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import scipy.sparse as sp

from recsys import registry
from recsys.config import load_config
from recsys.models.als import ALSFactors, save_factors
from recsys.release.promote import release
from recsys.train.als import ALSConfig, ALSRecommender
from recsys.train.popularity import event_matrix


def _load(record) -> tuple[ALSRecommender, list[str], list[str]]:
    factors = ALSFactors(Path(record.artifact_uri))
    config = ALSConfig(**{k: v for k, v in record.config.items() if k in ALSConfig.__dataclass_fields__})
    als = ALSRecommender(config)
    als.model = als._new_model()
    als.model.user_factors = factors.user_factors
    als.model.item_factors = factors.items
    users = list(factors.users)
    als.user_items = sp.csr_matrix((len(users), len(factors.items)), dtype=np.float32)
    return als, users, factors.skus


def run(cfg) -> str:
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        record = registry.live(conn, "als")
        if record is None:
            return "no live ALS model: run the training pipeline first"
        als, users, skus = _load(record)
        touched = pd.DataFrame(conn.execute(
            "SELECT user_id, sku, type FROM events WHERE user_id IN "
            "(SELECT DISTINCT user_id FROM events WHERE received_at > %s)", (record.created_at,)).fetchall(),
            columns=["user_id", "sku", "type"])
        known_items = set(skus)
        new_skus = [s for (s,) in conn.execute("SELECT sku FROM items ORDER BY sku") if s not in known_items]
        new_item_events = pd.DataFrame(conn.execute(
            "SELECT user_id, sku, type FROM events WHERE sku = ANY(%s)", (new_skus,)).fetchall(),
            columns=["user_id", "sku", "type"]) if new_skus else touched.iloc[:0]
        if touched.empty and not new_skus:
            return f"{record.version}: nothing new since {record.created_at:%Y-%m-%d %H:%M}"
        user_ids = users + sorted(set(touched["user_id"]) | set(new_item_events["user_id"]) - set(users))
        item_ids = skus + new_skus
        weights = dict(cfg.features.event_weights)
        # 1. users with new events, over the items the model knows (new users are appended)
        fold_users = sorted(set(touched["user_id"]) | set(new_item_events["user_id"]))
        known = pd.concat([touched, new_item_events])
        known = known[known["sku"].isin(known_items)]
        m, _, _ = event_matrix(known, event_col="type", weights=weights, users=fold_users, items=skus)
        row_of = {u: i for i, u in enumerate(user_ids)}
        if fold_users:
            als.partial_fit_users(np.array([row_of[u] for u in fold_users]), m)
        # 2. new SKUs from everyone who interacted with them
        if new_skus:
            iu, _, _ = event_matrix(new_item_events, user_col="sku", item_col="user_id", event_col="type",
                                    weights=weights, users=new_skus, items=user_ids)
            als.partial_fit_items(np.arange(len(skus), len(item_ids)), iu)
        version = f"als-incr-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        out = Path(cfg.pipeline.artifacts) / version
        out.mkdir(parents=True, exist_ok=True)
        path = save_factors(out, als.user_factors, als.item_factors, user_ids, item_ids,
                            regularization=als.config.regularization, alpha=als.config.alpha)
        # the base's holdout metrics still describe the known items' factors, which a fold-in leaves as they were
        metrics = {**{k: v for k, v in record.metrics.items() if k.startswith("als.")},
                   "als.finite_factors": float(np.isfinite(als.item_factors).all() and np.isfinite(als.user_factors).all()),
                   "base": record.version, "folded_users": len(fold_users), "new_items": len(new_skus)}
        registry.register(conn, version, "als", str(path.resolve()), record.config, metrics)
        # through the ALS gates, then live at once: a canary cannot finish between two fold-ins
        outcome = release(conn, cfg, {"als": version}, "incremental", canary_allowed=False)
    return (f"{version}: {len(fold_users)} users and {len(new_skus)} new SKUs folded into {record.version}: "
            f"{outcome.line()}")


def main(argv: list[str] | None = None) -> int:
    print(run(load_config(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
