"""Bad bytes at every entry point of a running stack: a 4xx with the documented body, never 5xx.

The gateway's tenant, widget and admin APIs, the fanout's Pusher HTTP API and the
Pusher frames of a socket get undecodable text (invalid UTF-8, UTF-8-encoded
surrogates), another charset, nesting past 32 levels, integers past 64 bits,
sequence numbers and cursors past what the read models hold (a conversation's seq
is a PostgreSQL integer, a stream sequence a bigint), a page over 100 and header
lines over 8,190 bytes. Each answer is asserted by status and error code, with no
``Retry-After``; afterwards the stack still serves the same requests when they are
well formed. Requests are sent over a bare socket (``tests.rawhttp``), since no
client library sends most of these.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import aiohttp
import pytest

from confab_fanout import auth as pusher_auth
from tests.client import Api, new_workspace
from tests.rawhttp import Answer, send
from tests.stack import RunningStack

JSON = b"Content-Type: application/json"
DEEP = b"[" * 33 + b"]" * 33  # one level past the limit
VERY_DEEP = b"[" * 5000 + b"]" * 5000  # past Python's recursion limit too
BEYOND_64_BITS = str(2**63).encode()


class Target:
    """A workspace on the stack, a user with a widget session, a conversation with a message."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.port = int(stack.gateway.rsplit(":", 1)[1])
        self.fanout_port = int(stack.info["fanout_http_url"].rsplit(":", 1)[1])

    async def start(self, http: aiohttp.ClientSession) -> Target:
        admin = Api(http, self.stack.gateway, self.stack.admin_headers)
        workspace = await new_workspace(admin, "Hostile")
        self.workspace = workspace
        self.tenant = admin.as_(**{"X-API-Key": workspace["api_key"]})
        users = []
        for name in ("ann", "bob"):
            status, user = await self.tenant.post(
                "/api/v1/users", {"external_id": name, "name": name}
            )
            assert status == 201, user
            users.append(user)
        status, session = await self.tenant.post("/api/v1/sessions", {"user_id": users[0]["id"]})
        assert status == 201, session
        self.widget = self.tenant.as_(Authorization=f"Bearer {session['token']}")
        status, conversation = await self.tenant.post(
            "/api/v1/conversations",
            {"participant_ids": [u["id"] for u in users], "type": "group"},
        )
        assert status == 201, conversation
        self.conversation = conversation["id"]
        return self

    def headers(self, who: str) -> list[bytes]:
        if who == "tenant":
            return [f"X-API-Key: {self.workspace['api_key']}".encode()]
        if who == "widget":
            return [f"Authorization: {self.widget.headers['Authorization']}".encode()]
        return [f"Authorization: {self.stack.admin_headers['Authorization']}".encode()]

    def path(self, template: str) -> str:
        return template.replace("{cid}", self.conversation)


@pytest.fixture(scope="module")
async def target(stack: RunningStack) -> Any:
    async with aiohttp.ClientSession() as http:
        yield await Target(stack).start(http)


USERS = "/api/v1/users"
MESSAGES = "/api/widget/conversations/{cid}/messages"
EVENTS = "/api/widget/conversations/{cid}/events"
AUTH = "/api/widget/broadcasting/auth"

