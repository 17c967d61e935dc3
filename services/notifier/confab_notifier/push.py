"""Push: browsers (Web Push) and mobile devices (FCM, APNs), each answering with an
``Outcome`` the sender acts on.

- **Web Push** (RFC 8030): the payload encrypted for the subscription (``aes128gcm``,
  RFC 8291, ``http_ece``) and the request signed with the deployment's VAPID key
  (RFC 8292, ``py_vapid``: a JWT for the push service's origin, ES256). The endpoint was
  chosen by a browser, so it is checked like a webhook URL (``confab.egress``: when it
  is registered, and at every connection through the guarded resolver). 201: sent;
  404 or 410: the subscription is gone (removed).
- **FCM HTTP v1**: an OAuth2 access token from the workspace's service account (a JWT
  signed RS256, exchanged at the token endpoint, cached until it expires), then
  ``POST /v1/projects/<project>/messages:send``. ``UNREGISTERED`` (404): the token is
  gone (removed); 401: a new access token, once.
- **APNs** over HTTP/2 with token authentication: a JWT (ES256, the team's key id),
  reused up to 50 minutes, ``POST /3/device/<token>`` with ``apns-topic``. 410 (and 400
  ``BadDeviceToken``): gone (removed); 403 ``ExpiredProviderToken``: a new JWT, once.

Everything else: ``RETRY`` for 429 and 5xx and no answer, ``FAILED`` for other refusals
(this notification is not pushed to that target; the target stays).

The providers' addresses are settings (``CONFAB_NOTIFIER_FCM_URL``, ``…_FCM_TOKEN_URL``,
``…_APNS_URL``), never taken from a tenant's credentials; tests point them at local
stand-ins.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import http_ece
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from confab.egress import GuardedResolver

VAPID_KEY = "vapid-key"
TTL_SECONDS = 24 * 3600


class Outcome(Enum):
    SENT = "sent"
    GONE = "gone"  # remove the target
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Target:
    id: str
    kind: str
    address: str
    p256dh: str = ""
    auth: str = ""


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def outcome_of(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.SENT
    if status in (404, 410):
        return Outcome.GONE
    if status == 429 or status >= 500:
        return Outcome.RETRY
    return Outcome.FAILED


# -- web push -------------------------------------------------------------------------------


class WebPush:
    def __init__(self, vapid_pem: bytes, subject: str, *, allow_private: bool) -> None:
        self.vapid = Vapid02.from_pem(vapid_pem)
        self.subject = subject
        self.allow_private = allow_private
        self._http: aiohttp.ClientSession | None = None

    @property
    def public_key(self) -> str:
        """The application server key a browser subscribes with (uncompressed P-256)."""
        from cryptography.hazmat.primitives import serialization

        raw = self.vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(raw)

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(allow_private=self.allow_private)
            )
            self._http = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=15)
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def request(self, target: Target, payload: bytes) -> tuple[bytes, dict[str, str]]:
        """The encrypted body and the headers of one push."""
        receiver = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64url_decode(target.p256dh)
        )
        del receiver  # checked: a malformed key fails here, not inside the encryption
        sender = ec.generate_private_key(ec.SECP256R1())
        body = http_ece.encrypt(
            payload,
            private_key=sender,
            dh=b64url_decode(target.p256dh),
            auth_secret=b64url_decode(target.auth),
            version="aes128gcm",
        )
        parts = urlsplit(target.address)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "sub": self.subject,
            "exp": int(time.time()) + 12 * 3600,
        }
        headers = dict(self.vapid.sign(claims))
        headers.update(
            {
                "TTL": str(TTL_SECONDS),
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
                "Urgency": "normal",
            }
        )
        return body, headers

    async def send(self, target: Target, payload: bytes) -> Outcome:
        try:
            body, headers = self.request(target, payload)
        except (ValueError, TypeError):
            return Outcome.GONE  # keys no browser made: the subscription can never work
        try:
            async with self.http().post(target.address, data=body, headers=headers) as answer:
                await answer.read()
                return outcome_of(answer.status)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return Outcome.RETRY


def new_vapid_pem() -> bytes:
    vapid = Vapid02()
    vapid.generate_keys()
    return bytes(vapid.private_pem())


# -- FCM -------------------------------------------------------------------------------------

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


class Fcm:
    """One workspace's FCM sender (its service account)."""

    def __init__(self, account: dict[str, Any], base_url: str, token_url: str) -> None:
        self.account = account
        self.base_url = base_url.rstrip("/")
        self.token_url = token_url
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def access_token(self, client: httpx.AsyncClient, fresh: bool = False) -> str:
        async with self._lock:
            if not fresh and self._token and self._token[1] > time.time() + 60:
                return self._token[0]
            now = int(time.time())
            assertion = jwt.encode(
                {
                    "iss": self.account["client_email"],
                    "scope": FCM_SCOPE,
                    "aud": self.token_url,
                    "iat": now,
                    "exp": now + 3600,
                },
                self.account["private_key"],
                algorithm="RS256",
                headers={"kid": self.account.get("private_key_id", "")},
            )
            answer = await client.post(
                self.token_url,
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": assertion,
                },
            )
            answer.raise_for_status()
            body = answer.json()
            self._token = (body["access_token"], now + float(body.get("expires_in", 3600)))
            return self._token[0]

    async def send(
        self, client: httpx.AsyncClient, target: Target, message: dict[str, Any]
    ) -> Outcome:
        url = f"{self.base_url}/v1/projects/{self.account['project_id']}/messages:send"
        body = {"message": {"token": target.address, **message}}
        try:
            for attempt in range(2):
                token = await self.access_token(client, fresh=attempt > 0)
                answer = await client.post(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}
                )
                if answer.status_code == 401 and attempt == 0:
                    continue
                return _fcm_outcome(answer)
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            return Outcome.RETRY
        return Outcome.RETRY


