"""The dashboard's pages and the calls its scripts make. Numbers come from the rollups (SQL, this
process's pool); rules, models, the canary and previews come from the Serve API, called with the
signed-in user's key, so the API's role checks are the only ones that decide what a user may change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from recsys.web import metrics
from recsys.web.auth import Session, signed_in
from recsys.web.catalog_cards import cards
from recsys.web.serve_client import ServeUnavailable

router = APIRouter()
SURFACES = ("homepage_hero", "pdp_fbt", "cart_upsell")
# What the dashboard's scripts may reach through /dashboard/api/admin/...: the rules and release APIs.
PROXIED = ("rules", "models", "canary")


def _page(request: Request, name: str, session: Session, **context) -> Response:
    return request.app.state.templates.TemplateResponse(
        request, name, {"session": session, "page": name.removesuffix(".html"), **context})


def _serve_json(request: Request, session: Session, path: str) -> tuple[object | None, str | None]:
    """GET an admin resource with the user's key: (body, None) or (None, why not)."""
    try:
        answer = request.app.state.serve.call("GET", path, session.key)
    except ServeUnavailable as exc:
        return None, str(exc)
    if answer.status_code != 200:
        return None, f"{path}: {answer.status_code} {answer.text[:300]}"
    return answer.json(), None


@router.get("/dashboard")
def overview(request: Request, hours: float = Query(48, gt=0, le=24 * 30), session: Session = Depends(signed_in)):
    cfg = request.app.state.cfg
    with request.app.state.pool.connection() as conn:
        by_surface = metrics.traffic(conn, hours, "surface")
        by_arm = metrics.traffic(conn, hours, "arm")
        totals = metrics.totals(conn, 24)
        events = metrics.events_per_second(conn, 60)
        fresh = metrics.freshness(conn)
    lag = request.app.state.consumer_lag()
    charts = {"by_surface": by_surface, "by_arm": by_arm, "events": events}
    return _page(request, "overview.html", session, totals=totals, charts=json.dumps(charts, default=str),
                 lag=lag, fresh=fresh, hours=hours, serve_url=cfg.web.serve_url)


@dataclass
class ZeroFilter:
    """The zero-impression table's filters, as the form sends them ('' = every)."""

    category: str | None = None
    brand: str | None = None
    price_band: int | None = None

    def rows(self, request: Request, conn, limit: int | None = 500) -> tuple[int, list[dict]]:
        after_h = float(request.app.state.cfg.web.zero_impression_after_h)
        return metrics.zero_impression_skus(conn, after_h, self.category, self.brand, self.price_band, limit=limit)


def zero_filter(category: str = Query("", max_length=200), brand: str = Query("", max_length=200),
                price_band: str = Query("", max_length=4)) -> ZeroFilter:
    return ZeroFilter(category or None, brand or None, int(price_band) if price_band.isdigit() else None)


@router.get("/dashboard/catalog")
def catalog(request: Request, chosen: ZeroFilter = Depends(zero_filter), session: Session = Depends(signed_in)):
    cfg = request.app.state.cfg
    with request.app.state.pool.connection() as conn:
        health = metrics.catalog_health(conn, float(cfg.web.high_margin))
        count, rows = chosen.rows(request, conn)
        options = metrics.filter_options(conn)
        fresh = metrics.freshness(conn)
    return _page(request, "catalog.html", session, health=health, count=count, rows=rows, options=options,
                 chosen=chosen, after_h=cfg.web.zero_impression_after_h, fresh=fresh)


