"""Signatures, with the protocol reference's test vectors and the official Python SDK."""

from __future__ import annotations

import json
import time

import pusher
import pytest
from pusher.http import Request

from confab_fanout import auth

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET = "1234.1234"


def test_private_channel_vector() -> None:
    expected = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    assert auth.channel_auth(KEY, SECRET, SOCKET, "private-foobar") == f"{KEY}:{expected}"
    assert auth.check_channel_auth(KEY, SECRET, SOCKET, "private-foobar", f"{KEY}:{expected}")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Mr. Channels", "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"),
        ("Mr. Pusher", "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"),
    ],
)
def test_presence_channel_vectors(name: str, expected: str) -> None:
    channel_data = json.dumps({"user_id": 10, "user_info": {"name": name}}, separators=(",", ":"))
    signature = f"{KEY}:{expected}"
    assert auth.channel_auth(KEY, SECRET, SOCKET, "presence-foobar", channel_data) == signature
    assert auth.check_channel_auth(KEY, SECRET, SOCKET, "presence-foobar", signature, channel_data)
    # channel_data is signed byte for byte: re-serialising it breaks the signature.
    spaced = json.dumps({"user_id": 10, "user_info": {"name": name}})
    assert not auth.check_channel_auth(KEY, SECRET, SOCKET, "presence-foobar", signature, spaced)


def test_bad_channel_signatures_are_refused() -> None:
    good = auth.channel_auth(KEY, SECRET, SOCKET, "private-a")
    for bad in (
        "",
        good.split(":")[1],  # no key prefix
        "otherkey:" + good.split(":")[1],
        auth.channel_auth(KEY, SECRET, "1234.1235", "private-a"),
        auth.channel_auth(KEY, SECRET, SOCKET, "private-b"),
        auth.channel_auth(KEY, "other secret", SOCKET, "private-a"),
    ):
        assert not auth.check_channel_auth(KEY, SECRET, SOCKET, "private-a", bad)


def test_sdk_channel_and_user_auth_verify() -> None:
    sdk = pusher.Pusher(app_id="1", key=KEY, secret=SECRET)
    private = sdk.authenticate(channel="private-x", socket_id=SOCKET)
    assert auth.check_channel_auth(KEY, SECRET, SOCKET, "private-x", private["auth"])
    presence = sdk.authenticate(
        channel="presence-x", socket_id=SOCKET, custom_data={"user_id": 7, "user_info": {}}
    )
    assert auth.check_channel_auth(
        KEY, SECRET, SOCKET, "presence-x", presence["auth"], presence["channel_data"]
    )
    user = sdk.authenticate_user(SOCKET, {"id": "42", "name": "A"})
    assert auth.check_user_auth(KEY, SECRET, SOCKET, user["user_data"], user["auth"])
    assert not auth.check_user_auth(KEY, SECRET, "1.1", user["user_data"], user["auth"])


def test_request_signing_vector() -> None:
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    assert auth.body_md5(body) == "ec365a775a4cd0599faeb73354201b6f"
    params = {
        "auth_key": KEY,
        "auth_timestamp": "1353088179",
        "auth_version": "1.0",
        "body_md5": "ec365a775a4cd0599faeb73354201b6f",
    }
    assert auth.request_string("POST", "/apps/3/events", params) == (
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
    )
    signature = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    assert auth.sign(SECRET, auth.request_string("POST", "/apps/3/events", params)) == signature
    signed = {**params, "auth_signature": signature}
    now = 1353088179
    assert auth.check_request(SECRET, "POST", "/apps/3/events", signed, body, now=now) is None
    assert auth.check_request(SECRET, "POST", "/apps/3/events", signed, body + b" ", now=now)
    assert auth.check_request(SECRET, "POST", "/apps/4/events", signed, body, now=now)
    assert auth.check_request(SECRET, "POST", "/apps/3/events", signed, body, now=now + 601)


def test_sdk_requests_verify_including_get_with_body_md5() -> None:
    sdk = pusher.Pusher(app_id="3", key=KEY, secret=SECRET)
    post = Request(sdk._pusher_client, "POST", "/apps/3/events", {"name": "x", "data": "{}"})
    assert auth.check_request(SECRET, "POST", post.path, post.query_params, post.body) is None
    # pusher-http-python sends body_md5 (of nothing) on GETs too.
    get = Request(sdk._pusher_client, "GET", "/apps/3/channels", {"info": "user_count"})
    assert "body_md5" in get.query_params
    assert auth.check_request(SECRET, "GET", get.path, get.query_params, b"") is None


def test_keys_are_lowercased_and_sorted() -> None:
    params = {"Zeta": "1", "auth_key": KEY, "Alpha": "x,y"}
    assert auth.request_string("get", "/p", params) == "GET\n/p\nalpha=x,y&auth_key=" + KEY + (
        "&zeta=1"
    )
    signed = auth.sign_request(KEY, SECRET, "GET", "/p", params)
    assert auth.check_request(SECRET, "GET", "/p", signed, b"") is None


def test_webhook_signature_validates_with_the_sdk() -> None:
    sdk = pusher.Pusher(app_id="3", key=KEY, secret=SECRET)
    # validate_webhook also checks that time_ms is recent.
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "x"}]}).encode()
    headers = auth.webhook_headers(KEY, SECRET, body)
    assert headers["X-Pusher-Key"] == KEY
    hook = sdk.validate_webhook(KEY, headers["X-Pusher-Signature"], body.decode())
    assert hook is not None and hook["events"] == [{"name": "x"}]
