"""`/console`: the operator console's static files (built by `make console` into
`console/dist`), served by the HTTP door beside the API they call.

The console is a client like any other: it calls the public routes with a bearer header,
so these routes serve files only. The build is read once, at startup, into memory (a few
hundred kB): no path from a request ever reaches the file system. Assets carry a content
hash in their name, so they are cached for a year; index.html is revalidated every time so a
new build is picked up at once. Every answer carries a strict Content-Security-Policy (no
inline script, nothing from another origin, no framing).

`python -m services.gateway.web.console [DIST]` checks that a build is whole (its page and
every asset the page names), exiting 1 with what is missing: the image's CI runs it inside
the image, where the gateway will read it."""

from __future__ import annotations

import logging
import mimetypes
import re
import sys
from pathlib import Path

from aiohttp import web

from services.common.errors import NotFound

log = logging.getLogger(__name__)

DIST = Path(__file__).resolve().parents[3] / "console" / "dist"
"""Where `make console` writes the build."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAMED_ASSET = re.compile(r'(?:src|href)="/console/assets/([^"]+)"')


class Console:
    """The console's files of one build, in memory."""

    def __init__(self, dist: Path = DIST) -> None:
        self._dist = dist
        index = dist / "index.html"
        self._index = index.read_bytes() if index.is_file() else None
        self._assets: dict[str, tuple[bytes, str]] = {}
        assets = dist / "assets"
        if assets.is_dir():
            for path in assets.iterdir():
                if path.is_file() and _ASSET_NAME.fullmatch(path.name):
                    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                    self._assets[path.name] = (path.read_bytes(), kind)
        if self._index is None:
            log.warning("console not built", extra={"path": str(dist)})

    def problems(self) -> list[str]:
        """What keeps this build from serving a working page: none when it is whole."""
        if self._index is None:
            return [f"{self._dist / 'index.html'}: missing (run `make console`)"]
        named = set(_NAMED_ASSET.findall(self._index.decode()))
        return [
            f"assets/{name}: named by index.html, not in the build"
            for name in sorted(named - self._assets.keys())
        ]

    def _not_built(self) -> NotFound:
        return NotFound(
            "the console is not built on this gateway (run `make console`)",
            reason="CONSOLE_NOT_BUILT",
        )

    async def root(self, request: web.Request) -> web.StreamResponse:
        """GET /console: to /console/, so the page's relative asset paths resolve."""
        # Answered, not raised: the door's middleware turns raised HTTP exceptions into
        # errors, and a redirect is none.
        return web.Response(status=302, headers={**SECURITY_HEADERS, "Location": "/console/"})

    async def index(self, request: web.Request) -> web.StreamResponse:
        """GET /console/: the page (revalidated on every load)."""
        if self._index is None:
            raise self._not_built()
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return web.Response(body=self._index, content_type="text/html", headers=headers)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """GET /console/assets/{name}: one hashed file of the build (cached a year)."""
        found = self._assets.get(request.match_info["name"])
        if found is None:
            if self._index is None:
                raise self._not_built()
            raise NotFound(f"no console asset {request.path}", reason="ROUTE_NOT_FOUND")
        body, kind = found
        headers = {**SECURITY_HEADERS, "Cache-Control": IMMUTABLE}
        return web.Response(body=body, content_type=kind, headers=headers)

    def routes(self) -> list[web.RouteDef]:
        """The console's routes (files, not API: absent from /openapi.json)."""
        return [
            web.get("/console", self.root),
            web.get("/console/", self.index),
            web.get("/console/assets/{name}", self.asset),
        ]


def main(argv: list[str]) -> int:
    dist = Path(argv[0]) if argv else DIST
    console = Console(dist)
    if problems := console.problems():
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"console build at {dist}: index.html and {len(console._assets)} assets")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
