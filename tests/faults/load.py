"""A steady chat load for fault tests, and the check that nothing was lost or doubled.

`Load` runs widget users who each send to one conversation at a steady pace through the
balancer, retrying a message with the same ``client_msg_id`` until it is acknowledged
(so a retry after a lost reply is recognised, not stored twice), while every
participant listens on a Pusher socket that reconnects and resumes (``confab:resume``)
after the last ``event_seq`` it saw. `Load.verify` then checks the promise of the
platform: every acknowledged message is in the log exactly once, in the read model and
at every socket exactly once, and nothing acknowledged is missing from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from confab import bus
from confab.contracts.events import messaging
from confab.eventlog import read_subject
from tests.client import Api, new_workspace
from tests.test_messaging_api import World

PACE = 0.1  # seconds between one sender's messages: about 10 messages a second each
RETRY_PAUSE = 0.2
REQUEST_TIMEOUT = 15.0
CATCH_UP_TIMEOUT = 90.0


def _now() -> float:
    return time.monotonic()


@dataclass
class Sender:
    """One widget user sending to one conversation, one message at a time."""

    name: str
    widget: Api
    conversation_id: str
    acked: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    max_wait: float = 0.0  # the longest time between two acknowledgements

    async def run(self, stop: asyncio.Event, drain_until: list[float]) -> None:
        url = f"{self.widget.base}/api/widget/conversations/{self.conversation_id}/messages"
        last_ack = _now()
        i = 0
        while not stop.is_set():
            i += 1
            key = f"{self.name}-{i}"
            while True:
                payload = {"content": key, "client_msg_id": key}
                status, body = await _request(self.widget, "POST", url, payload)
                self.statuses[status] += 1
                if status in ("200", "201"):  # 200: a retry answered with the stored message
                    self.acked.append(body["id"])
                    self.max_wait = max(self.max_wait, _now() - last_ack)
                    last_ack = _now()
                    break
                if stop.is_set() and _now() > drain_until[0]:
                    return  # never acknowledged: it may or may not be stored, both are fine
                await asyncio.sleep(RETRY_PAUSE)
            await asyncio.sleep(PACE)


async def _request(
    widget: Api, method: str, url: str, payload: Any = None, params: Any = None
) -> tuple[str, Any]:
    """(status, body); a connection error or timeout is a status too (the balancer's
    502/503 pages are HTML, so the body is only read as JSON when it is JSON)."""
    try:
        async with widget.http.request(
            method,
            url,
            json=payload,
            params=params,
            headers=widget.headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return str(response.status), body
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, None


@dataclass
class Listener:
    """A participant's Pusher socket on one conversation, through the balancer."""

    name: str
    widget: Api
    ws_url: str
    conversation_id: str
    received: list[str] = field(default_factory=list)  # message.created ids, as they came
    last_event_seq: int = 0
    connections: int = 0
    resume_failures: list[Any] = field(default_factory=list)
    max_outage: float = 0.0  # longest time from a dropped socket to subscribed again
    max_silence: float = 0.0  # longest time between two frames while sends go on
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _down_since: float | None = None  # when the socket dropped, until subscribed again
    history: list[str] = field(default_factory=list)  # the socket's life, for a failure

    @property
    def channel(self) -> str:
        return f"private-conversation.{self.conversation_id}"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._connect_once(stop)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                self._note(f"dropped: {type(exc).__name__} {exc}")
            self.subscribed.clear()
            if self._down_since is None:
                self._down_since = _now()
            if not stop.is_set():
                await asyncio.sleep(RETRY_PAUSE)

    async def _connect_once(self, stop: asyncio.Event) -> None:
        http = self.widget.http
        async with http.ws_connect(
            self.ws_url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=10)
        ) as ws:
            frame = await _frame(ws, 10)
            if frame.get("event") != "pusher:connection_established":
                raise ValueError(f"unexpected first frame {frame}")
            socket_id = json.loads(frame["data"])["socket_id"]
            self._note(f"connected as {socket_id}, resuming after {self.last_event_seq}")
            auth = await self._authorize(socket_id)
            self.connections += 1
            await ws.send_json(
                {"event": "pusher:subscribe", "data": {"channel": self.channel, **auth}}
            )
            if self.last_event_seq:
                await ws.send_json(
                    {
                        "event": "confab:resume",
                        "data": {"channel": self.channel, "after_seq": self.last_event_seq},
                    }
                )
            last_frame = _now()
            while not stop.is_set():
                try:
                    frame = await _frame(ws, 0.5)
                except TimeoutError:
                    continue
                now = _now()
                self.max_silence = max(self.max_silence, now - last_frame)
                last_frame = now
                self._handle(frame)
                if frame.get("event") == "pusher:ping":
                    await ws.send_json({"event": "pusher:pong", "data": {}})

    def _note(self, what: str) -> None:
        self.history.append(f"{_now():.2f} {what}")

    def _handle(self, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        if (
            event in ("confab:resumed", "pusher:error")
            or event == "pusher_internal:subscription_succeeded"
        ):
            self._note(f"{event} {frame.get('data')}")
        if event == "pusher_internal:subscription_succeeded":
            if self._down_since is not None:
                self.max_outage = max(self.max_outage, _now() - self._down_since)
                self._down_since = None
            self.subscribed.set()
            return
        if event == "confab:resume_failed":
            self.resume_failures.append(frame.get("data"))
            return
        if frame.get("channel") != self.channel or event is None or event.startswith("pusher"):
            return
        data = frame.get("data")
        data = json.loads(data) if isinstance(data, str) else data
        if not isinstance(data, dict):
            return
        if event == "message.created":
            self.received.append(data["id"])
        if isinstance(data.get("event_seq"), int):
            self.last_event_seq = max(self.last_event_seq, data["event_seq"])

    async def _authorize(self, socket_id: str) -> dict[str, str]:
        url = f"{self.widget.base}/api/widget/broadcasting/auth"
        payload = {"socket_id": socket_id, "channel_name": self.channel}
        status, body = await _request(self.widget, "POST", url, payload)
        if status != "200" or not isinstance(body, dict):
            raise ValueError(f"channel authorization answered {status}")
        return {k: v for k, v in body.items() if k in ("auth", "channel_data")}


async def _frame(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), timeout)
    if message.type is not aiohttp.WSMsgType.TEXT:
        raise aiohttp.ClientConnectionError(f"socket closed ({message.type.name})")
    frame: dict[str, Any] = json.loads(message.data)
    return frame