@router.get("/dashboard/catalog/zero-impressions.csv")
def zero_impressions_csv(request: Request, chosen: ZeroFilter = Depends(zero_filter),
                         session: Session = Depends(signed_in)):
    with request.app.state.pool.connection() as conn:
        _, rows = chosen.rows(request, conn, limit=None)
    return Response(metrics.zero_impression_csv(rows), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="zero-impression-skus.csv"'})


@router.get("/dashboard/rules")
def rules(request: Request, session: Session = Depends(signed_in)):
    sets, error = _serve_json(request, session, "/v1/admin/rules")
    audit, audit_error = _serve_json(request, session, "/v1/admin/rules/audit?limit=50")
    live = next((s for s in sets or [] if s.get("state") == "live"), None)
    draft = None
    if live is not None:
        body, _ = _serve_json(request, session, f"/v1/admin/rules/{live['version']}")
        draft = (body or {}).get("body")
    if draft is None:   # nothing live yet: start from an example
        example = Path(request.app.state.cfg.rules.examples, "cart-margin-floor.json")
        draft = json.loads(example.read_text()) if example.exists() else {"rules": []}
    return _page(request, "rules.html", session, sets=sets or [], audit=audit or [], error=error or audit_error,
                 draft=json.dumps(draft, indent=2), surfaces=SURFACES)


@router.get("/dashboard/models")
def models(request: Request, session: Session = Depends(signed_in)):
    registry, error = _serve_json(request, session, "/v1/admin/models")
    canary, canary_error = _serve_json(request, session, "/v1/admin/canary")
    return _page(request, "models.html", session, models=list(reversed(registry or [])), canary=canary or {},
                 error=error or canary_error)


@router.get("/dashboard/preview")
def preview(request: Request, user_id: str = "", sku: str = "", cart: str = "",
            session: Session = Depends(signed_in)):
    cfg = request.app.state.cfg
    rails, errors = {}, {}
    with request.app.state.pool.connection() as conn:
        if not sku or not cart:   # a sensible start: a device and an accessory of it
            row = conn.execute("SELECT e.src_sku, e.dst_sku FROM item_edges e JOIN items i ON i.sku = e.src_sku "
                               "WHERE i.stock > 0 ORDER BY e.src_sku LIMIT 1").fetchone()
            if row:
                sku, cart = sku or row[0], cart or row[0]
        asks = {"homepage_hero": {}, "pdp_fbt": {"sku": sku}, "cart_upsell": {"cart": cart}}
        for surface, extra in asks.items():
            try:
                body = request.app.state.serve.rail(surface, {"user_id": user_id, **extra})
                rails[surface] = {"cards": cards(conn, cfg, body["items"]),
                                  "model_version": body.get("model_version"), "arm": body.get("arm"),
                                  "rule_set_version": body.get("rule_set_version"), "degraded": body.get("degraded")}
            except ServeUnavailable as exc:
                errors[surface] = str(exc)
    return _page(request, "preview.html", session, rails=rails, errors=errors,
                 ask={"user_id": user_id, "sku": sku, "cart": cart})


EXPERIMENT_PLOTS = ("sim-ab-lifts.png", "sim-ab-shares.png", "sim-ab-basket.png")


@router.get("/dashboard/experiments")
def experiments(request: Request, session: Session = Depends(signed_in)):
    """The last simulated A/B test (`recsys sim ab --record`): lifts with intervals, per-arm means, plots."""
    folder = Path(request.app.state.cfg.web.experiments_dir)
    try:
        result = json.loads((folder / "sim-ab.json").read_text())
    except (OSError, ValueError):
        result = None
    means = {}
    if result:
        for arm in result["seeds"][0]:
            means[arm] = {m: sum(s[arm][m] for s in result["seeds"]) / len(result["seeds"])
                          for m in result["seeds"][0][arm]}
    plots = [name for name in EXPERIMENT_PLOTS if (folder / name).exists()]
    return _page(request, "experiments.html", session, result=result, means=means, plots=plots)


@router.get("/dashboard/experiments/{name}")
def experiment_plot(request: Request, name: str, session: Session = Depends(signed_in)):
    if name not in EXPERIMENT_PLOTS:
        raise HTTPException(404, "no such plot")
    path = Path(request.app.state.cfg.web.experiments_dir) / name
    if not path.exists():
        raise HTTPException(404, "no such plot")
    return FileResponse(path, media_type="image/png")


@router.post("/dashboard/api/rules/preview")
def rules_preview(request: Request, ask: dict = Body(...), session: Session = Depends(signed_in)):
    """The rule API's preview (live beside the draft) with product cards for both rails."""
    try:
        answer = request.app.state.serve.call("POST", "/v1/admin/rules/preview", session.key, json=ask)
    except ServeUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    if answer.status_code != 200:
        return JSONResponse(answer.json(), status_code=answer.status_code)
    body = answer.json()
    with request.app.state.pool.connection() as conn:
        for name in ("live", "draft"):
            if name in body:
                body[name]["cards"] = cards(conn, request.app.state.cfg, body[name]["items"])
    return body


@router.api_route("/dashboard/api/admin/{path:path}", methods=["GET", "POST"])
async def admin(request: Request, path: str, session: Session = Depends(signed_in)):
    """The rules and release APIs with the signed-in user's key (their answers as they are)."""
    if path.split("/", 1)[0] not in PROXIED:
        raise HTTPException(404, "not an admin resource the dashboard uses")
    body = await request.body()
    try:
        answer = await run_in_threadpool(
            request.app.state.serve.call, request.method, f"/v1/admin/{path}", session.key,
            params=dict(request.query_params), content=body or None,
            headers={"Content-Type": "application/json"} if body else None)
    except ServeUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    return Response(answer.content, status_code=answer.status_code,
                    media_type=answer.headers.get("content-type", "application/json"))
