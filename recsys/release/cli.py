"""`recsys models ...`, `recsys canary ...`, `recsys nightly`, `recsys incremental`: releasing models
from a terminal, the same steps as /v1/admin/models and /v1/admin/canary.

    recsys models list [--kind K]             every version: kind, stage, gates, created
    recsys models gates VERSION [--rerun]     its gate report (--rerun: check it again now)
    recsys models release VERSION [...]       gates, then a canary (or live): what the trainers do
    recsys canary status [--json]             stage, arms, per-arm metrics, the test, the decision log
    recsys canary advance|rollback|abort [--reason R]
    recsys canary watch [--on-ray | --stop]   the controller: in this terminal, or as a Ray actor
    recsys nightly                            train everything, then one release (recsys/train/nightly.py)
    recsys incremental [--watch]              ALS fold-in and cold-item vectors, each through its gates
                                              (--watch: every release.incremental_every_min minutes)

Every change is audited as `cli:<os user>`. Exit status 1 when a transition is refused.
"""

from __future__ import annotations

import json
import sys

import psycopg

from recsys.rules.cli import actor


def _conn(cfg):
    from recsys.db.migrate import migrate
    from recsys.services import Postgres

    conn = psycopg.connect(Postgres(cfg).dsn, autocommit=True, connect_timeout=5)
    migrate(conn)
    return conn


def _models(args, cfg) -> int:
    from recsys import registry
    from recsys.release.gates import GateReport, run_gates
    from recsys.release.promote import release

    with _conn(cfg) as conn:
        if args.action == "list":
            for r in registry.list_models(conn, args.kind):
                gates = "-" if r.gates is None else ("passed" if r.gates["passed"] else "FAILED")
                print(f"{r.version:<34} {r.kind:<10} {r.stage:<10} gates {gates:<7} {r.created_at:%Y-%m-%d %H:%M}")
            return 0
        if args.action == "gates":
            try:
                record = registry.get(conn, args.version)
            except KeyError as exc:
                print(exc.args[0], file=sys.stderr)
                return 1
            if args.rerun or record.gates is None:
                report = run_gates(conn, cfg, args.version)
            else:
                report = GateReport.from_dict(record.gates)
            print("\n".join(report.lines()))
            return 0 if report.passed else 1
        versions = {}
        for version in args.versions:
            try:
                versions[registry.get(conn, version).kind] = version
            except KeyError as exc:
                print(exc.args[0], file=sys.stderr)
                return 1
        outcome = release(conn, cfg, versions, actor())
        print(outcome.line())
        return 0 if outcome.action in ("live", "canary") else 1


def _canary(args, cfg) -> int:
    from recsys.release import canary as canaries
    from recsys.release import controller
    from recsys.serve.release_api import status_of
    from recsys.services import Postgres

    if args.action == "watch":
        if args.stop:
            print("controller stopped" if controller.stop_on_ray(cfg) else "no controller actor was running")
        elif args.on_ray:
            print(controller.start_on_ray(cfg))
        else:
            print(f"canary controller: a tick every {cfg.release.canary.controller_interval_s} s (Ctrl-C stops)")
            controller.watch(Postgres(cfg).dsn, float(cfg.release.canary.controller_interval_s), args.seconds)
        return 0
    with _conn(cfg) as conn:
        if args.action == "status":
            status = status_of(conn)
            if args.json:
                print(json.dumps(status, indent=2, default=str))
            else:
                print("\n".join(status_lines(status)))
            return 0
        c = canaries.running(conn) or (canaries.latest(conn) if args.action == "rollback" else None)
        if c is None:
            print("no canary is running", file=sys.stderr)
            return 1
        move = {"advance": canaries.advance, "rollback": canaries.rollback, "abort": canaries.abort}[args.action]
        try:
            moved = move(conn, c.canary_id, actor(), args.reason or f"{args.action} from the command line")
        except canaries.CanaryError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"canary {moved.canary_id}: {moved.state}, stage {moved.stage} ({moved.share:.0%})")
        return 0


