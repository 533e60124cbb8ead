"""What out-of-time scoring moved (docs/quality.md): the ranker trained as before (lists over the whole log,
no two-tower or ALS scores in them) against the ranker trained on out-of-time lists (recsys/rank/out_of_time.py),
both scored on the same validation lists as serving sees them (every source's score present).

    .venv/bin/python docs/ablations/ranker_out_of_time.py [hydra overrides]

Needs the running stack of `make demo` (the live two-tower and ALS record `trained_until`). LightGBM in process
with the parameters of conf/ranker/default.yaml, early stopping on the validation lists for both, as
recsys.rank.train does. About a minute and a half on 2 cores.
"""

from __future__ import annotations

import sys

import lightgbm as lgb
import numpy as np
import psycopg
from omegaconf import OmegaConf

from recsys.config import load_config
from recsys.rank import out_of_time
from recsys.rank.evaluate import ndcg_at_k, retrieval_order_scores
from recsys.rank.features import NAMES, ItemTable
from recsys.rank.offline import build_lists
from recsys.rank.train import content_vectors, read_log
from recsys.services import Postgres


def fit(cfg, train, valid) -> lgb.Booster:
    r = cfg.ranker.lightgbm
    return lgb.train(OmegaConf.to_container(r.params), lgb.Dataset(train.X, train.y, group=train.group),
                     int(r.num_boost_round), valid_sets=[lgb.Dataset(valid.X, valid.y, group=valid.group)],
                     callbacks=[lgb.early_stopping(int(r.early_stopping_rounds), verbose=False)])


def main(argv: list[str]) -> None:
    cfg = load_config(argv)
    r = cfg.ranker
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        items, events = ItemTable.from_postgres(conn), read_log(conn)
        content = content_vectors(conn, items)
        oot, why_not = out_of_time.from_registry(conn, r.out_of_time, items)
    if oot is None:
        raise SystemExit(why_not)
    days = float(r.out_of_time.valid_days)
    train, valid = build_lists(events, items, cfg.features, r, content=content, scorers=oot.scorers,
                               since=oot.since, valid_days=days).split()
    before = build_lists(events, items, cfg.features, r, content=content, valid_days=days).split()[0]
    print(f"validation lists {len(valid.group)}; training lists: out of time {len(train.group)}, "
          f"whole log without the models' scores {len(before.group)}")
    k = 12
    rows = {"retrieval order": retrieval_order_scores(valid),
            "ranker as before (whole log, no two-tower/ALS scores)": fit(cfg, before, valid).predict(valid.X),
            "ranker on out-of-time lists": fit(cfg, train, valid).predict(valid.X)}
    blind = valid.X.copy()
    blind[:, [NAMES.index("score_two_tower"), NAMES.index("score_als")]] = np.nan
    rows["  the same, two-tower/ALS scores hidden at scoring"] = fit(cfg, train, valid).predict(blind)
    for name, scores in rows.items():
        print(f"{name:<56} NDCG@{k} {ndcg_at_k(scores, valid, k):.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
