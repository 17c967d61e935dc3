"""Dashboard sessions in the browser: the cookie, and the CSRF rules for using it.

- The cookie ``confab_dashboard`` holds the session token (``sd_…``): ``HttpOnly`` (no
  script reads it), ``Path=/`` (the dashboard calls ``/dashboard/api`` and the tenant
  API ``/api/v1``), ``Secure`` unless the gateway is reached on localhost or a
  loopback address (so that ``confab up`` works over plain HTTP), and
  ``SameSite=Strict``: no other site's page, link or form ever sends it. Strict costs
  nothing here, because the dashboard's HTML is public and every authenticated call
  is a ``fetch`` from the dashboard itself; a link from an email opens the page, whose
  first call then carries the cookie.
- CSRF, in depth beyond SameSite: every state-changing request made with the cookie
  must carry ``X-CSRF-Token``, an HMAC of the literal "csrf" keyed with the session
  token. Only the server (which sees the cookie) can compute it; the dashboard gets
  it in the sign-in reply and from ``GET /dashboard/api/me`` and keeps it in memory.
  A custom header also forces a CORS preflight from any other origin, which the
  gateway never grants for these paths. And an ``Origin`` header, which browsers send
  on every such request, must name this gateway's own host.
- A request with an API key is not a cookie request: an ``X-API-Key`` wins, and no
  CSRF rule applies (a key is never sent by a browser on its own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

from confab.errors import Forbidden

COOKIE = "confab_dashboard"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_MISSING = "This request needs the X-CSRF-Token header the dashboard got when you signed in."
CSRF_WRONG = "The X-CSRF-Token header does not match this session; reload the dashboard."
WRONG_ORIGIN = "Requests with a dashboard session must come from the dashboard's own origin."


def token_of(request: web.Request) -> str:
    """The dashboard session token in the request's cookie, or ""."""
    return request.cookies.get(COOKIE, "")


def csrf_token(session_token: str) -> str:
    mac = hmac.new(session_token.encode(), b"csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def check_origin(request: web.Request) -> None:
    """Forbidden if the request names an origin that is not this gateway's host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        netloc = ""
    if not netloc or netloc.lower() != request.host.lower():
        raise Forbidden(WRONG_ORIGIN)


def check_csrf(request: web.Request, session_token: str) -> None:
    """For a state-changing request made with the cookie: the header and the origin."""
    if request.method in SAFE_METHODS:
        return
    check_origin(request)
    presented = request.headers.get(CSRF_HEADER, "")
    if not presented:
        raise Forbidden(CSRF_MISSING)
    if not hmac.compare_digest(presented.encode(), csrf_token(session_token).encode()):
        raise Forbidden(CSRF_WRONG)


def is_loopback(request: web.Request) -> bool:
    host = (request.url.host or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def set_cookie(
    response: web.StreamResponse, request: web.Request, token: str, max_age: int
) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=not is_loopback(request),
        samesite="Strict",
    )


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(
        COOKIE, path="/", httponly=True, secure=not is_loopback(request), samesite="Strict"
    )