def _fcm_outcome(answer: httpx.Response) -> Outcome:
    if answer.status_code == 200:
        return Outcome.SENT
    try:
        details = answer.json().get("error", {}).get("details", [])
    except ValueError:
        details = []
    codes = {d.get("errorCode") for d in details if isinstance(d, dict)}
    if "UNREGISTERED" in codes or answer.status_code == 404:
        return Outcome.GONE
    if answer.status_code == 429 or answer.status_code >= 500:
        return Outcome.RETRY
    return Outcome.FAILED


# -- APNs ------------------------------------------------------------------------------------


class Apns:
    """One workspace's APNs sender (its team's signing key)."""

    def __init__(self, credentials: dict[str, Any], base_url: str) -> None:
        self.team_id = credentials["team_id"]
        self.key_id = credentials["key_id"]
        self.private_key = credentials["private_key"]
        self.topic = credentials["topic"]
        self.base_url = base_url.rstrip("/")
        self._token: tuple[str, float] | None = None

    def provider_token(self, fresh: bool = False) -> str:
        now = time.time()
        if fresh or self._token is None or self._token[1] < now - 50 * 60:
            token = jwt.encode(
                {"iss": self.team_id, "iat": int(now)},
                self.private_key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._token = (token, now)
        return self._token[0]

    async def send(
        self, client: httpx.AsyncClient, target: Target, payload: dict[str, Any], apns_id: str
    ) -> Outcome:
        url = f"{self.base_url}/3/device/{target.address}"
        try:
            for attempt in range(2):
                headers = {
                    "authorization": f"bearer {self.provider_token(fresh=attempt > 0)}",
                    "apns-topic": self.topic,
                    "apns-push-type": "alert",
                    "apns-priority": "10",
                    "apns-expiration": str(int(time.time()) + TTL_SECONDS),
                    "apns-id": apns_id,
                }
                answer = await client.post(url, content=json.dumps(payload), headers=headers)
                reason = _reason(answer)
                if answer.status_code == 403 and reason == "ExpiredProviderToken" and not attempt:
                    continue
                if answer.status_code == 200:
                    return Outcome.SENT
                if answer.status_code == 410 or reason in ("BadDeviceToken", "Unregistered"):
                    return Outcome.GONE
                if answer.status_code == 429 or answer.status_code >= 500:
                    return Outcome.RETRY
                return Outcome.FAILED
        except (httpx.HTTPError, OSError):
            return Outcome.RETRY
        return Outcome.RETRY


def _reason(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("reason", ""))
    except ValueError:
        return ""


# -- one sender for every kind ------------------------------------------------------------------


class Pusher:
    """Sends one push to one target, whatever its kind, with the workspace's credentials
    (read from the read model, opened with the deployment's key, cached while unchanged)."""

    def __init__(
        self,
        web: WebPush,
        credentials: Callable[[str], Awaitable[dict[str, Any] | None]],
        *,
        fcm_url: str,
        fcm_token_url: str,
        apns_url: str,
    ) -> None:
        self.web = web
        self.credentials = credentials
        self.fcm_url = fcm_url
        self.fcm_token_url = fcm_token_url
        self.apns_url = apns_url
        self._senders: dict[str, tuple[str, Fcm | None, Apns | None]] = {}
        self.fcm_http = httpx.AsyncClient(timeout=15.0)
        # HTTP/2 to APNs: negotiated over TLS; over plain http (a local stand-in) with prior
        # knowledge, as APNs has no HTTP/1.1.
        plain = apns_url.startswith("http://")
        self.apns_http = httpx.AsyncClient(http2=True, http1=not plain, timeout=15.0)

    async def close(self) -> None:
        await self.web.close()
        await self.fcm_http.aclose()
        await self.apns_http.aclose()

    async def _for(self, workspace_id: str) -> tuple[Fcm | None, Apns | None]:
        found = await self.credentials(workspace_id)
        if found is None:
            return None, None
        version = found["version"]
        cached = self._senders.get(workspace_id)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        fcm = apns = None
        if found.get("fcm"):
            fcm = Fcm(found["fcm"], self.fcm_url, self.fcm_token_url)
        if found.get("apns"):
            apns_creds = found["apns"]
            base = self.apns_url or (
                "https://api.sandbox.push.apple.com"
                if apns_creds.get("environment") == "development"
                else "https://api.push.apple.com"
            )
            apns = Apns(apns_creds, base)
        self._senders[workspace_id] = (version, fcm, apns)
        return fcm, apns

    async def send(
        self,
        workspace_id: str,
        target: Target,
        title: str,
        body: str,
        data: dict[str, str],
        notification_id: str,
    ) -> Outcome:
        if target.kind == "webpush":
            payload = json.dumps({"title": title, "body": body, **data}).encode()
            return await self.web.send(target, payload)
        fcm, apns = await self._for(workspace_id)
        if target.kind == "fcm":
            if fcm is None:
                return Outcome.FAILED  # no credentials: the tenant has not set them
            message = {"notification": {"title": title, "body": body}, "data": data}
            return await fcm.send(self.fcm_http, target, message)
        if target.kind == "apns":
            if apns is None:
                return Outcome.FAILED
            payload = {
                "aps": {
                    "alert": {"title": title, "body": body},
                    "thread-id": data["conversation_id"],
                },
                **data,
            }
            return await apns.send(self.apns_http, target, payload, notification_id)
        return Outcome.FAILED
