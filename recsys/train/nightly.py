"""The nightly job: `recsys nightly [hydra overrides]` (cron, a systemd timer, or a KubeRay RayJob).

    1. the training pipeline (embed -> two-tower on Ray Train -> ALS -> holdout -> export -> vectors)
    2. the learning-to-rank model (lists from the event log -> LightGBM on Ray Train)
    3. one release of the three: each version's gates, then one canary of all three against the live
       versions (or live at once when none is live yet)

Both trainers register candidates only (`promote=false`); the release decides. One progress line per
step, with the time since the start. A GPU on the Ray cluster is used when there is one.
"""

from __future__ import annotations

import json
import sys
import time

import psycopg

from recsys.config import load_config


def run(cfg) -> dict:
    from omegaconf import OmegaConf

    from recsys.rank import train as rank_train
    from recsys.release.promote import release
    from recsys.services import Postgres
    from recsys.train import pipeline

    started = time.monotonic()
    marks: list[tuple[str, float]] = []   # (step, when it began): the bench reports each step's share

    def step(title: str, name: str | None = None) -> None:
        if name:
            marks.append((name, time.monotonic()))
        print(f"[nightly {time.monotonic() - started:6.1f}s] {title}", flush=True)

    cfg = cfg.copy()
    OmegaConf.update(cfg, "pipeline.promote", False)
    OmegaConf.update(cfg, "ranker.promote", False)
    gpus = _gpus(cfg)
    if gpus:   # a GPU on the cluster: the two-tower's workers and the embedding actors use it
        OmegaConf.update(cfg, "pipeline.use_gpu", True)
        OmegaConf.update(cfg, "embedding.gpus_per_actor", max(float(cfg.embedding.gpus_per_actor), 1.0))
    step(f"1/3 training pipeline: embeddings, two-tower, ALS ({'%g GPUs' % gpus if gpus else 'CPU only'})",
         "pipeline")
    trained = pipeline.run(cfg)
    step("2/3 learning-to-rank model", "ranker")
    # its lists carry the scores of the models it will be released with (fitted before those lists)
    OmegaConf.update(cfg, "ranker.out_of_time.two_tower", trained["version"])
    OmegaConf.update(cfg, "ranker.out_of_time.als", trained["als_version"])
    ranked = rank_train.run(cfg)
    step("3/3 release: gates, then a canary (or live)", "release")
    versions = {"two_tower": trained["version"], "als": trained["als_version"],
                "ranker": ranked["version"]}
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        outcome = release(conn, cfg, versions, "nightly")
    for report in outcome.reports:
        print("\n".join("       " + line for line in report.lines()), flush=True)
    ended = time.monotonic()
    seconds = ended - started
    step(f"done in {seconds:.0f} s: {outcome.line()}")
    steps = {name: (marks[i + 1][1] if i + 1 < len(marks) else ended) - begun for i, (name, begun) in enumerate(marks)}
    return {"versions": versions, "release": outcome.action, "canary_id": outcome.canary_id, "seconds": seconds,
            "steps": steps}


def _gpus(cfg) -> float:
    """GPUs the Ray cluster offers (0 on this CPU machine)."""
    import ray

    from recsys.raycluster import ensure_ray

    ensure_ray(cfg, log_to_driver=True)   # the pipeline's workers print their epochs into this job's log
    return float(ray.cluster_resources().get("GPU", 0))


def main(argv: list[str] | None = None) -> int:
    result = run(load_config(sys.argv[1:] if argv is None else argv))
    print(json.dumps(result, default=str))
    return 0 if result["release"] != "rejected" else 2


if __name__ == "__main__":
    sys.exit(main())
