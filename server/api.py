"""The HTTP side: a JSON API over :class:`~edgetune.server.store.Store` and the dashboard page.

Routes (all JSON but ``/`` and ``/static/…``; times are seconds since the Unix epoch)::

    GET /                                   the dashboard (HTML)
    GET /api/health                         ok, broker and database state, this process's counters
    GET /api/devices                        every device's row
    GET /api/devices/{device}               one device, with its current status body
    GET /api/devices/{device}/metrics       its newest metrics, oldest first (?limit=)
    GET /api/events                         newest detections first (?device=&limit=&after_seq=)
    GET /api/stats                          stored per type, rejected per reason, duplicates

With a token configured, ``/`` and every ``/api`` route require ``Authorization: Bearer <token>``
(the page also accepts ``?token=`` once, and sends the header on its own requests). The
page's script and style (``/static/…``) hold no data and are served to anyone.
"""

from __future__ import annotations

import secrets
import time
from importlib import resources
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from edgetune.contract import topics
from edgetune.contract.errors import ContractError

from .store import Store, StoreError

#: Largest ``limit`` a query accepts.
MAX_LIMIT = 1000
#: The dashboard's files (package data in ``static/``) and their media types.
_ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
_PAGE_HEADERS = {
    # Scripts and styles from this server only, requests to this server only, no framing.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    # The page may be opened with ?token=…: never send its address anywhere.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

#: ``health()`` returns {"ok": bool, ...}; merged into ``/api/health``.
HealthFn = Callable[[], dict[str, Any]]


def _asset(name: str) -> bytes:
    return resources.files("edgetune.server").joinpath("static", name).read_bytes()


def create_app(store: Store, token: str | None = None, health: HealthFn | None = None) -> FastAPI:
    """The FastAPI application.

    ``token``: if set, required as a bearer token on ``/`` and ``/api/…``. ``health``: reports
    the ingest side (``ok``, counters) for ``/api/health`` and ``/api/stats``; ``None`` when the
    app runs without ingest.
    """
    if token is not None and not token.strip():
        raise ValueError("token is empty; expected None (open) or a non-empty secret")
    expected = token.encode() if token else None

    def _matches(given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), expected or b"")

    def require_token(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _matches(given.strip()):
            return
        raise HTTPException(401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})

    def require_token_or_query(request: Request) -> None:
        if expected is not None and _matches(request.query_params.get("token")):
            return
        require_token(request)

    def device_id(device: str) -> str:
        try:
            return topics.check_device_id(device)
        except ContractError as exc:
            raise HTTPException(422, str(exc)) from None

    app = FastAPI(title="edgetune server", docs_url=None, redoc_url=None, openapi_url=None)
    api = [Depends(require_token)]

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": f"database unavailable: {exc}"}, status_code=503)

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(require_token_or_query)])
    def dashboard() -> Response:
        return HTMLResponse(_asset("dashboard.html"), headers=_PAGE_HEADERS)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(404, f"no such file {name!r}")
        return Response(_asset(name), media_type=_ASSETS[name], headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/api/health", dependencies=api)
    def get_health() -> JSONResponse:
        ingest = health() if health is not None else {"ok": True}
        try:
            store.ping()
            store_ok, store_error = True, None
        except StoreError as exc:
            store_ok, store_error = False, str(exc)
        ok = bool(ingest.get("ok")) and store_ok
        body = {**ingest, "ok": ok, "time": time.time(), "database": {"ok": store_ok, "error": store_error},
                "open": expected is None}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/api/devices", dependencies=api)
    def get_devices() -> dict[str, Any]:
        return {"time": time.time(), "devices": store.devices()}

    @app.get("/api/devices/{device}", dependencies=api)
    def get_device(device: str) -> dict[str, Any]:
        row = store.device(device_id(device))
        if row is None:
            raise HTTPException(404, f"no device {device!r} has sent a valid message")
        return row

    @app.get("/api/devices/{device}/metrics", dependencies=api)
    def get_metrics(device: str, limit: int = Query(100, ge=1, le=MAX_LIMIT)) -> dict[str, Any]:
        device = device_id(device)
        if store.device(device) is None:
            raise HTTPException(404, f"no device {device!r} has sent a valid message")
        return {"device": device, "metrics": store.metrics(device, limit=limit)}

    @app.get("/api/events", dependencies=api)
    def get_events(device: str | None = Query(None, max_length=64), limit: int = Query(50, ge=1, le=MAX_LIMIT),
                   after_seq: int | None = Query(None, ge=0, lt=2**63)) -> dict[str, Any]:
        if after_seq is not None and device is None:
            raise HTTPException(422, "after_seq is a position in one device's stream; give device= too")
        return {"events": store.events(device=None if device is None else device_id(device),
                                       limit=limit, after_seq=after_seq)}

    @app.get("/api/stats", dependencies=api)
    def get_stats() -> dict[str, Any]:
        stats = store.stats()
        if health is not None:
            stats["this_process"] = health().get("counters")
        return stats

    return app
