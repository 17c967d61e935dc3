"""Push without a backend: the endpoint check, the encryption and VAPID signature a push
service and a browser verify, and what each provider's answer means."""

from __future__ import annotations

import base64
import json
import os

import http_ece
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confab.errors import InvalidRequest
from confab_notifier.commands import check_subscription
from confab_notifier.push import Outcome, Target, WebPush, _fcm_outcome, new_vapid_pem, outcome_of


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser_keys() -> tuple[ec.EllipticCurvePrivateKey, str, bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = os.urandom(16)
    return key, b64(point), auth, b64(auth)


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://127.0.0.1/push",  # loopback
        "https://10.1.2.3/push",  # private
        "https://[::ffff:192.168.0.1]/push",  # IPv4-mapped private
        "http://push.example.com/x",  # not https
        "https://user:pw@push.example.com/x",  # credentials
    ],
)
async def test_push_endpoints_inside_the_network_are_refused(endpoint: str) -> None:
    _, p256dh, _, auth = browser_keys()
    with pytest.raises(InvalidRequest):
        await check_subscription(endpoint, p256dh, auth, allow_private=False)


async def test_subscription_keys_must_be_a_browsers() -> None:
    _, p256dh, _, auth = browser_keys()
    await check_subscription("https://127.0.0.1/push", p256dh, auth, allow_private=True)
    for bad_key, bad_auth in ((b64(b"\x04" + b"\x00" * 64), auth), (p256dh, b64(b"short"))):
        with pytest.raises(InvalidRequest):
            await check_subscription("https://127.0.0.1/p", bad_key, bad_auth, allow_private=True)


def test_a_push_decrypts_with_the_subscriptions_keys_and_carries_a_vapid_jwt() -> None:
    key, p256dh, auth, auth_text = browser_keys()
    web = WebPush(new_vapid_pem(), "mailto:ops@acme.test", allow_private=False)
    target = Target("pt_1", "webpush", "https://push.example.com/send/abc", p256dh, auth_text)
    body, headers = web.request(target, b'{"title": "hi"}')
    plain = http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm")
    assert json.loads(plain) == {"title": "hi"}
    scheme, _, params = headers["Authorization"].partition(" ")
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert scheme == "vapid" and fields["k"] == web.public_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), base64.urlsafe_b64decode(fields["k"] + "==")
    )
    claims = jwt.decode(
        fields["t"], public, algorithms=["ES256"], audience="https://push.example.com"
    )
    assert claims["sub"] == "mailto:ops@acme.test"
    assert headers["Content-Encoding"] == "aes128gcm"


def test_what_the_providers_answers_mean() -> None:
    assert [outcome_of(s) for s in (201, 404, 410, 413, 429, 503)] == [
        Outcome.SENT, Outcome.GONE, Outcome.GONE, Outcome.FAILED, Outcome.RETRY, Outcome.RETRY,
    ]  # fmt: skip
    unregistered = httpx.Response(404, json={"error": {"details": [{"errorCode": "UNREGISTERED"}]}})
    assert _fcm_outcome(unregistered) is Outcome.GONE
    assert _fcm_outcome(httpx.Response(503, json={})) is Outcome.RETRY
    assert _fcm_outcome(httpx.Response(400, json={"error": {}})) is Outcome.FAILED
    assert _fcm_outcome(httpx.Response(200, json={"name": "x"})) is Outcome.SENT