@dataclass
class Figures:
    """What one fault run measured, for docs/reliability.md."""

    fault: str
    load: str
    acknowledged: int
    in_log: int
    in_read_model: int
    duplicates: int
    max_send_wait_s: float
    max_socket_outage_s: float
    max_socket_silence_s: float
    statuses: dict[str, int]
    notes: dict[str, Any] = field(default_factory=dict)


class Load:
    """Senders and listeners on a fresh workspace, in `conversations` group conversations."""

    def __init__(self, http: aiohttp.ClientSession, info: dict[str, Any]) -> None:
        self.http = http
        self.info = info
        self.senders: list[Sender] = []
        self.listeners: list[Listener] = []
        self.workspace_id = ""
        self.world: World | None = None
        self._stop = asyncio.Event()  # the senders'
        # The listeners' own: they read on while the last sends are acknowledged and
        # checked, until ``close`` (sharing the senders' made a socket stop reading
        # before the last message reached it).
        self._stop_listening = asyncio.Event()
        self._drain_until = [0.0]
        self._sending: list[asyncio.Task[None]] = []
        self._listening: list[asyncio.Task[None]] = []
        self.started = 0.0

    async def prepare(self, conversations: int = 4, per_conversation: int = 3) -> None:
        admin = Api(self.http, self.info["gateway_url"], {
            "Authorization": f"Bearer {self.info['admin_token']}"
        })  # fmt: skip
        self.world = world = World(
            admin, await new_workspace(admin, f"faults-{uuid.uuid4().hex[:6]}")
        )
        self.workspace_id = world.workspace["id"]
        ws_url = f"{self.info['fanout_ws_url']}/app/{world.workspace['app_key']}?protocol=7"
        for c in range(conversations):
            users = [await world.user(f"U{c}{k}") for k in range(per_conversation)]
            cid = await world.conversation(*(u for u, _ in users), kind="group")
            for k, (_, widget) in enumerate(users):
                self.senders.append(Sender(f"c{c}u{k}", widget, cid))
                self.listeners.append(Listener(f"c{c}u{k}", widget, ws_url, cid))

    @property
    def description(self) -> str:
        return (
            f"{len(self.senders)} senders at ~{1 / PACE:.0f} msg/s each, "
            f"{len(self.listeners)} sockets, {len({s.conversation_id for s in self.senders})} "
            "conversations"
        )

    async def start(self) -> None:
        self.started = _now()
        self._listening = [
            asyncio.create_task(li.run(self._stop_listening)) for li in self.listeners
        ]
        await _wait(lambda: all(li.subscribed.is_set() for li in self.listeners), 60, "sockets")
        self._sending = [
            asyncio.create_task(s.run(self._stop, self._drain_until)) for s in self.senders
        ]

    @property
    def acknowledged(self) -> int:
        return sum(len(s.acked) for s in self.senders)

    async def progress(self, count: int, timeout: float = 60) -> None:
        """Wait until `count` more messages are acknowledged (the platform moves on)."""
        target = self.acknowledged + count
        await _wait(lambda: self.acknowledged >= target, timeout, f"{count} more acknowledgements")

    async def stop(self, drain: float = 30) -> None:
        """Stop sending (a message being retried gets up to `drain` seconds more)."""
        self._drain_until[0] = _now() + drain
        self._stop.set()

    async def verify(self, fault: str, notes: dict[str, Any] | None = None) -> Figures:
        """Every acknowledged message once in the log, the read model and every socket."""
        await asyncio.wait_for(asyncio.gather(*self._sending), 60)
        acked = {s.conversation_id: set() for s in self.senders}
        for s in self.senders:
            acked[s.conversation_id].update(s.acked)
        logged = await self._logged()
        in_log = sum(len(ids) for ids in logged.values())
        duplicates = sum(len(ids) - len(set(ids)) for ids in logged.values())
        for cid, ids in logged.items():
            missing = acked[cid] - set(ids)
            assert not missing, f"acknowledged but not in the log: {sorted(missing)[:5]}"
        in_read_model = 0
        for cid, ids in logged.items():
            stored = await self._read_model_until(cid, ids)
            in_read_model += len(stored)
        for li in self.listeners:
            await self._socket_until(li, logged[li.conversation_id])
        for li in self.listeners:
            counts = Counter(li.received)
            doubled = [m for m, n in counts.items() if n > 1]
            duplicates += sum(counts[m] - 1 for m in doubled)
            assert not doubled, f"{li.name}'s socket got {len(doubled)} messages twice"
            assert not li.resume_failures, li.resume_failures
        await self.close()
        assert duplicates == 0
        statuses: Counter[str] = Counter()
        for s in self.senders:
            statuses.update(s.statuses)
        return Figures(
            fault=fault,
            load=self.description,
            acknowledged=sum(len(ids) for ids in acked.values()),
            in_log=in_log,
            in_read_model=in_read_model,
            duplicates=duplicates,
            max_send_wait_s=round(max(s.max_wait for s in self.senders), 2),
            max_socket_outage_s=round(max(li.max_outage for li in self.listeners), 2),
            max_socket_silence_s=round(max(li.max_silence for li in self.listeners), 2),
            statuses=dict(statuses),
            notes={
                "socket_connections": sum(li.connections for li in self.listeners),
                "seconds": round(_now() - self.started, 1),
                **(notes or {}),
            },
        )

    async def _socket_until(self, li: Listener, logged: list[str]) -> None:
        """Wait until the socket got every logged message; else say what it missed, when."""
        deadline = _now() + CATCH_UP_TIMEOUT
        while not set(logged) <= set(li.received):
            if _now() > deadline:
                got = set(li.received)
                missing = [(i + 1, m) for i, m in enumerate(logged) if m not in got]
                raise AssertionError(
                    f"{li.name}'s socket lacks {len(missing)} of {len(logged)} messages "
                    f"(positions in the log: {[i for i, _ in missing][:20]}); "
                    f"its last event_seq {li.last_event_seq}; its life: {li.history}"
                )
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """Stop the listeners (only after they caught up) and any sender left."""
        self._stop.set()
        self._stop_listening.set()
        for task in self._sending + self._listening:
            task.cancel()
        for task in self._sending + self._listening:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _logged(self) -> dict[str, list[str]]:
        """The ids of every message.posted in each conversation's log, in order."""
        nc = await bus.connect(self.info["nats_url"], "faults-check")
        try:
            found: dict[str, list[str]] = {}
            for cid in {s.conversation_id for s in self.senders}:
                subject = messaging.subject(self.workspace_id, cid)
                found[cid] = [
                    e.event.message_id
                    async for e in read_subject(nc, "CONVERSATIONS", subject)
                    if e.type == "message.posted"
                ]
            return found
        finally:
            await nc.close()

    async def _read_model_until(self, cid: str, logged: list[str]) -> list[str]:
        """The conversation's messages as the REST API lists them, once they match the log."""
        widget = next(s.widget for s in self.senders if s.conversation_id == cid)
        url = f"{widget.base}/api/widget/conversations/{cid}/messages"
        deadline = _now() + CATCH_UP_TIMEOUT
        while True:
            stored, refusal = await _listed(widget, url)
            if stored == logged or _now() > deadline:
                assert stored == logged, (
                    f"read model of {cid}: {len(stored)} messages, the log has {len(logged)}"
                    + (f"; the API answered {refusal}" if refusal else "")
                )
                return stored
            await asyncio.sleep(0.5)


async def _listed(widget: Api, url: str) -> tuple[list[str], str]:
    """Every message id the REST API lists, page by page; ([], its answer) if it refuses."""
    stored: list[str] = []
    after = 0
    while True:
        status, page = await _request(widget, "GET", url, params={"after": after, "limit": 100})
        if status != "200":
            return [], f"{status} {page}"
        stored += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            return stored, ""
        after = page["data"][-1]["seq"]


async def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = _now() + timeout
    while not condition():
        if _now() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
