"""The nightly training job, one Ray job: `python -m recsys.train.pipeline [hydra overrides]`.

embed the catalog (Ray Data) -> two-tower (Ray Train) -> ALS -> evaluate on a time holdout ->
export (ONNX) -> item vectors into pgvector beside the live set -> register the models -> release
(their gates, then a canary against the live versions, or live when there are none; recsys/release) ->
cohort centroids and user vectors in Redis.

Submit it to a cluster with `ray job submit --working-dir . -- python -m recsys.train.pipeline`.
"""

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

from recsys import registry
from recsys.catalog import vectors
from recsys.config import load_config
from recsys.models.als import save_factors
from recsys.models.two_tower import (CATEGORIES_FILE, CONFIG_FILE, ITEM_FEATURES_FILE, ITEM_TOWER_FILE,
                                     USER_TOWER_FILE, WEIGHTS_FILE)
from recsys.raycluster import ensure_ray
from recsys.release.promote import release
from recsys.services import Postgres

log = logging.getLogger("recsys.pipeline")


class Steps:
    """Prints one line per step with its duration, so progress is visible in `ray job logs -f`."""

    def __init__(self):
        self.started = time.monotonic()

    def __call__(self, title: str):
        print(f"[{time.monotonic() - self.started:6.1f}s] {title}", flush=True)


