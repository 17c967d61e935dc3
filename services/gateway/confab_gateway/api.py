"""Declaring endpoints once: the same types validate requests and describe them in OpenAPI.

An endpoint says its method, path, credential kind, body, query and response
types. ``Router.install`` turns that into aiohttp routes that authenticate,
rate-limit, parse and validate before the handler runs, and ``openapi.document``
turns the same list into ``/openapi.json``.

This is the one place request bodies and query strings are decoded: bodies under
``confab.inbound``'s rules (UTF-8 only, 32 levels of nesting, 64-bit integers, no
NUL), queries by the same bounded types the services' requests use. A POST of the
tenant or widget API with an ``Idempotency-Key`` runs through
``confab_gateway.idempotency`` once it is valid.

A staff member's dashboard session (the cookie) may call a tenant route
(``auth="api_key"``) only if the route names a ``permission`` and the member's role
grants it (``confab.staff``), and ``auth="staff"`` routes (the dashboard's own) only
under theirs; every state-changing cookie request passes the CSRF rules of
``confab_gateway.sessions`` first. A route without a permission is for API keys only.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiohttp import web

from confab import inbound
from confab.contracts.base import Ok, Request
from confab.contracts.identity import ApiKeyPrincipal, StaffPrincipal
from confab.contracts.messaging import Actor
from confab.errors import (
    BadRequest,
    ConfabError,
    Forbidden,
    InvalidRequest,
    NotFound,
    UnsupportedMediaType,
)
from confab.ids import is_valid_id
from confab.rpc import RpcClient
from confab.staff import grants
from confab_gateway import idempotency, sessions
from confab_gateway.auth import Authenticator, Principal
from confab_gateway.consistency import LastWrites
from confab_gateway.errors import error_response
from confab_gateway.ratelimit import RequestLimits

AuthKind = Literal["admin", "api_key", "session", "staff", "public"]
Handler = Callable[["Call"], Awaitable[Any]]

_encoder = msgspec.json.Encoder()
_PATH_PARAM = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    auth: AuthKind
    handler: Handler
    summary: str
    tag: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    also: tuple[int, ...] = ()  # other success statuses (e.g. 200 for an upsert that updated)
    errors: tuple[int, ...] = ()
    raw_path_params: tuple[str, ...] = ()  # path parameters that are not ids (tokens, emoji)
    # A multipart/form-data body with these file parts, streamed by the handler itself.
    files: tuple[str, ...] = ()
    # What a workspace staff member's role must grant to call it with a dashboard session
    # (issue 19; the names are in docs/staff.md). A tenant API key grants every permission.
    permission: str | None = None

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def idempotent(self) -> bool:
        """Takes ``Idempotency-Key``: every POST of the tenant and widget APIs."""
        return self.method == "POST" and self.auth in ("api_key", "session")


@dataclass
class Call:
    """What a handler gets: the validated request and who made it."""

    request: web.Request
    rpc: RpcClient
    principal: Principal | None
    path: dict[str, str]
    body: Any = None
    query: Any = None
    correlation: str = ""

    @property
    def workspace_id(self) -> str:
        assert self.principal is not None
        return self.principal.workspace_id

    @property
    def actor(self) -> Actor:
        """Who acts in messaging terms: the widget's user, or the tenant's backend. A staff
        member acts with the backend's authority, within what their role grants (checked
        per route), and is named where the API key's id would be (the events' ``by``)."""
        p = self.principal
        assert p is not None
        if isinstance(p, ApiKeyPrincipal):
            return Actor(workspace_id=p.workspace_id, key_id=p.key_id)
        if isinstance(p, StaffPrincipal):
            return Actor(workspace_id=p.workspace_id, key_id=p.user_id)
        return Actor(workspace_id=p.workspace_id, user_id=p.user_id)

    @property
    def staff(self) -> StaffPrincipal | None:
        """The dashboard session's staff member, when the call came with one."""
        return self.principal if isinstance(self.principal, StaffPrincipal) else None

    def own_sender(self, sender_id: str | None) -> str | None:
        """The sender of a tenant-API message: whoever the API key names, but a staff
        member always posts as themselves."""
        staff = self.staff
        if staff is None:
            return sender_id
        if sender_id not in (None, staff.user_id):
            raise Forbidden("From the dashboard you can only post as yourself.")
        return staff.user_id

    @property
    def min_seq(self) -> int:
        return self.last_writes.min_seq(self.actor)

    async def write(self, command: Request) -> None:
        """Send a command answered by ``Ok``, and remember where it was stored."""
        ok: Ok = await self.rpc.call(command, correlation=self.correlation)
        self.wrote(ok.seq)

    def wrote(self, stream_seq: int) -> None:
        self.last_writes.wrote(self.actor, stream_seq)

    @property
    def last_writes(self) -> LastWrites:
        writes: LastWrites = self.request.app["last_writes"]
        return writes


@dataclass
class Result:
    """A response other than the endpoint's default status."""

    body: Any
    status: int


@dataclass
class Router:
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        auth: AuthKind,
        summary: str,
        tag: str,
        body: type | None = None,
        query: type | None = None,
        response: type | None = None,
        status: int = 200,
        also: tuple[int, ...] = (),
        errors: tuple[int, ...] = (),
        raw_path_params: tuple[str, ...] = (),
        files: tuple[str, ...] = (),
        permission: str | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method,
                    path,
                    auth,
                    handler,
                    summary,
                    tag,
                    body,
                    query,
                    response,
                    status,
                    also,
                    errors,
                    raw_path_params,
                    files,
                    permission,
                )
            )
            return handler

        return register

    def install(
        self, app: web.Application, rpc: RpcClient, auth: Authenticator, limits: RequestLimits
    ) -> None:
        for endpoint in self.endpoints:
            view = _view(endpoint, rpc, auth, limits)
            app.router.add_route(endpoint.method, endpoint.path, view)