# (who, method, path, extra headers, body) -> (status, code)
GATEWAY_CASES: dict[str, tuple[str, str, str, list[bytes], bytes, int, str]] = {
    "invalid UTF-8": (
        "tenant", "POST", USERS, [JSON], b'{"external_id":"a\xff","name":"A"}', 400,
        "invalid_request",
    ),
    "UTF-8-encoded surrogate": (
        "tenant", "POST", USERS, [JSON], b'{"external_id":"\xed\xa0\x80","name":"A"}', 400,
        "invalid_request",
    ),
    "escaped lone surrogate": (
        "tenant", "POST", USERS, [JSON], b'{"external_id":"\\ud800","name":"A"}', 400,
        "invalid_request",
    ),
    "latin-1": (
        "tenant", "POST", USERS, [b"Content-Type: application/json; charset=latin-1"],
        '{"external_id":"é","name":"A"}'.encode("latin-1"), 415, "unsupported_media_type",
    ),
    "33 levels": (
        "tenant", "POST", USERS, [JSON], b'{"external_id":"a","name":"A","metadata":{"a":'
        + DEEP + b"}}", 422, "invalid_request",
    ),
    "5,000 levels": (
        "tenant", "POST", USERS, [JSON], b'{"external_id":"a","name":"A","metadata":{"a":'
        + VERY_DEEP + b"}}", 422, "invalid_request",
    ),
    "2**63 in metadata": (
        "tenant", "POST", USERS, [JSON], b'{"external_id":"a","name":"A","metadata":{"n":'
        + BEYOND_64_BITS + b"}}", 422, "invalid_request",
    ),
    "-2**63-1 in metadata": (
        "tenant", "POST", USERS, [JSON], b'{"external_id":"a","name":"A","metadata":{"n":-'
        + str(2**63 + 1).encode() + b"}}", 422, "invalid_request",
    ),
    "widget invalid UTF-8": (
        "widget", "POST", MESSAGES, [JSON], b'{"content":"\xc3("}', 400, "invalid_request",
    ),
    "widget 5,000 levels": (
        "widget", "POST", MESSAGES, [JSON], b'{"content":"x","metadata":{"a":' + VERY_DEEP
        + b"}}", 422, "invalid_request",
    ),
    "read receipt seq 2**63": (
        "widget", "POST", "/api/widget/conversations/{cid}/read", [JSON],
        b'{"seq":' + BEYOND_64_BITS + b"}", 422, "invalid_request",
    ),
    "read receipt seq 2**31": (
        "widget", "POST", "/api/widget/conversations/{cid}/read", [JSON],
        b'{"seq":' + str(2**31).encode() + b"}", 422, "invalid_request",
    ),
    "after 2**63": (
        "widget", "GET", MESSAGES + "?after=" + str(2**63), [], b"", 422, "invalid_request",
    ),
    "after 2**31 (a conversation's seq is a PostgreSQL integer)": (
        "widget", "GET", MESSAGES + "?after=" + str(2**31), [], b"", 422, "invalid_request",
    ),
    "before 2**64": (
        "widget", "GET", MESSAGES + "?before=" + str(2**64), [], b"", 422, "invalid_request",
    ),
    "events after 2**63": (
        "widget", "GET", EVENTS + "?after=" + str(2**63), [], b"", 422, "invalid_request",
    ),
    "events limit 500": (
        "widget", "GET", EVENTS + "?limit=500", [], b"", 422, "invalid_request",
    ),
    "30-digit conversation cursor": (
        "widget", "GET", "/api/widget/conversations?cursor=" + "9" * 30 + ":conv_x", [], b"",
        422, "invalid_request",
    ),
    "30-digit report cursor": (
        "tenant", "GET", "/api/v1/reports?cursor=" + "9" * 30, [], b"", 422, "invalid_request",
    ),
    "broadcasting auth 5,000 levels": (
        "widget", "POST", AUTH, [JSON], b'{"socket_id":' + VERY_DEEP + b"}", 422,
        "invalid_request",
    ),
    "broadcasting auth latin-1 form": (
        "widget", "POST", AUTH,
        [b"Content-Type: application/x-www-form-urlencoded; charset=latin-1"],
        b"socket_id=1.2&channel_name=\xe9", 415, "unsupported_media_type",
    ),
    "admin 5,000 levels": (
        "admin", "POST", "/api/admin/workspaces", [JSON], b'{"name":' + VERY_DEEP + b"}", 422,
        "invalid_request",
    ),
    "admin invalid UTF-8": (
        "admin", "POST", "/api/admin/workspaces", [JSON], b'{"name":"\xff"}', 400,
        "invalid_request",
    ),
    "admin limit 2**64": (
        "admin", "GET", "/api/admin/workspaces?limit=" + str(2**64), [], b"", 422,
        "invalid_request",
    ),
    "gzip that is not gzip": (
        "tenant", "POST", USERS, [JSON, b"Content-Encoding: gzip"], b"not gzip at all", 400,
        "invalid_request",
    ),
    "deflate that is not deflate": (
        "widget", "POST", MESSAGES, [JSON, b"Content-Encoding: deflate"], b"not deflate", 400,
        "invalid_request",
    ),
    "a header line over 8,190 bytes": (
        "tenant", "GET", USERS + "/usr_x", [b"X-Padding: " + b"a" * 9000], b"", 400,
        "invalid_request",
    ),
    "200 headers": (
        "tenant", "GET", USERS + "/usr_x", [f"X-H{i}: 1".encode() for i in range(200)], b"", 400,
        "invalid_request",
    ),
}  # fmt: skip


def assert_error(answer: Answer, status: int, code: Any, *, shape: str = "api") -> None:
    assert answer.status == status, (answer.status, answer.raw[:300])
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert "retry-after" not in answer.headers
    body = answer.body
    if shape == "api":
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == code, body
    else:  # the fanout's HTTP API: Pusher's shape
        assert body == {"error": body["error"], "code": code}, body


@pytest.mark.parametrize("case", list(GATEWAY_CASES))
async def test_the_gateway_answers_bad_bytes_with_a_4xx(target: Target, case: str) -> None:
    who, method, path, headers, body, status, code = GATEWAY_CASES[case]
    answer = await send(target.port, method, target.path(path), target.headers(who) + headers, body)
    assert_error(answer, status, code)


