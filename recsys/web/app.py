"""The web process: the dashboard (/dashboard, for merchandisers and the ML team) and the storefront
page (/store, for a person to click through the loop), server-rendered by FastAPI with Jinja2 templates.

It runs beside Ray Serve, never in a recommendation replica (`recsys web`, started by `make demo`):
its SQL and page rendering cost no serving CPU, and it reaches the recommender only through the public
HTTP API, as any storefront would. Plotly's JavaScript is served from the installed `plotly` package;
nothing is loaded from a CDN.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from psycopg_pool import ConnectionPool

from recsys.auth import Verifier
from recsys.web import auth
from recsys.web.rollups import Refresher
from recsys.web.serve_client import ServeClient

HERE = Path(__file__).parent
log = logging.getLogger(__name__)


def plotly_js() -> Path:
    """plotly.min.js as the plotly wheel ships it."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class ConsumerLag:
    """The feature consumers' lag, read from the broker at most every `ttl_s` (a page view must not
    open a Kafka admin connection each time); None when the broker does not answer."""

    def __init__(self, cfg, ttl_s: float = 15.0):
        self.cfg, self.ttl_s = cfg, ttl_s
        self._at, self._value, self._lock = 0.0, None, threading.Lock()

    def __call__(self) -> int | None:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                self._at = time.monotonic()
                try:
                    from recsys.features.supervisor import lag

                    self._value = sum(lag(self.cfg).values())
                except Exception as exc:
                    log.warning("consumer lag not read: %s", exc)
                    self._value = None
            return self._value


def create_app(cfg, refresh_rollups: bool = True) -> FastAPI:
    from recsys.services import Postgres
    from recsys.web import dashboard, storefront

    dsn = Postgres(cfg).dsn

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if refresh_rollups:
            app.state.refresher.start()
        yield
        app.state.refresher.stop()
        app.state.serve.close()
        app.state.pool.close()

    app = FastAPI(title="recsys dashboard and store", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.cfg = cfg
    app.state.pool = ConnectionPool(dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True)
    a = cfg.auth
    app.state.verifier = Verifier(lambda: app.state.pool.connection(timeout=float(a.lookup_timeout_s)),
                                  float(a.cache_ttl_s), int(a.retry_after_s))
    app.state.serve = ServeClient(str(cfg.web.serve_url), float(cfg.web.serve_timeout_s))
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.consumer_lag = ConsumerLag(cfg)
    app.state.refresher = Refresher(cfg, dsn)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(auth.NotSignedIn)
    def not_signed_in(request: Request, exc: auth.NotSignedIn):
        if request.url.path.startswith("/dashboard/api/"):
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        return RedirectResponse(f"/login?reason={exc.reason[:200]}", status_code=303)

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/dashboard", status_code=303)

    @app.get("/static-lib/plotly.min.js", include_in_schema=False)
    def plotly_bundle():
        return FileResponse(plotly_js(), media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, reason: str | None = None):
        return app.state.templates.TemplateResponse(request, "login.html", {"reason": reason, "session": None})

    @app.post("/login")
    def login(request: Request, key: str = Form(..., max_length=256)):
        try:
            auth.check(app.state.verifier, key.strip())
        except auth.NotSignedIn as exc:
            return app.state.templates.TemplateResponse(request, "login.html", {"reason": exc.reason, "session": None},
                                                        status_code=exc.status)
        return auth.sign_in(RedirectResponse("/dashboard", status_code=303), key.strip(), bool(cfg.web.cookie_secure))

    @app.get("/logout")
    def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.COOKIE, path="/")
        return response

    @app.get("/healthz")
    def healthz():
        with app.state.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        return {"status": "ok", "rollups": app.state.refresher.last}

    app.include_router(dashboard.router)
    app.include_router(storefront.router)
    return app


def main(argv: list[str] | None = None) -> int:
    """`recsys web [overrides]`: serve the dashboard and the store until stopped."""
    import uvicorn

    from recsys.config import load_config

    cfg = load_config(argv or [])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(cfg), host=str(cfg.web.host), port=int(cfg.web.port), log_level="warning")
    return 0
