"""Local stand-ins for the push services the notifier talks to, on loopback.

They implement the documented request and error contracts, not the real services (which
are unreachable here):

- ``WebPushService``: a push service (RFC 8030) for browsers whose keys it holds: checks
  the VAPID JWT (RFC 8292: ES256, ``aud`` the endpoint's origin, ``exp`` within 24 h,
  ``sub``, ``k`` the deployment's public key) and decrypts the ``aes128gcm`` body with the
  subscription's private key and auth secret (RFC 8291). An endpoint marked gone answers
  410.
- ``FcmService``: the OAuth2 token endpoint (a JWT bearer assertion signed RS256 by the
  service account, ``aud`` the token URL, the firebase.messaging scope) and FCM HTTP v1
  ``messages:send`` (the bearer token it issued; a token marked unregistered answers 404
  with ``errorCode: UNREGISTERED``).
- ``ApnsService``: APNs over HTTP/2 (h2c with prior knowledge, via ``h2``):
  ``POST /3/device/<token>`` with a provider JWT (ES256, ``kid`` the key id, ``iss`` the
  team), ``apns-topic`` the bundle id; a token marked unregistered answers 410
  ``{"reason": "Unregistered"}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded

from confab_infra.backends import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class Browser:
    """A browser's push subscription: its keys, as PushManager makes them."""

    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self) -> dict[str, Any]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


class _Server:
    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class WebPushService(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.browsers: dict[str, Browser] = {}
        self.gone: set[str] = set()
        self.received: list[tuple[str, dict[str, Any], str]] = []  # (browser, payload, k)
        self.refused: list[str] = []

    async def start(self) -> WebPushService:
        app = web.Application()
        app.router.add_post("/push/{id}", self._push)
        await self._serve(app)
        return self

    def browser(self) -> tuple[str, Browser]:
        name = uuid.uuid4().hex
        browser = self.browsers[name] = Browser(f"{self.base}/push/{name}")
        return name, browser

    async def _push(self, request: web.Request) -> web.Response:
        name = request.match_info["id"]
        if name in self.gone:
            return web.Response(status=410)
        browser = self.browsers.get(name)
        if browser is None:
            return web.Response(status=404)
        try:
            scheme, _, params = request.headers["Authorization"].partition(" ")
            assert scheme == "vapid"
            fields = dict(p.strip().split("=", 1) for p in params.split(","))
            k = fields["k"]
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(k))
            claims = jwt.decode(
                fields["t"], public, algorithms=["ES256"], audience=self.base,
                options={"require": ["exp", "aud", "sub"]},
            )  # fmt: skip
            assert claims["exp"] <= time.time() + 24 * 3600 and claims["sub"].startswith("mailto:")
            assert request.headers["Content-Encoding"] == "aes128gcm"
            assert int(request.headers["TTL"]) >= 0
            plain = http_ece.decrypt(
                await request.read(),
                private_key=browser.key,
                auth_secret=browser.auth,
                version="aes128gcm",
            )
        except Exception as exc:  # the test reads the refusals
            self.refused.append(f"{type(exc).__name__}: {exc}")
            return web.Response(status=400, text="refused")
        self.received.append((name, json.loads(plain), k))
        return web.Response(status=201, headers={"Location": f"{self.base}/msg/{uuid.uuid4()}"})


class FcmService(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.project = "confab-test"
        self.email = "notifier@confab-test.iam.gserviceaccount.com"
        self.tokens: set[str] = set()
        self.unregistered: set[str] = set()
        self.received: list[dict[str, Any]] = []
        self.refused: list[str] = []

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    def account(self) -> dict[str, Any]:
        """The service account JSON a tenant downloads from Firebase (the fields used)."""
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": "k1",
            "private_key": pem(self.key),
            "client_email": self.email,
            "token_uri": "https://oauth2.googleapis.com/token",
        }

    async def start(self) -> FcmService:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        await self._serve(app)
        return self

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            claims = jwt.decode(
                str(form["assertion"]), self.key.public_key(), algorithms=["RS256"],
                audience=self.token_url, options={"require": ["exp", "iat", "iss"]},
            )  # fmt: skip
            assert claims["iss"] == self.email
            assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        except Exception as exc:
            self.refused.append(f"token: {exc}")
            return web.json_response({"error": "invalid_grant"}, status=400)
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.tokens:
            return _fcm_error(401, "UNAUTHENTICATED", None)
        if request.match_info["project"] != self.project:
            return _fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")
        message = (await request.json())["message"]
        if message["token"] in self.unregistered:
            return _fcm_error(404, "NOT_FOUND", "UNREGISTERED")
        self.received.append(message)
        return web.json_response({"name": f"projects/{self.project}/messages/{uuid.uuid4().int}"})


def _fcm_error(status: int, code: str, error_code: str | None) -> web.Response:
    details = (
        [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]
        if error_code
        else []
    )
    body = {"error": {"code": status, "message": code, "status": code, "details": details}}
    return web.json_response(body, status=status)


class ApnsService:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.team_id = "TEAM123456"
        self.key_id = "KEY1234567"
        self.topic = "com.acme.rentals"
        self.unregistered: set[str] = set()
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.refused: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def credentials(self) -> dict[str, Any]:
        return {
            "team_id": self.team_id,
            "key_id": self.key_id,
            "private_key": pem(self.key),
            "topic": self.topic,
            "environment": "development",
        }

    async def start(self) -> ApnsService:
        self.port = free_port()
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", self.port, reuse_address=True
        )
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = H2Connection(config=H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())
                    elif isinstance(event, DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(len(event.data), event.stream_id)
                    elif isinstance(event, StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, answer = self._answer(headers, bytes(body))
                        out = json.dumps(answer).encode() if answer else b""
                        conn.send_headers(
                            event.stream_id,
                            [(":status", str(status)), ("apns-id", headers.get("apns-id", ""))],
                            end_stream=not out,
                        )
                        if out:
                            conn.send_data(event.stream_id, out, end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return 404, {"reason": "BadPath"}
        token = path.removeprefix("/3/device/")
        try:
            bearer = headers["authorization"].removeprefix("bearer ")
            assert jwt.get_unverified_header(bearer)["kid"] == self.key_id
            claims = jwt.decode(bearer, self.key.public_key(), algorithms=["ES256"])
            assert claims["iss"] == self.team_id and claims["iat"] <= time.time() + 60
        except Exception as exc:
            self.refused.append(f"auth: {exc}")
            return 403, {"reason": "InvalidProviderToken"}
        if headers.get("apns-topic") != self.topic:
            return 400, {"reason": "TopicDisallowed"}
        if token in self.unregistered:
            return 410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        self.received.append((token, headers, json.loads(body)))
        return 200, None