def status_lines(status: dict) -> list[str]:
    c = status["canary"]
    if c is None:
        return ["no canary has run"]
    out = [f"canary {c['canary_id']}: {c['state']}, stage {c['stage'] + 1}/{len(c['settings']['stages'])} "
           f"({c['share']:.0%} of users), started {c['started_at']:%Y-%m-%d %H:%M:%S}",
           "  control: " + ", ".join(c["control"].values()),
           "  canary:  " + ", ".join(c["canary_models"].values())]
    for scope in ("since_start", "this_stage"):
        for arm, m in status["numbers"][scope].items():
            out.append(f"  {scope:<11} {arm:<8} impressions {m['impressions']:>7}  CTR {m['ctr']:.4f}  "
                       f"add-to-cart {m['add_to_cart_rate']:.4f}  conversion {m['conversion']:.4f}  "
                       f"revenue/impression {m['revenue_per_impression']:.2f}")
    t = status["numbers"]["test"]
    se, hold = t.get("std_error"), c["settings"].get("hold_below_se")
    out.append(f"  test: {t['name']}: theta {t['theta']:+.4f}"
               + (f" ({t['theta'] / se:+.1f} standard errors)" if se else "")
               + f", likelihood ratio {t['likelihood_ratio']:.2f} (rolls back at >= {t['threshold']:.0f} with theta < 0"
               + (f"; a stage holds while theta < -{hold:g} standard errors)" if hold is not None else ")"))
    for entry in status["log"]:
        out.append(f"  {entry['at']:%Y-%m-%d %H:%M:%S} {entry['action']:<8} {entry['actor']}: {entry['reason']}")
    return out


def _nightly(args, cfg) -> int:
    from recsys.train.nightly import run

    result = run(cfg)
    print(json.dumps(result, default=str))
    return 0 if result["release"] != "rejected" else 2


def _incremental(args, cfg) -> int:
    """Once, or with --watch every `release.incremental_every_min` minutes (a long-running Ray job:
    `ray job submit -- recsys incremental --watch`); a failed round is reported and the next one runs."""
    import time

    from recsys.train.cold_items import embed_cold_items
    from recsys.train.incremental import run

    every_s = float(cfg.release.incremental_every_min) * 60
    while True:
        started = time.monotonic()
        try:
            print(run(cfg), flush=True)
            print(embed_cold_items(cfg), flush=True)
        except Exception as exc:
            if not args.watch:
                raise
            print(f"incremental round failed ({type(exc).__name__}: {exc}); next in {every_s:.0f} s", flush=True)
        if not args.watch:
            return 0
        time.sleep(max(0.0, every_s - (time.monotonic() - started)))


def register(sub) -> None:
    p = sub.add_parser("models", help="the model registry: list | gates VERSION | release VERSION...")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="every version with its kind, stage and gates")
    a.add_argument("--kind", default=None)
    a = actions.add_parser("gates", help="a version's gate report")
    a.add_argument("version")
    a.add_argument("--rerun", action="store_true", help="check the gates again now (and store the report)")
    a = actions.add_parser("release", help="gates, then a canary or live (versions of different kinds go together)")
    a.add_argument("versions", nargs="+")
    p.set_defaults(run=_models)

    p = sub.add_parser("canary", help="the canary: status | advance | rollback | abort | watch")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("status", help="stage, arms, per-arm metrics, the rollback test, the decision log")
    a.add_argument("--json", action="store_true")
    for name in ("advance", "rollback", "abort"):
        a = actions.add_parser(name)
        a.add_argument("--reason", default="", help="why, for the audit log")
    a = actions.add_parser("watch", help="run the controller (here, or --on-ray as a detached actor)")
    a.add_argument("--on-ray", action="store_true")
    a.add_argument("--stop", action="store_true", help="remove the controller actor")
    a.add_argument("--seconds", type=float, default=None, help="in this terminal, stop after this long")
    p.set_defaults(run=_canary)

    p = sub.add_parser("nightly", help="train the two-tower, ALS and the ranker, then release them (gates, canary)")
    p.set_defaults(run=_nightly)
    p = sub.add_parser("incremental", help="ALS fold-in and cold-item vectors, each through its gates")
    p.add_argument("--watch", action="store_true", help="again every release.incremental_every_min minutes")
    p.set_defaults(run=_incremental)