async def test_the_same_requests_well_formed_are_served(target: Target) -> None:
    status, user = await target.tenant.post(
        USERS, {"external_id": "é", "name": "A", "metadata": {"a": [[1]], "n": 2**63 - 1}}
    )
    assert status == 201, user
    assert user["metadata"] == {"a": [[1]], "n": 2**63 - 1}
    status, page = await target.widget.get(target.path(EVENTS), params={"limit": 100})
    assert status == 200, page
    status, page = await target.widget.get(
        target.path(MESSAGES), params={"after": 2**31 - 1, "limit": 100}
    )
    assert status == 200 and page["data"] == [], page


async def test_x_request_id_is_kept_only_when_it_is_a_short_printable_token(
    target: Target,
) -> None:
    body = b'{"content":"traced"}'
    given = "req-" + uuid.uuid4().hex
    for sent, kept in [
        (given.encode(), True),
        (b"\xff\xfe not text", False),
        (b"x" * 129, False),
        (b"with space", False),
    ]:
        answer = await send(
            target.port,
            "POST",
            target.path(MESSAGES),
            [*target.headers("widget"), JSON, b"X-Request-Id: " + sent],
            body,
        )
        assert answer.status == 201, answer.raw  # the write goes through either way
        echoed = answer.headers["x-request-id"]
        if kept:
            assert echoed == given
        else:
            assert echoed != sent.decode("latin-1") and len(echoed) == 32, echoed


# -- the fanout -------------------------------------------------------------------------


def signed(target: Target, path: str, body: bytes) -> str:
    demo = target.stack.info["demo"]
    params = {
        "auth_key": demo["app_key"],
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    params["auth_signature"] = pusher_auth.sign(
        demo["app_secret"], pusher_auth.request_string("POST", path, params)
    )
    return path + "?" + "&".join(f"{k}={v}" for k, v in params.items())


FANOUT_CASES: dict[str, tuple[list[bytes], bytes, int]] = {
    "invalid UTF-8": ([JSON], b'{"name":"a\xff","channel":"c","data":"x"}', 400),
    "UTF-8-encoded surrogate": ([JSON], b'{"name":"\xed\xb0\x80","channel":"c","data":"x"}', 400),
    "5,000 levels in data": ([JSON], b'{"name":"a","channel":"c","data":' + VERY_DEEP + b"}", 400),
    "2**63 in data": (
        [JSON], b'{"name":"a","channel":"c","data":{"n":' + BEYOND_64_BITS + b"}}", 400
    ),
    "gzip that is not gzip": ([JSON, b"Content-Encoding: gzip"], b"not gzip at all", 400),
    "latin-1": (
        [b"Content-Type: application/json; charset=latin-1"],
        b'{"name":"a","channel":"c","data":"x"}', 415,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FANOUT_CASES))
async def test_the_fanout_http_api_answers_bad_bytes_with_a_4xx(target: Target, case: str) -> None:
    headers, body, status = FANOUT_CASES[case]
    path = f"/apps/{target.stack.info['demo']['workspace_id']}/events"
    answer = await send(target.fanout_port, "POST", signed(target, path, body), headers, body)
    assert_error(answer, status, status, shape="pusher")


async def test_the_fanout_answers_an_over_long_header_in_its_own_json(target: Target) -> None:
    answer = await send(target.fanout_port, "GET", "/apps/1/channels", [b"X-P: " + b"a" * 9000])
    assert_error(answer, 400, 400, shape="pusher")


async def test_pusher_frames_with_bad_json_are_protocol_errors_and_the_socket_goes_on(
    target: Target,
) -> None:
    url = f"{target.stack.info['fanout_ws_url']}/app/{target.stack.info['demo']['app_key']}"
    frames = [
        '{"event":"pusher:subscribe","data":' + VERY_DEEP.decode() + "}",
        '{"event":"pusher:subscribe","data":{"channel":"a","x":' + DEEP.decode() + "}}",
        '{"event":"pusher:subscribe","data":{"channel":"a","n":' + str(2**64) + "}}",
        '{"event":"pusher:subscribe","data":"{\\"channel\\":' + "[" * 40 + "]" * 40 + '}"}',
        '{"event":"client-x","channel":"private-a","data":' + VERY_DEEP.decode() + "}",
    ]
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "?protocol=7") as ws:
        hello = json.loads((await ws.receive(timeout=30)).data)
        assert hello["event"] == "pusher:connection_established"
        for frame in frames:
            await ws.send_str(frame)
            answer = json.loads((await ws.receive(timeout=30)).data)
            assert answer["event"] == "pusher:error", answer
            assert json.loads(answer["data"]) == {"code": 4200, "message": "Invalid message format"}
        await ws.send_str('{"event":"pusher:ping","data":{}}')
        assert json.loads((await ws.receive(timeout=30)).data)["event"] == "pusher:pong"
