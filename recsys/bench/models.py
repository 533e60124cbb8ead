"""The live models' offline metrics, from the registry into docs/benchmarks.* (each with the job that
measured it): the training pipeline's time-holdout evaluation and the ranker's validation NDCG."""

from __future__ import annotations

import psycopg

from recsys import registry
from recsys.bench.report import DOCS, record

SYNTHETIC_REPORT = ("popularity.", "als.", "content.", "two_tower.", "two_tower_ann.", "ann.")
JOBS = {"two_tower": "python -m recsys.train.pipeline", "ranker": "python -m recsys.rank.train"}


def record_models(cfg, docs=DOCS) -> dict:
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn) as conn:
        for kind, command in JOBS.items():
            model = registry.live(conn, kind)
            if model is None:
                continue
            figures = {}
            for name, value in model.metrics.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or name == "trained_until":
                    continue   # trained_until is a moment (epoch seconds), not a figure
                counts = ("users", "epoch", "lists", "iteration")
                unit = "s" if "seconds" in name else "count" if any(c in name for c in counts) else "fraction"
                if "max_abs_diff" in name:
                    unit = "abs"
                figures[f"train.{kind}.{name}"] = (value, unit)
                if kind == "two_tower" and name.startswith(SYNTHETIC_REPORT) and cfg.data.source == "synthetic":
                    figures[f"synthetic.{name}"] = (value, unit)   # issue 14's names for the holdout report
            record(figures, f"{command} (model {model.version}, {cfg.data.source} world)", docs)
    return {}
