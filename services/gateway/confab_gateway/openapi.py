"""``/openapi.json``, generated from the endpoints and the msgspec types they validate with."""

from __future__ import annotations

from typing import Any

import msgspec

from confab import __version__
from confab_gateway.api import Endpoint


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = {}


class Error(msgspec.Struct, kw_only=True):
    error: ErrorDetail


_STATUS_TEXT = {
    400: "Malformed request (not JSON, empty body)",
    401: "Missing or invalid credentials",
    403: "Not allowed",
    404: "Not found (also anything of another workspace)",
    409: "Conflicts with the current state",
    413: "Body too large",
    415: "Unsupported media type",
    422: "Invalid fields; `details` names each",
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
    "api_key": [{"apiKey": []}],
    "session": [{"sessionToken": []}],
    "public": [],
}

_REF = "#/components/schemas/{name}"


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
            "description": "Multi-tenant real-time chat: tenant backend, widget and admin APIs.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "sessionToken": {"type": "http", "scheme": "bearer"},
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
        codes |= {400, 413, 415, 422}
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
    error = {"content": {"application/json": {"schema": refs[Error]}}}
    for status in sorted({*e.errors, *_common_errors(e)}):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), **error}
        if status in (429, 503):
            responses[str(status)]["headers"] = _RETRY_AFTER
    return responses
