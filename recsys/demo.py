"""`make demo`: services up, the world loaded, content vectors, the consumer, Ray Serve, a load test."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import psycopg

from recsys import services
from recsys.bench.loadgen import run_load
from recsys.bench.requests import sample_paths


def step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def bring_up(cfg, overrides: list[str] | None = None) -> str:
    """Everything up and serving (idempotent); returns the HTTP base URL."""
    from recsys.data import load_world
    from recsys.serve import app
    from recsys.train.pipeline import run as train

    step("services")
    for health in services.up(cfg):
        print("  " + health.line())
    step("data: catalog and history -> Postgres, online features -> Redis")
    print("  " + load_world(cfg).replace("\n", "\n  "))
    step("training pipeline: Ray Data embeddings, two-tower on Ray Train, ALS, evaluation, index, registry")
    if _trained_on_current_data(cfg, "two_tower"):
        print("  a live two-tower trained on this dataset exists: skipped (recsys train retrains)")
    else:
        result = train(cfg)
        print(f"  {result['version']}: NDCG@12 {result['two_tower.ndcg@12']:.4f} "
              f"(ALS {result['als.ndcg@12']:.4f}, popularity {result['popularity.ndcg@12']:.4f}); "
              f"release: {result['release']} (recsys models gates {result['version']})")
    step("learning to rank: 28 features, LightGBM on Ray Train, MLP")
    if _trained_on_current_data(cfg, "ranker"):
        print("  a live ranker trained on this dataset exists: skipped (python -m recsys.rank.train retrains)")
    else:
        from recsys.rank.train import run as train_ranker

        result = train_ranker(cfg)
        print(f"  {result['version']}: NDCG@12 retrieval order {result['retrieval_order_ndcg@12']:.4f}, "
              f"LightGBM {result['lightgbm_ndcg@12']:.4f}, MLP {result['mlp_ndcg@12']:.4f}; release: {result['release']}")
    step("feature consumers (Ray actors, restarted when they crash)")
    from recsys.features import supervisor

    print("  " + ", ".join(supervisor.start(cfg)))
    step("canary controller (a Ray actor: advances or rolls back a running canary)")
    from recsys.release.controller import start_on_ray

    print("  " + start_on_ray(cfg))
    t = step("Ray Serve application")
    url = app.deploy(cfg)
    wait_healthy(url)
    print(f"  {url} healthy after {time.monotonic() - t:.0f} s")
    return url


def ensure_demo_keys(cfg) -> tuple[Path, dict[str, str]]:
    """One API key per role in `<state_dir>/api-keys.json` (mode 0600), kept while they stay valid:
    a second demo reuses them, and replaces only a key that was revoked or lost."""
    from recsys.auth import ROLES, create_key, find_key
    from recsys.services import Postgres

    path = Path(cfg.state_dir) / "api-keys.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    keys = {}
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        for role in ROLES:
            record = find_key(conn, saved[role]) if isinstance(saved.get(role), str) else None
            keys[role] = saved[role] if record is not None and record.active and record.role == role \
                else create_key(conn, role, "demo")[1]
    if keys != saved:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f, indent=2)
    os.chmod(path, 0o600)
    return path, keys


def _trained_on_current_data(cfg, kind: str) -> bool:
    from recsys import registry
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn) as conn:
        live = registry.live(conn, kind)
        loaded = conn.execute("SELECT max(loaded_at) FROM datasets").fetchone()[0]
    return live is not None and loaded is not None and live.created_at > loaded


def wait_healthy(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/healthz did not answer within {timeout} s")


def show_rules(cfg, url: str, key: str, timeout_s: float = 10.0) -> None:
    """Publish conf/rules/examples/demo.json through the admin API and show a rail before and after."""
    from recsys.rules.store import label

    step("merchandising rules: conf/rules/examples/demo.json published through /v1/admin/rules, no deploy")
    headers = {"Authorization": f"Bearer {key}"}
    rail_url = f"{url}/v1/recommendations/homepage_hero?session_id=demo-rules"

    def rail() -> dict:
        return httpx.get(rail_url, timeout=10).json()

    def line(body: dict) -> str:
        return ", ".join(f"{i['sku']} ({i['source']})" for i in body["items"][:5])

    def until(version: str | None) -> tuple[dict, float]:
        started = time.monotonic()
        body = rail()
        while body["rule_set_version"] != version and time.monotonic() - started < timeout_s:
            time.sleep(0.1)
            body = rail()
        return body, time.monotonic() - started

    live = [s for s in httpx.get(f"{url}/v1/admin/rules", headers=headers, timeout=10).json() if s["state"] == "live"]
    for old in live:   # a second demo: the rail without rules first, so that "before" means before
        httpx.post(f"{url}/v1/admin/rules/{old['version']}/archive", headers=headers, timeout=10).raise_for_status()
        print(f"  {old['label']} (live from an earlier run) archived: recsys rules rollback brings it back")
    before, _ = until(None)
    document = json.loads((Path(cfg.rules.examples) / "demo.json").read_text())
    created = httpx.post(f"{url}/v1/admin/rules", json=document, headers=headers, timeout=10)
    created.raise_for_status()
    version = created.json()["version"]
    httpx.post(f"{url}/v1/admin/rules/{version}/publish", headers=headers, timeout=10).raise_for_status()
    after, took = until(label(version))
    print(f"  {len(document['rules'])} rules: {', '.join(r['label'] for r in document['rules'])}")
    print(f"  before ({before['rule_set_version']}): {line(before)}, ...")
    print(f"  after  ({after['rule_set_version']}, live on this replica {took:.1f} s after publishing): {line(after)}, ...")


def run_demo(cfg, overrides: list[str]) -> int:
    from recsys.services import Postgres

    start = time.monotonic()
    url = bring_up(cfg, overrides)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        paths = {s: sample_paths(conn, s, 500, seed=int(cfg.seed)) for s in cfg.surfaces}
    step("a look at each surface")
    for surface, surface_paths in paths.items():
        body = httpx.get(url + surface_paths[0] + "&explain=true", timeout=10).json()
        skus = ", ".join(f"{i['sku']} ({i['source']})" for i in body["items"][:4])
        print(f"  {surface_paths[0]}\n    -> {len(body['items'])} items: {skus}, ...  degraded: {body['degraded']}")
    step(f"load test: {cfg.bench.http_duration_s} s per surface at 50 req/s")
    for surface, surface_paths in paths.items():
        run_load(url, surface_paths[:20], 10, 1)
        print(f"  {surface:<14} " + run_load(url, surface_paths, 50, float(cfg.bench.http_duration_s)).line())
    step("API keys: one per role (recsys keys create|list|revoke)")
    keys_path, keys = ensure_demo_keys(cfg)
    print(f"  {', '.join(keys)} keys in {keys_path} (mode 0600). POST /v1/events needs the storefront key:")
    print(f"  KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"storefront\"])' {keys_path})\n"
          f"  curl -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\\n"
          f"       -d '{{\"type\": \"product_viewed\", \"user_id\": \"u1\", \"sku\": \"...\"}}' {url}/v1/events")
    step("an event through the API -> Kafka -> consumer -> Redis")
    event = {"type": "product_viewed", "user_id": "demo-user", "sku": paths["pdp_fbt"][0].split("sku=")[1],
             "device": "mobile", "geo": "US-CA", "session_id": "demo-session"}
    print("  POST /v1/events " + json.dumps(event))
    print("  -> " + httpx.post(f"{url}/v1/events", json=event, timeout=10,
                               headers={"Authorization": f"Bearer {keys['storefront']}"}).text)
    time.sleep(1.0)
    body = httpx.get(f"{url}/v1/recommendations/homepage_hero?user_id=demo-user", timeout=10).json()
    print(f"  homepage_hero for demo-user now: {[i['sku'] for i in body['items'][:6]]} ...")
    show_rules(cfg, url, keys["merchandiser"])
    step("the dashboard and the storefront page (recsys web: a process beside Serve)")
    web = services.Web(cfg, overrides)
    web.start()
    print(f"  {web.url} up (log: {web.log_file})")
    print(f"\nrecsys is up ({time.monotonic() - start:.0f} s). Try:")
    print(f"  {web.url}/dashboard                    the dashboard: sign in with an API key, e.g.")
    print(f"      ml (models, canary; sees everything)   {keys['ml']}")
    print(f"      merchandiser (rules)                   {keys['merchandiser']}")
    print(f"      viewer (sees, changes nothing)         {keys['viewer']}")
    print(f"  {web.url}/store                        the storefront: click, add to cart, buy; the rails follow")
    print(f"  {url}/docs                                   OpenAPI")
    print(f"  {url}/healthz")
    for surface_paths in paths.values():
        print(f"  {url}{surface_paths[0]}")
    print(f"  API keys in {keys_path}: .venv/bin/recsys keys list | create --role R | revoke ID")
    print("  .venv/bin/recsys rules list | audit | preview | rollback     merchandising rules (docs/merchandising.md)")
    print("  .venv/bin/recsys models list | gates V;  recsys canary status   releases (docs/release.md)")
    print("  .venv/bin/recsys services status | make stop")
    return 0