def run(cfg) -> dict:
    from recsys.catalog.embed import embed_catalog
    from recsys.train import dataset, evaluate, user_vectors
    from recsys.train.als import ALSConfig, ALSRecommender
    from recsys.train.ray_train import fit_on_ray
    from recsys.train.two_tower import EvalSet, export_item_tower_onnx, export_user_tower_onnx
    from recsys.train.two_tower import check_item_tower_parity, check_user_tower_parity

    p = cfg.pipeline
    step = Steps()
    version = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(p.artifacts) / f"two-tower-{version}"
    out.mkdir(parents=True, exist_ok=True)
    ensure_ray(cfg, log_to_driver=True)  # the workers' per-epoch lines show in `ray job logs`

    step("1/8 catalog embedding on Ray Data")
    print("       " + embed_catalog(cfg), flush=True)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        step("2/8 reading the catalog and the event log")
        catalog = dataset.read_catalog(conn)
        events = dataset.read_events(conn)
    data = dataset.sequences(events, catalog.index, float(p.holdout_days))
    if len(data.targets) == 0:
        raise SystemExit(f"no user has both history and an interaction in the last {p.holdout_days} days of the "
                         "log: nothing to evaluate on (load more data or change pipeline.holdout_days)")
    feats = catalog.item_features()
    rng = np.random.default_rng(int(cfg.seed))
    long_enough = np.array([i for i, s in enumerate(data.train) if len(s) >= 3])
    valid_rows = rng.choice(long_enough, size=min(int(p.valid_users), len(long_enough)), replace=False)
    valid = EvalSet(inputs=[data.train[i][:-1] for i in valid_rows], targets=np.array([data.train[i][-1] for i in valid_rows]),
                    seen=[data.train[i][:-1] for i in valid_rows],
                    input_ts=[data.train_ts[i][:-1] for i in valid_rows],
                    target_ts=np.array([data.train_ts[i][-1] for i in valid_rows]))
    fit_rows = set(valid_rows.tolist())
    train_seqs = [s[:-1] if i in fit_rows else s for i, s in enumerate(data.train)]
    train_ts = [t[:-1] if i in fit_rows else t for i, t in enumerate(data.train_ts)]
    print(f"       {len(catalog.skus)} items, {len(events)} events, {len(data.users)} users with history, "
          f"{len(data.targets)} holdout targets after {data.holdout.cutoff}", flush=True)

    step(f"3/8 two-tower on Ray Train ({p.num_workers} workers)")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model, train_metrics = fit_on_ray(train_seqs, train_ts, feats, model_cfg, valid, p,
                                      str(Path(p.artifacts).resolve() / "ray"), f"two-tower-{version}")

    step("4/8 ALS")
    train_events = data.holdout.train
    als = ALSRecommender(ALSConfig(**OmegaConf.to_container(p.als), seed=int(cfg.seed))).fit_events(
        train_events, event_col="type", users=data.users, items=catalog.skus)

    step("5/8 evaluation on the time holdout")
    metrics = evaluate.synthetic_report(cfg, model, als, catalog, data, rng)
    for name, value in metrics.items():
        print(f"       {name:<40} {value:.4f}", flush=True)

    step("6/8 export: ONNX item and user towers, parity with torch")
    item_tower, user_tower = str(out / ITEM_TOWER_FILE), str(out / USER_TOWER_FILE)
    export_item_tower_onnx(model, item_tower)
    export_user_tower_onnx(model, user_tower)
    parity = {"onnx_item_max_abs_diff": check_item_tower_parity(model, item_tower),
              "onnx_user_max_abs_diff": check_user_tower_parity(model, user_tower)}
    import torch

    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    # ALS was fit over catalog.skus, so the item order it writes is the towers' too
    als_path = save_factors(out, als.user_factors, als.item_factors, data.users, catalog.skus,
                            regularization=p.als.regularization, alpha=p.als.alpha)
    (out / CATEGORIES_FILE).write_text(json.dumps(catalog.categories()))
    dataset.save_item_features(feats, out / ITEM_FEATURES_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(model_cfg))

    step("7/8 item vectors into pgvector beside the live set, models registered")
    item_vectors = model.item_vectors().detach().cpu().numpy()
    tt_version, als_version = f"two-tower-{version}", f"als-{version}"
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        m, ef_construction, _ = vectors.hnsw_params(cfg.embedding, "retrieval")  # embedding.retrieval_hnsw
        vectors.write_vectors(conn, tt_version, "retrieval", catalog.skus, item_vectors, m, ef_construction)
        ann = evaluate.ann_report(conn, tt_version, model, catalog, data, rng, cfg)
        metrics.update(ann)
        for name, value in ann.items():
            print(f"       {name:<40} {value:.4f}", flush=True)
        # both saw only the events before the holdout cutoff: the ranker's lists after it may use their
        # scores (recsys/rank/out_of_time.py)
        trained_until = float(pd.Timestamp(data.holdout.cutoff).timestamp())
        all_metrics = {**metrics, **parity, **{k: v for k, v in train_metrics.items() if isinstance(v, (int, float))},
                       "seconds_until_registered": time.monotonic() - step.started, "trained_until": trained_until}
        registry.register(conn, tt_version, "two_tower", str(out.resolve()), model_cfg, all_metrics)
        als_metrics = {k: v for k, v in metrics.items() if k.startswith("als.")} | {"trained_until": trained_until}
        als_metrics["als.finite_factors"] = float(np.isfinite(als.item_factors).all() and np.isfinite(als.user_factors).all())
        registry.register(conn, als_version, "als", str(als_path.resolve()), OmegaConf.to_container(p.als), als_metrics)
        # the gates (conf/gates/), then a canary against the live pair, or live when there is none
        outcome = release(conn, cfg, {"two_tower": tt_version, "als": als_version}, "pipeline") if p.promote else None
        promoted = outcome is not None and outcome.action == "live"
        for report in outcome.reports if outcome else []:
            print("\n".join("       " + line for line in report.lines()), flush=True)

    step("8/8 cohort centroids and active users' vectors into Redis")
    print("       " + user_vectors.publish(cfg, model, catalog, data, events, tt_version), flush=True)
    step(f"done: {outcome.line() if outcome else tt_version + ' registered as candidate (pipeline.promote false)'}")
    return {"version": tt_version, "als_version": als_version, "promoted": promoted, "release": outcome.action if outcome else "candidate",
            "canary_id": outcome.canary_id if outcome else None, **all_metrics}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    result = run(cfg)
    print(json.dumps({k: v for k, v in result.items()}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
