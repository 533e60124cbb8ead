"""python -m recsys.rank.train [hydra overrides]: training lists from the Postgres event log, LightGBM
lambdarank on Ray Train and the MLP alternative, NDCG@12 against retrieval order on the time-based
validation lists, artefacts under ${state_dir}/artifacts/ranker-<ts>/, registered as kind "ranker"."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from omegaconf import OmegaConf

from recsys.config import load_config
from recsys.models.ranker import MODEL_FILE
from recsys.rank.evaluate import compare
from recsys.rank.features import SCORE_COLUMNS, ItemTable, feature_table
from recsys.rank.ltr import train_lightgbm
from recsys.rank.mlp import train_mlp
from recsys.rank.xgb import train_xgboost
from recsys.rank import out_of_time
from recsys.rank.offline import build_lists

MLP_FILE = "mlp.pt"


def read_log(conn: psycopg.Connection) -> pd.DataFrame:
    return pd.DataFrame(conn.execute(
        "SELECT event_id, type, user_id, session_id, sku, ts, device FROM events ORDER BY ts, event_id").fetchall(),
        columns=["event_id", "type", "user_id", "session_id", "sku", "ts", "device"])


def content_vectors(conn: psycopg.Connection, items: ItemTable) -> np.ndarray | None:
    """The live content vectors aligned with `items` (None when there are none or they do not cover it)."""
    from recsys.catalog import vectors

    live = vectors.live_version(conn, "content")
    if not live:
        return None
    skus, matrix = vectors.read_vectors(conn, live[0])
    pos = {s: i for i, s in enumerate(skus)}
    if any(s not in pos for s in items.skus):
        return None
    return np.asarray(matrix, dtype=np.float32)[[pos[s] for s in items.skus]]


def live_on_same_lists(cfg, valid, k: int) -> float | None:
    """NDCG@k of the live ranker on the candidate's validation lists (None when none is live or it cannot
    be loaded): registered numbers from another night's lists are not comparable."""
    from recsys.models.ranker import load_ranker
    from recsys.rank.evaluate import ndcg_at_k
    from recsys.registry import models as registry
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        live = registry.live(conn, "ranker")
    if live is None:
        return None
    try:
        return float(ndcg_at_k(load_ranker(live.artifact_uri, live.config).score(valid.X), valid, k))
    except Exception as exc:
        print(f"the live ranker {live.version} could not be scored on these lists: {exc}", flush=True)
        return None


def _filled(lists, column: str) -> float:
    """Share of the lists' rows that carry this retrieval score (a source proposed the candidate)."""
    values = lists.source_scores[:, SCORE_COLUMNS.index(column)]
    return float(np.isfinite(values).mean()) if len(values) else 0.0


def training_lists(conn: psycopg.Connection, cfg, started: float | None = None):
    """The lists from the event log, each candidate scored by the two-tower and ALS versions of
    `ranker.out_of_time` when they record the end of their training data (then only requests after it:
    recsys/rank/out_of_time.py); without them, the whole log and no scores of theirs."""
    r = cfg.ranker
    stamp = f"[{time.monotonic() - started:6.1f}s] " if started is not None else ""
    items = ItemTable.from_postgres(conn)
    events = read_log(conn)
    content = content_vectors(conn, items)
    oot, why_not = out_of_time.from_registry(conn, r.out_of_time, items)
    if oot is None:
        print(f"{stamp}no out-of-time retrieval scores ({why_not}): the two-tower and ALS features are "
              "missing from the lists", flush=True)
        return build_lists(events, items, cfg.features, r, content=content), None
    print(f"{stamp}retrieval scores out of time from {', '.join(oot.versions.values())}: requests after "
          f"{datetime.fromtimestamp(oot.since, timezone.utc):%Y-%m-%d %H:%M}", flush=True)
    return build_lists(events, items, cfg.features, r, content=content, scorers=oot.scorers, since=oot.since,
                       valid_days=float(r.out_of_time.valid_days)), oot


def run(cfg) -> dict:
    from recsys.raycluster import ensure_ray
    from recsys.registry import models as registry
    from recsys.release.promote import release
    from recsys.services import Postgres

    started = time.monotonic()
    r = cfg.ranker
    version = "ranker-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.state_dir) / "artifacts" / version
    out.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        lists, oot = training_lists(conn, cfg, started)
    train, valid = lists.split()
    print(f"[{time.monotonic() - started:6.1f}s] lists: {len(train.group)} train / {len(valid.group)} valid, "
          f"{len(lists.y)} rows", flush=True)
    if not len(train.group) or not len(valid.group):
        raise SystemExit("no training or no validation lists: more events after the models' training data are "
                         "needed (or ranker.out_of_time.valid_days smaller)")
    ensure_ray(cfg)
    lgb_ranker, lgb_info = train_lightgbm(train, valid, r.lightgbm, out / "ray", name=version)
    xgb_ranker, xgb_info = train_xgboost(train, valid, r.xgboost, out / "ray", name=f"{version}-xgboost")
    mlp_ranker, mlp_info = train_mlp(train, valid, r.mlp, seed=int(r.seed))
    k = int(list(r.ks)[0])
    metrics = compare(valid, {"lightgbm": lgb_ranker, "xgboost": xgb_ranker, "mlp": mlp_ranker}, k)
    metrics.update({"train_lists": float(len(train.group)), "lightgbm_best_iteration": lgb_info.get("best_iteration"),
                    "xgboost_best_iteration": xgb_info.get("best_iteration"),
                    "mlp_epochs": mlp_info["epochs"], "content_scores": _filled(lists, "score_content"),
                    "two_tower_scores": _filled(lists, "score_two_tower"), "als_scores": _filled(lists, "score_als"),
                    "out_of_time_scores": oot is not None, "out_of_time_versions": oot.versions if oot else {}})
    live = live_on_same_lists(cfg, valid, k)   # the gate compares with the live ranker on these very lists
    if live is not None:
        metrics[f"live_ranker_ndcg@{k}"] = live
    lgb_ranker.save(out / MODEL_FILE)
    mlp_ranker.save(out / MLP_FILE)
    feature_table().to_csv(out / "features.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    config = OmegaConf.to_container(r, resolve=True)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        registry.register(conn, version, "ranker", str(out.resolve()), config, metrics)
        # its gates (conf/gates/ranker.yaml: above the retrieval order it re-ranks, ...), then a canary or live
        outcome = release(conn, cfg, {"ranker": version}, "rank.train") if r.promote else None
    metrics["promoted"] = outcome is not None and outcome.action == "live"
    metrics["release"] = outcome.action if outcome else "candidate"
    print(outcome.line() if outcome else f"{version}: registered as candidate (ranker.promote false)", flush=True)
    for name in ("retrieval_order", "lightgbm", "xgboost", "mlp"):
        print(f"NDCG@{k} {name:16s} {metrics[f'{name}_ndcg@{k}']:.4f}", flush=True)
    print(f"[{time.monotonic() - started:6.1f}s] {version} registered, artefacts in {out}", flush=True)
    return {"version": version, "artifact_uri": str(out.resolve()), **metrics}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    result = run(load_config(sys.argv[1:] if argv is None else argv))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
