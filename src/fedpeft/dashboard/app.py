"""The dashboard's web application (Starlette): pages, live fragments, JSON, run files.

It only reads the runs folder. Run ids are folder names checked to sit directly under it, and
only the files a run page links to are served. Listening beyond loopback needs a token that
every request carries (`Authorization: Bearer`, or `?token=` once, which sets a cookie); the
Host header is checked so a web page elsewhere cannot reach a loopback dashboard by DNS
rebinding; pages load nothing from other origins (Content-Security-Policy).
"""

from __future__ import annotations

import hmac
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fedpeft.common.runs.catalog import RunSnapshot, SnapshotCache
from fedpeft.dashboard.pages import ENVIRONMENT, LIVE_SCRIPT, STYLE, chart_svgs
from fedpeft.dashboard.views import (
    LINKED_FILES,
    SERVED_FOLDERS,
    find_run,
    run_detail,
    run_row,
    runs_index,
)

TOKEN_COOKIE = "fedpeft_dashboard"
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class TokenGate:
    """Refuses (401) every request that does not carry the token; a correct `?token=` sets
    an HttpOnly, SameSite=Strict cookie so links and the live script need not repeat it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode("utf-8")

    def _matches(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode("utf-8"), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        bearer = request.headers.get("authorization", "")
        presented = [bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None,
                     request.cookies.get(TOKEN_COOKIE), request.query_params.get("token")]
        if not any(self._matches(value) for value in presented):
            await PlainTextResponse("a valid dashboard token is required", 401)(scope, receive, send)
            return

        async def send_with_cookie(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and self._matches(presented[2]):
                cookie = (f"{TOKEN_COOKIE}={self.token.decode()}; HttpOnly; SameSite=Strict; "
                          "Path=/")
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode("latin-1")))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _headers(response: Response) -> Response:
    response.headers.update(_HEADERS)
    return response


def create_app(runs_dir: Path, token: str | None = None,
               allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")) -> Starlette:
    """The dashboard of `runs_dir`; `token` (required beyond loopback) gates every request."""
    runs_dir = Path(runs_dir)
    cache = SnapshotCache()

    def page(template: str, **context: Any) -> Response:
        html = ENVIRONMENT.get_template(template).render(runs_dir=str(runs_dir), **context)
        return _headers(HTMLResponse(html))

    drawn: dict[Path, tuple[RunSnapshot, dict[str, Any], dict[str, str]]] = {}

    def detail_or_404(request: Request) -> tuple[dict[str, Any], dict[str, str]] | Response:
        """(detail, chart SVGs) of the requested run; both rebuilt only when its files changed."""
        folder = find_run(runs_dir, request.path_params["run_id"])
        if folder is None:
            return _headers(PlainTextResponse(f"no run {request.path_params['run_id']!r}", 404))
        snapshot = cache.read(folder)
        hit = drawn.get(folder)
        if hit is None or hit[0] is not snapshot:
            detail = run_detail(snapshot)
            hit = drawn[folder] = (snapshot, detail, chart_svgs(detail["charts"]))
        return {**hit[1], **run_row(snapshot)}, hit[2]  # the row holds the clock-dependent age

    async def index(request: Request) -> Response:
        return page("index.html", runs=runs_index(runs_dir, cache))

    async def live_runs(request: Request) -> Response:
        return page("runs_table.html", runs=runs_index(runs_dir, cache))

    async def run_page(request: Request) -> Response:
        found = detail_or_404(request)
        return found if isinstance(found, Response) else page("run.html", run=found[0], svgs=found[1])

    async def live_run(request: Request) -> Response:
        found = detail_or_404(request)
        return found if isinstance(found, Response) else page("run_live.html", run=found[0],
                                                              svgs=found[1])

    async def api_runs(request: Request) -> Response:
        return _headers(JSONResponse({"runs_dir": str(runs_dir), "runs": runs_index(runs_dir, cache)}))

    async def api_run(request: Request) -> Response:
        found = detail_or_404(request)
        return found if isinstance(found, Response) else _headers(JSONResponse(found[0]))

    async def run_file(request: Request) -> Response:
        folder = find_run(runs_dir, request.path_params["run_id"])
        relative = request.path_params["path"]
        parts = relative.split("/")
        listed = relative in LINKED_FILES or (len(parts) == 2 and parts[0] in SERVED_FOLDERS)
        if folder is not None and listed:
            # resolve() follows links: a link inside the run pointing elsewhere is not served.
            target = (folder / relative).resolve()
            if target.is_file() and target.is_relative_to(folder.resolve()):
                return _headers(FileResponse(target))
        return _headers(PlainTextResponse(f"no file {relative!r} in this run", 404))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "live.js":
            return _headers(Response(LIVE_SCRIPT, media_type="text/javascript"))
        if name == "style.css":
            return _headers(Response(STYLE, media_type="text/css"))
        return _headers(PlainTextResponse("not found", 404))

    routes = [
        Route("/", index), Route("/live/runs", live_runs),
        Route("/runs/{run_id}", run_page), Route("/live/runs/{run_id}", live_run),
        Route("/runs/{run_id}/files/{path:path}", run_file),
        Route("/api/runs", api_runs), Route("/api/runs/{run_id}", api_run),
        Route("/static/{name}", static),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    return Starlette(routes=routes, middleware=middleware)
