"""``/openapi.json``, generated from the endpoints and the msgspec types they validate with.

Besides each operation's own types it states what every request is held to: the
``inbound`` rules for bodies, the parser's header limits, ``X-Request-Id``'s form,
and ``Idempotency-Key`` on every POST of the tenant and widget APIs.
"""

from __future__ import annotations

from typing import Any

import msgspec

from confab import __version__, inbound
from confab.httpserver import MAX_HEADERS, MAX_LINE_BYTES
from confab_gateway import idempotency
from confab_gateway.api import Endpoint
from confab_gateway.errors import MAX_REQUEST_ID


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = {}


class Error(msgspec.Struct, kw_only=True):
    error: ErrorDetail


_STATUS_TEXT = {
    400: "Malformed request (not JSON or not UTF-8, empty body, malformed header)",
    401: "Missing or invalid credentials",
    403: "Not allowed",
    404: "Not found (also anything of another workspace)",
    408: "The body did not arrive in time; the connection is closed",
    409: "Conflicts with the current state, or a request with this Idempotency-Key is running",
    413: "Body too large",
    415: "Unsupported media type or charset",
    422: "Invalid fields (`details` names each), or an Idempotency-Key reused with another request",
    429: "Rate limited; see Retry-After",
    503: "A backing service is unavailable; see Retry-After",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}

_SECURITY = {
    "admin": [{"adminToken": []}],
    "api_key": [{"apiKey": []}, {"dashboardSession": []}],
    "session": [{"sessionToken": []}],
    "staff": [{"dashboardSession": []}],
    "public": [],
}

_REF = "#/components/schemas/{name}"

_TOKEN = "^[!-~]+$"  # printable ASCII, no spaces

_REQUEST_ID = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "Correlation id of the request, echoed in the answer and kept on what it "
    f"stores; anything but 1 to {MAX_REQUEST_ID} printable ASCII characters is replaced by a "
    "fresh one",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID, "pattern": _TOKEN},
}

_IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": "Sent again with the same key (per credential) and the same request within "
    "24 h, the request is not run again: the first answer (2xx or 4xx) is replayed, with "
    f"{idempotency.REPLAYED}: true. Another request with the same key is 422; the same one "
    "while the first is still running, 409",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": _TOKEN,
    },
}

_REPLAYED = {
    idempotency.REPLAYED: {
        "description": "Present (true) when this is the stored answer to an earlier request "
        "with the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}

DESCRIPTION = f"""Multi-tenant real-time chat: tenant backend, widget and admin APIs.

Every request is held to these limits; breaking one is a 4xx with the error body, never a 5xx:

- JSON bodies are UTF-8 (another declared charset: 415; invalid UTF-8, including encoded
  surrogates: 400), nest at most {inbound.MAX_DEPTH} levels of arrays and objects, hold
  integers within 64 bits ({inbound.INT64_MIN} to {inbound.INT64_MAX}) and no NUL
  character (422). Bodies are at most 1 MiB by default (CONFAB_MAX_BODY_BYTES; 413).
- Request line and each header at most {MAX_LINE_BYTES} bytes, at most {MAX_HEADERS} headers
  (400). Headers must arrive within CONFAB_HTTP_HEADER_TIMEOUT seconds (10) and a body
  within CONFAB_HTTP_BODY_TIMEOUT seconds (30) plus one per CONFAB_HTTP_BODY_MIN_RATE bytes
  (50,000) received (408, connection closed). One address may hold
  CONFAB_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS connections (1024; more: 429).
- A conversation's seq (history cursors, read receipts) is within 32 bits and a report
  cursor within 64, as the read models keep them (422); a page holds at most 100 items.
"""


def document(endpoints: list[Endpoint], server_url: str | None = None) -> dict[str, Any]:
    types: list[Any] = [Error]
    for e in endpoints:
        types += [t for t in (e.body, e.response) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {
            "operationId": e.handler.__name__,
            "summary": e.summary,
            "tags": [e.tag],
            "security": _SECURITY[e.auth],
            "parameters": _parameters(e),
            "responses": _responses(e, refs),
        }
        if e.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[e.body]}},
            }
        elif e.files:
            binary = {"type": "string", "format": "binary"}
            form = {
                "type": "object",
                "properties": dict.fromkeys(e.files, binary),
                "required": list(e.files),
            }
            operation["requestBody"] = {
                "required": True,
                "content": {"multipart/form-data": {"schema": form}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Confab API",
            "version": __version__,
            "description": DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "sessionToken": {"type": "http", "scheme": "bearer"},
                # A staff member's dashboard session (docs/staff.md); changes need
                # X-CSRF-Token, and the route's permission in the member's role.
                "dashboardSession": {"type": "apiKey", "in": "cookie", "name": "confab_dashboard"},
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def _parameters(e: Endpoint) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in e.path_params
    ]
    params.append(_REQUEST_ID)
    if e.idempotent:
        params.append(_IDEMPOTENCY_KEY)
    if e.query is not None:
        _, components = msgspec.json.schema_components([e.query], ref_template=_REF)
        props = components[e.query.__name__]["properties"]
        required = set(components[e.query.__name__].get("required", ()))
        for name, prop in props.items():
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    return params


def _common_errors(e: Endpoint) -> set[int]:
    """What any endpoint of this shape can answer, besides its own errors."""
    codes = {503}
    if e.auth != "public":
        codes |= {401, 429}  # 429: per credential, and failed authentications per address
    if e.path_params:
        codes.add(404)
    if e.query is not None:
        codes.add(422)
    if e.body is not None or e.files:
        codes |= {400, 408, 413, 415, 422}
    if e.idempotent:
        codes |= {400, 409, 422}
    return codes


def _responses(e: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in (e.status, *e.also):
        if e.response is None:
            responses[str(status)] = {"description": "Done; no content"}
        else:
            responses[str(status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": refs[e.response]}},
            }
        if e.idempotent:
            responses[str(status)]["headers"] = _REPLAYED
    error = {"content": {"application/json": {"schema": refs[Error]}}}
    for status in sorted({*e.errors, *_common_errors(e)}):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), **error}
        if status in (429, 503):
            responses[str(status)]["headers"] = _RETRY_AFTER
    return responses