def _view(
    endpoint: Endpoint, rpc: RpcClient, auth: Authenticator, limits: RequestLimits
) -> Handler:
    body_decoder = msgspec.json.Decoder(endpoint.body) if endpoint.body else None
    params = endpoint.path_params
    ids = [p for p in params if p not in endpoint.raw_path_params]
    idempotent = endpoint.idempotent

    async def view(request: web.Request) -> web.StreamResponse:
        principal = await auth.authenticate(endpoint.auth, request)
        if isinstance(principal, StaffPrincipal):
            authorize_staff(endpoint, principal, request)
        limits.check(principal)
        key = idempotency.key_of(request) if idempotent else None
        path = {p: request.match_info[p] for p in params}
        for name in ids:
            if not is_valid_id(path[name]):
                raise NotFound(f"No {name.removesuffix('_id')} with that id.")
        call = Call(request, rpc, principal, path, correlation=request.get("correlation", ""))
        if endpoint.query is not None:
            call.query = parse_query(request, endpoint.query)
        if body_decoder is not None:
            call.body = await parse_body(request, body_decoder)
        if key is None or principal is None:
            return await run(call)
        claims: idempotency.Claims = request.app["idempotency"]
        claim = await claims.claim(
            idempotency.scope_of(principal), key, await idempotency.fingerprint(request)
        )
        if isinstance(claim, web.Response):
            return claim  # the first answer, replayed
        try:
            response = await run(call)
        except ConfabError as exc:
            response = error_response(exc)
        except BaseException:
            await claims.give_back(claim)
            raise
        await claims.answer(claim, response)
        return response

    async def run(call: Call) -> web.StreamResponse:
        result = await endpoint.handler(call)
        if result is None:
            return web.Response(status=204)
        if isinstance(result, web.StreamResponse):
            return result  # streamed by the handler itself
        status = endpoint.status
        if isinstance(result, Result):
            result, status = result.body, result.status
        return web.Response(
            body=_encoder.encode(result), status=status, content_type="application/json"
        )

    return view


def authorize_staff(endpoint: Endpoint, principal: StaffPrincipal, request: web.Request) -> None:
    """CSRF first, then the role: Forbidden unless the route is open to this member."""
    sessions.check_csrf(request, sessions.token_of(request))
    if endpoint.auth == "api_key" and endpoint.permission is None:
        raise Forbidden("This route is for API keys only; the dashboard cannot call it.")
    if endpoint.permission is not None and not grants(principal.role, endpoint.permission):
        raise Forbidden(
            f"Your role ({principal.role}) does not allow this: "
            f"it needs the {endpoint.permission} permission."
        )


def check_json_type(request: web.Request) -> None:
    """JSON, in UTF-8: any other media type or charset is 415."""
    ctype = request.content_type
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"Send the body as application/json, not {ctype}.")
    charset = request.charset
    if charset is not None and not inbound.charset_ok(charset):
        named = charset if inbound.token_ok(charset, 40) else "another charset"
        raise UnsupportedMediaType(f"Send JSON in UTF-8 (charset=utf-8), not {named}.")


async def parse_body(request: web.Request, decoder: msgspec.json.Decoder[Any]) -> Any:
    check_json_type(request)
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    return decode_json(raw, decoder)


def decode_json(raw: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """Decode a JSON body under ``confab.inbound``'s rules; every failure is a 4xx."""
    try:
        return inbound.decode(raw, decoder)
    except inbound.Refused as exc:
        if exc.malformed:
            raise BadRequest(exc.message) from None
        raise InvalidRequest(exc.message, {exc.field: exc.message}) from None
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None


def parse_query(request: web.Request, query_type: type) -> Any:
    known = {f.name for f in msgspec.structs.fields(query_type)}
    values = {k: v for k, v in request.query.items() if k in known}
    for name, value in values.items():
        if "\x00" in value:
            raise InvalidRequest(
                "Text must not contain the NUL character (\\u0000).", {name: "contains NUL"}
            )
    try:
        return msgspec.convert(values, query_type, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: msgspec.ValidationError) -> InvalidRequest:
    """msgspec says ``Expected `int`, got `str` - at `$.user.age```: make that per-field details."""
    text = str(exc)
    message, _, where = text.partition(" - at ")
    message = message.replace("`", "")
    field_path = where.strip("`").removeprefix("$").lstrip(".") or "body"
    if message.startswith("Object contains unknown field"):
        unknown = message.split("`")[-1] if "`" in message else message.rsplit(" ", 1)[-1]
        return InvalidRequest(f"Unknown field {unknown}.", {unknown.strip("'\""): "unknown field"})
    if message.startswith("Object missing required field"):
        missing = message.rsplit(" ", 1)[-1].strip("'\"")
        name = f"{field_path}.{missing}" if field_path != "body" else missing
        return InvalidRequest(f"The field {name} is required.", {name: "required"})
    if "matching regex" in message:
        message = "does not have the expected format"
        return InvalidRequest(f"The field {field_path} {message}.", {field_path: message})
    return InvalidRequest(f"Invalid {field_path}: {message}.", {field_path: message})
