"""`recsys rules ...`: the merchandising rule sets from a terminal, the same steps as /v1/admin/rules.

    recsys rules validate FILE                 OK and the rule count, or every error as `PATH: reason`
    recsys rules create FILE [--based-on V]    store a draft; prints its version
    recsys rules list | show V | audit [--version V]
    recsys rules schema [--write]              the JSON Schema (--write: conf/rules/schema.json)
    recsys rules preview --surface S [--user U] [--sku X] [--cart A,B] [--device D] [--geo G] (--version V | --file F)
    recsys rules shadow V | report V [--json] | publish V | rollback | archive V

It talks to Postgres directly (like `recsys keys`); every change is audited as `cli:<os user>`. A
preview builds the serving pipeline in this process (it needs the services and the data, as serving
does) and prints the live rail and the draft's side by side. Exit status 1 on an invalid file, a
transition the version's state does not allow, or an unknown version.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from recsys.config import PROJECT_ROOT

SCHEMA_PATH = PROJECT_ROOT / "conf" / "rules" / "schema.json"


class CliError(Exception):
    """A message for the terminal and exit status 1."""


def actor() -> str:
    """Who did it, as the audit log records a change made from this CLI."""
    try:
        user = getpass.getuser()
    except Exception:   # no login name (a container without a passwd entry)
        user = "unknown"
    return f"cli:{user}"


def schema_text() -> str:
    """The published JSON Schema as conf/rules/schema.json holds it (sorted keys, indent 2)."""
    from recsys.rules.schema import json_schema

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def surfaces_of(cfg) -> list[str]:
    return list(cfg.surfaces.keys())


def read_document(path: str) -> Any:
    """The JSON document in `path` (`-`: standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def checked(document: Any, surfaces: list[str], source: str):
    """The validated RuleSet, or CliError listing every error as `PATH: reason`."""
    from recsys.rules.schema import validate

    ruleset, errors = validate(document, surfaces)
    if errors:
        lines = [f"{e['path']}: {e['reason']}" for e in errors]
        raise CliError(f"{source}: invalid rule set ({len(errors)} error{'s' * (len(errors) != 1)})\n" + "\n".join(lines))
    return ruleset


def _rules(n: int) -> str:
    return f"{n} rule{'s' * (n != 1)}"


def _version(text: str) -> int:
    """A version as the CLI takes it: `3` or `rules-v3`."""
    try:
        value = int(str(text).removeprefix("rules-v"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version: {text!r} (a number, or rules-vN)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a version: {text!r}")
    return value


# -- the parser ----------------------------------------------------------------------------------------

def register(sub) -> argparse.ArgumentParser:
    """Add `rules` and its actions to the `recsys` subparsers."""
    p = sub.add_parser("rules", help="merchandising rule sets: validate | create | list | show | schema | preview | "
                                     "shadow | report | publish | rollback | archive | audit",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True)

    a = actions.add_parser("validate", help="check a rule set file: OK and its rule count, or every error's JSON path")
    a.add_argument("file", help="a JSON rule set (- for standard input)")

    a = actions.add_parser("create", help="store a rule set file as a new draft version; prints the version")
    a.add_argument("file", help="a JSON rule set (- for standard input)")
    a.add_argument("--based-on", type=_version, default=None, metavar="V",
                   help="the version the audit's diff is against (default: the live one)")

    a = actions.add_parser("list", help="every version, newest first, with its state")
    a.add_argument("--json", action="store_true", help="as JSON")

    a = actions.add_parser("show", help="one version: its state and body")
    a.add_argument("version", type=_version)
    a.add_argument("--json", action="store_true", help="as JSON (summary and body)")

    a = actions.add_parser("schema", help="the JSON Schema of a rule set")
    a.add_argument("--write", action="store_true", help=f"write it to {SCHEMA_PATH.relative_to(PROJECT_ROOT)}")

    a = actions.add_parser("preview", help="one request's rail under live and under a draft, side by side")
    a.add_argument("--surface", required=True)
    a.add_argument("--user", default=None, help="user id")
    a.add_argument("--session", default=None, help="session id")
    a.add_argument("--sku", default=None, help="the page's SKU(s), comma-separated")
    a.add_argument("--cart", default=None, help="the cart's SKUs, comma-separated")
    a.add_argument("--device", default=None)
    a.add_argument("--geo", default=None)
    a.add_argument("-k", "--k", type=int, default=12, help="slots (1-50)")
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=_version, default=None, help="a stored version")
    which.add_argument("--file", default=None, help="an unsaved rule set file")
    a.add_argument("--json", action="store_true", help="the whole preview as JSON")

    a = actions.add_parser("shadow", help="run a draft in shadow on a share of requests (never served)")
    a.add_argument("version", type=_version)

    a = actions.add_parser("report", help="what a version did in shadow against live")
    a.add_argument("version", type=_version)
    a.add_argument("--json", action="store_true", help="as JSON")

    a = actions.add_parser("publish", help="make a draft or the shadow set live (the live one is archived)")
    a.add_argument("version", type=_version)

    actions.add_parser("rollback", help="the version live before the current one becomes live again")

    a = actions.add_parser("archive", help="retire a version (archiving the live one serves without rules)")
    a.add_argument("version", type=_version)

    a = actions.add_parser("audit", help="who did what when, newest first")
    a.add_argument("--version", type=_version, default=None)
    a.add_argument("--limit", type=int, default=200)
    a.add_argument("--json", action="store_true", help="as JSON (with each change's JSON Patch)")

    p.set_defaults(run=run)
    return p


def main(argv: list[str] | None = None, cfg=None) -> int:
    """`recsys rules ...` on its own (tests, `python -m recsys.rules.cli`): argv without the leading
    `rules`; what the parser does not know is a Hydra override."""
    parser = argparse.ArgumentParser(prog="recsys")
    register(parser.add_subparsers(dest="command", required=True))
    args, overrides = parser.parse_known_args(["rules", *(sys.argv[1:] if argv is None else argv)])
    if cfg is None:
        from recsys.config import load_config

        cfg = load_config(overrides)
    return run(args, cfg)


def run(args, cfg) -> int:
    from recsys.rules.store import RuleSetError

    try:
        return ACTIONS[args.action](args, cfg)
    except CliError as exc:
        print(exc, file=sys.stderr)
        return 1
    except RuleSetError as exc:
        kind = "not found" if exc.status == 404 else "refused"
        print(f"{kind}: {exc}", file=sys.stderr)
        return 1


# -- the actions that need no database -------------------------------------------------------------------

def _validate(args, cfg) -> int:
    ruleset = checked(read_document(args.file), surfaces_of(cfg), args.file)
    counts: dict[str, int] = {}
    for rule in ruleset.rules:
        counts[rule.kind] = counts.get(rule.kind, 0) + 1
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    print(f"OK: {ruleset.name!r}, {_rules(len(ruleset.rules))}"
          + (f" ({kinds})" if kinds else ""))
    return 0


def _schema(args, cfg) -> int:
    text = schema_text()
    if args.write:
        SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_PATH.write_text(text)
        print(f"written: {SCHEMA_PATH}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# -- the actions on Postgres ---------------------------------------------------------------------------

def _connect(cfg):
    import psycopg

    from recsys.db.migrate import migrate
    from recsys.services import Postgres

    try:
        conn = psycopg.connect(Postgres(cfg).dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise CliError(f"Postgres is not reachable ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc}); "
                       "`recsys services up` starts it") from None
    migrate(conn)   # a database from before the rule tables
    return conn


def _summary_line(s) -> str:
    return (f"{s.version:>5}  {'rules-v' + str(s.version):<10} {s.state:<9} {len(s.body.get('rules', [])):>5}  "
            f"{s.created_at:%Y-%m-%d %H:%M}  {s.created_by:<28.28} {s.name}")


HEADER = f"{'ver':>5}  {'label':<10} {'state':<9} {'rules':>5}  {'created':<16}  {'by':<28} name"


def _create(args, cfg) -> int:
    from recsys.rules import store

    ruleset = checked(read_document(args.file), surfaces_of(cfg), args.file)
    body = ruleset.model_dump(mode="json", by_alias=True, exclude_none=True)
    with _connect(cfg) as conn:
        stored = store.create(conn, body, actor(), args.based_on)
    print(stored.version)
    against = f"rules-v{stored.based_on}" if stored.based_on else "nothing (no live set)"
    print(f"created {store.label(stored.version)}: draft {stored.name!r}, {_rules(len(ruleset.rules))}; "
          f"diff against {against} in `recsys rules audit --version {stored.version}`", file=sys.stderr)
    return 0


def _list(args, cfg) -> int:
    from recsys.rules import store

    with _connect(cfg) as conn:
        sets = store.list_sets(conn)
    if args.json:
        print(json.dumps([s.summary() for s in sets], indent=2))
        return 0
    if not sets:
        print("no rule sets stored (recsys rules create FILE)")
        return 0
    print(HEADER)
    for s in sets:
        print(_summary_line(s))
    return 0


def _show(args, cfg) -> int:
    from recsys.rules import store

    with _connect(cfg) as conn:
        stored = store.get(conn, args.version)
    if args.json:
        print(json.dumps(stored.as_dict(), indent=2))
        return 0
    s = stored.summary()
    print(f"{s['label']}  {s['state']}  {s['name']!r}: {_rules(s['rules'])}")
    print(f"created {s['created_at']} by {s['created_by']}"
          + (f", based on rules-v{s['based_on']}" if s["based_on"] else "") + f"; state since {s['state_changed_at']}")
    print(json.dumps(stored.body, indent=2))
    return 0


def _transition(name: str):
    def act(args, cfg) -> int:
        from recsys.rules import store

        with _connect(cfg) as conn:
            if name == "rollback":
                stored = store.rollback(conn, actor())
            else:
                stored = getattr(store, name)(conn, args.version, actor())
        done = {"shadow": "in shadow", "publish": "live", "rollback": "live again", "archive": "archived"}[name]
        print(f"{store.label(stored.version)} ({stored.name!r}) is {done}"
              + (f"; serving replicas apply it within {cfg.rules.poll_s} s" if name in ("publish", "rollback") else "")
              + (f"; it runs on {float(cfg.rules.shadow.share):.0%} of requests, never served" if name == "shadow" else ""))
        return 0
    return act


def _catalog_size(conn) -> int | None:
    try:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    except Exception:
        return None


def _report(args, cfg) -> int:
    from recsys.rules import shadow, store

    with _connect(cfg) as conn:
        store.get(conn, args.version)   # 404 for an unknown version
        report = shadow.report(conn, args.version, _catalog_size(conn))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(report_lines(report)))
    return 0


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _block_lines(b: dict, indent: str = "  ") -> list[str]:
    pins = b["pins"]
    span = f"  ({b['first_run']} .. {b['last_run']})" if b.get("first_run") else ""
    share = f" ({pins['share']:.0%})" if pins["share"] is not None else ""
    return [
        f"{indent}runs               {b['runs']}{span}",
        f"{indent}overlap@k          {_fmt(b['overlap_at_k'])}   (share of the live rail the shadow rail kept)",
        f"{indent}pins honoured      {pins['honoured']} of {pins['applied']}{share}",
        f"{indent}blocked removed    {b['blocked_removed']}   (live items the shadow set would block)",
        f"{indent}margin             live {_fmt(b['margin']['live'])}   shadow {_fmt(b['margin']['shadow'])}",
        f"{indent}price              live {_fmt(b['price']['live'], 2)}   shadow {_fmt(b['price']['shadow'], 2)}",
        f"{indent}long-tail share    live {_fmt(b['long_tail_share']['live'])}   shadow {_fmt(b['long_tail_share']['shadow'])}",
        f"{indent}slots time (ms)    live mean {_fmt(b['extra_ms']['live_slots_mean'])}   shadow p50 "
        f"{_fmt(b['extra_ms']['shadow_p50'])}   p95 {_fmt(b['extra_ms']['shadow_p95'])}",
    ]


def report_lines(report: dict) -> list[str]:
    """recsys.rules.shadow.report as lines for a terminal."""
    lines = [f"{report['label']}: shadow runs against live"]
    if not report["runs"]:
        return lines + ["  no shadow runs recorded yet (recsys rules shadow V; runs land every rules.shadow.flush_s)"]
    lines += _block_lines(report)
    cov = report.get("coverage", {})
    distinct = cov.get("distinct_skus", {})
    share = "" if "live_share" not in cov else \
        f"   (of the catalog: live {cov['live_share']:.1%}, shadow {cov['shadow_share']:.1%})"
    lines.append(f"  coverage (SKUs)    live {distinct.get('live', 0)}   shadow {distinct.get('shadow', 0)}{share}")
    for surface, block in report.get("surfaces", {}).items():
        lines += [f"  {surface}:"] + _block_lines(block, "    ")
    return lines


VERSION_KEYS = ("against", "replaced", "replaced_by")   # audit details that name a version


def _audit(args, cfg) -> int:
    from recsys.rules import store

    with _connect(cfg) as conn:
        rows = store.audit_log(conn, args.version, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no audit entries" + (f" for rules-v{args.version}" if args.version else ""))
        return 0
    for row in rows:
        d = dict(row["detail"] or {})
        patch = d.pop("diff", None)
        moved = f"{d.pop('from_state', '')}->{d.pop('to_state', '')}".strip("->")
        parts = [f"{k.replace('_', ' ')} {'rules-v' + str(v) if k in VERSION_KEYS else v}"
                 for k, v in d.items() if v is not None]
        if patch is not None:
            parts.append(f"{len(patch)} change{'s' * (len(patch) != 1)}")
        print(f"{row['at'][:19]}  {row['action']:<9} {'rules-v' + str(row['version']):<10} {moved:<16} {row['actor']}"
              + (f"  ({', '.join(parts)})" if parts else ""))
    return 0


# -- preview -----------------------------------------------------------------------------------------

def _preview(args, cfg) -> int:
    import psycopg

    from recsys.rules import store
    from recsys.serve.request import RecRequest

    surfaces = surfaces_of(cfg)
    if args.surface not in surfaces:
        raise CliError(f"unknown surface {args.surface!r}; one of {', '.join(surfaces)}")
    if not 1 <= args.k <= 50:
        raise CliError("-k: between 1 and 50")
    if args.file is not None:
        ruleset, name = checked(read_document(args.file), surfaces, args.file), "draft"
    else:
        with _connect(cfg) as conn:
            stored = store.get(conn, args.version)
        ruleset, name = checked(stored.body, surfaces, store.label(stored.version)), store.label(stored.version)

    from recsys.serve.recommender import Recommender
    from recsys.services import Postgres

    recommender = Recommender(cfg)
    res = recommender.res
    res.poll_rules()   # the live set, as a replica has it
    if res.rules.live is None:   # the pool may not have had a connection ready yet: once more, on our own
        try:
            with psycopg.connect(Postgres(cfg).dsn, autocommit=True, connect_timeout=5) as conn:
                res.rules.poll(conn, res.catalog, [sku for sku, _ in res.bestsellers])
        except psycopg.OperationalError:
            pass
    popularity = [sku for sku, _ in res.bestsellers]
    draft = res.rules.compile(ruleset, name, popularity)
    if draft is None:
        raise CliError("no catalog snapshot: is the data loaded (recsys data load) and Postgres up?")
    req = RecRequest(surface=args.surface, user_id=args.user, session_id=args.session, skus=_skus(args.sku),
                     cart=_skus(args.cart), device=args.device, geo=args.geo, k=args.k, explain=True)
    result = recommender.preview(req, {"live": res.rules.live, "draft": draft})
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(preview_lines(result)))
    return 0


def _skus(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def preview_lines(result: dict) -> list[str]:
    """Recommender.preview's answer as a side-by-side table: slot, live sku/source, draft sku/source,
    and the rule notes of each slot (draft first; a `*` marks a slot the draft changed)."""
    live, draft = result["live"], result["draft"]
    lines = [f"surface {result['surface']}  request {result['request_id']}",
             f"live: {live['rule_set_version'] or 'no rules'}   draft: {draft['rule_set_version']}"
             + (f"   degraded: {', '.join(result['degraded'])}" if result.get("degraded") else "")]
    rows = [("slot", "live sku", "live source", "", "draft sku", "draft source", "rules")]
    n = max(len(live["items"]), len(draft["items"]))
    for i in range(n):
        a = live["items"][i] if i < len(live["items"]) else None
        b = draft["items"][i] if i < len(draft["items"]) else None
        notes = []
        if b is not None:
            notes += [f"draft: {note}" for note in b.get("explain", {}).get("rules", []) or []]
        if a is not None:
            notes += [f"live: {note}" for note in a.get("explain", {}).get("rules", []) or []]
        changed = (a or {}).get("sku") != (b or {}).get("sku")
        rows.append((str(i + 1), a["sku"] if a else "-", a["source"] if a else "", "*" if changed else "",
                     b["sku"] if b else "-", b["source"] if b else "", "; ".join(notes)))
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    for r in rows:
        cells = "  ".join(cell.ljust(w) if c else cell.rjust(w) for c, (cell, w) in enumerate(zip(r[:6], widths)))
        lines.append((cells + ("  " + r[6] if r[6] else "")).rstrip())
    for side, rail in (("live", live), ("draft", draft)):
        explained = rail.get("rules") or {}
        details = []
        for sku, rule in (explained.get("blocked") or {}).items():
            details.append(f"blocked {sku} ({rule})")
        for rule, why in (explained.get("unmet") or {}).items():
            details.append(f"unmet {rule}: {why}")
        for rule, why in (explained.get("inactive") or {}).items():
            details.append(f"inactive {rule}: {why}")
        for rule, pin in (explained.get("pins") or {}).items():
            details.append(f"pin {rule} at slot {pin['slot']}: {'honoured' if pin['honoured'] else 'not honoured'}")
        if details:
            lines.append(f"{side}:")
            lines += [f"  {d}" for d in details]
    return lines


ACTIONS = {
    "validate": _validate, "create": _create, "list": _list, "show": _show, "schema": _schema,
    "preview": _preview, "shadow": _transition("shadow"), "report": _report, "publish": _transition("publish"),
    "rollback": _transition("rollback"), "archive": _transition("archive"), "audit": _audit,
}


if __name__ == "__main__":
    sys.exit(main())
