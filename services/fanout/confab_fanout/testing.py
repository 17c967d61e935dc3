"""Helpers for tests against real fanout processes and real Pusher clients.

- ``FanoutNode``: ``python -m confab_fanout.app`` on a free port, its log in a file;
- ``create_app`` / ``IdentityStub``: a workspace the fanout learns from the event
  log, or one only identity's ``GetAppCredentials`` knows;
- ``AuthServer``: the tenant backend's ``/broadcasting/auth`` and ``user-auth``,
  signing with the official ``pusher`` SDK as a Laravel app would;
- ``JsDriver``: ``node driver.cjs`` hosting pusher-js and Laravel Echo clients,
  one JSON line per command and per thing they see;
- ``Balancer``: a round-robin TCP load balancer in front of several nodes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pusher
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from confab import bus, eventlog
from confab.contracts.events.identity import WorkspaceCreated, subject
from confab.contracts.identity import AppCredentials, GetAppCredentials, GetWorkspace, Workspace
from confab.errors import NotFound
from confab.ids import numeric_app_id
from confab.rpc import CallContext, RpcServer
from confab_infra.backends import free_port

JS_DIR = Path(__file__).resolve().parents[1] / "tests" / "js"

# Short timers so that pings, 4201 and presence expiry happen within a test.
FAST_TIMERS = {
    "CONFAB_FANOUT_ACTIVITY_TIMEOUT": "2",
    "CONFAB_FANOUT_PING_INTERVAL": "3",
    "CONFAB_FANOUT_PONG_TIMEOUT": "2",
}


def bucket_env(ttl: float = 5.0) -> dict[str, str]:
    """KV buckets of their own, so nodes of different tests never share cluster state."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "CONFAB_FANOUT_PRESENCE_BUCKET": f"presence_{suffix}",
        "CONFAB_FANOUT_WEBHOOKS_BUCKET": f"webhooks_{suffix}",
        "CONFAB_FANOUT_PRESENCE_TTL": str(ttl),
    }


# -- apps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestApp:
    __test__ = False

    id: str
    key: str
    secret: str

    @property
    def numeric_id(self) -> str:
        return numeric_app_id(self.id)

    def client(self, node: FanoutNode) -> pusher.Pusher:
        """The official Python server SDK, pointed at ``node``."""
        return pusher.Pusher(
            app_id=self.numeric_id,
            key=self.key,
            secret=self.secret,
            host=node.host,
            port=node.port,
            ssl=False,
            timeout=30,
            encryption_master_key_base64=MASTER_KEY,
        )


def new_test_app() -> TestApp:
    suffix = uuid.uuid4().hex[:12]
    return TestApp(f"ws_{suffix}", f"key{suffix}", f"secret-{uuid.uuid4().hex}")


async def create_app(js: JetStreamContext, app: TestApp | None = None) -> TestApp:
    """Append ``workspace.created`` to ``IDENTITY``, as identity does."""
    app = app or new_test_app()
    await bus.ensure_streams(js, [bus.IDENTITY])
    event = WorkspaceCreated(
        workspace_id=app.id,
        name=f"test {app.id}",
        app_key=app.key,
        app_secret=app.secret,
        at=datetime.now(UTC),
    )
    await eventlog.append(
        js,
        bus.IDENTITY.name,
        subject(app.id, "workspace", app.id),
        event,
        msg_id=uuid.uuid4().hex,
        workspace=app.id,
        expected_version=0,
    )
    return app


class IdentityStub:
    """Answers ``GetAppCredentials``/``GetWorkspace`` for the apps it was given."""

    def __init__(self, nc: NATS) -> None:
        self.server = RpcServer(nc, "identity")
        self.apps: dict[str, TestApp] = {}

    async def start(self) -> None:
        await self.server.serve(GetAppCredentials, self._credentials)
        await self.server.serve(GetWorkspace, self._workspace)

    async def stop(self) -> None:
        await self.server.stop()

    def add(self, app: TestApp) -> TestApp:
        self.apps[app.key] = app
        return app

    async def _credentials(self, query: GetAppCredentials, _ctx: CallContext) -> AppCredentials:
        app = self.apps.get(query.app_key or "")
        if query.workspace_id is not None:
            app = next((a for a in self.apps.values() if a.id == query.workspace_id), None)
        if app is None:
            raise NotFound("App not found.")
        return AppCredentials(workspace_id=app.id, app_key=app.key, app_secret=app.secret)

    async def _workspace(self, query: GetWorkspace, _ctx: CallContext) -> Workspace:
        for app in self.apps.values():
            if app.id == query.workspace_id:
                return Workspace(
                    id=app.id, name="test", app_key=app.key, created_at=datetime.now(UTC)
                )
        raise NotFound("Workspace not found.")


# -- fanout processes ----------------------------------------------------------------------


@dataclass
class FanoutNode:
    nats_url: str
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, key: str, query: str = "protocol=7") -> str:
        return f"ws://{self.host}:{self.port}/app/{key}?{query}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"fanout-{self.port}.log"

    def start(self) -> FanoutNode:
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "CONFAB_NATS_URL": self.nats_url,
            "CONFAB_FANOUT_HOST": self.host,
            "CONFAB_FANOUT_PORT": str(self.port),
            "CONFAB_INSTANCE": f"fanout-{self.port}",
            "CONFAB_LOG_LEVEL": "info",
            **self.env,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "confab_fanout.app"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"fanout exited early:\n{self.logs()}")
            if await asyncio.to_thread(self._healthy):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"fanout not ready within {timeout} s:\n{self.logs()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def terminate(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """``kill -9``: no goodbye to the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""


async def wait_app_known(node: FanoutNode, app: TestApp, timeout: float = 30.0) -> None:
    """Until the node answers a signed API call for the app."""
    client = app.client(node)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.to_thread(client.channels_info)
            return
        except (pusher.errors.PusherBadAuth, pusher.errors.PusherBadStatus):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# -- the tenant backend's auth endpoints --------------------------------------------------------


# The tenant's encryption master key for private-encrypted- channels (the fanout never sees it).
MASTER_KEY = base64.b64encode(b"confab-test-master-key-32-bytes!").decode()


class AuthServer:
    """``POST /auth/{key}`` (channels) and ``POST /user-auth/{key}`` (sign-in).

    Form fields besides pusher-js's own: ``user_id``/``name`` (presence member or
    signed-in user) and ``bad=1`` (return a wrong signature).
    """

    def __init__(self) -> None:
        self.apps: dict[str, TestApp] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    def add(self, app: TestApp) -> TestApp:
        self.apps[app.key] = app
        return app

    def url(self, app: TestApp) -> str:
        return f"http://127.0.0.1:{self.port}/auth/{app.key}"

    def user_url(self, app: TestApp) -> str:
        return f"http://127.0.0.1:{self.port}/user-auth/{app.key}"

    async def start(self) -> None:
        application = web.Application()
        application.add_routes(
            [web.post("/auth/{key}", self._auth), web.post("/user-auth/{key}", self._user_auth)]
        )
        self._runner = web.AppRunner(application, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _sdk(self, key: str) -> tuple[TestApp, pusher.Pusher]:
        app = self.apps[key]
        sdk = pusher.Pusher(
            app_id=app.numeric_id,
            key=app.key,
            secret=app.secret,
            encryption_master_key_base64=MASTER_KEY,
        )
        return app, sdk

    async def _auth(self, request: web.Request) -> web.Response:
        form = await request.post()
        app, sdk = self._sdk(request.match_info["key"])
        channel, socket_id = str(form["channel_name"]), str(form["socket_id"])
        custom = None
        if channel.startswith("presence-"):
            raw_id = str(form.get("user_id", "1"))
            user_id: Any = int(raw_id) if raw_id.isdigit() else raw_id  # as Laravel sends it
            custom = {"user_id": user_id, "user_info": {"name": str(form.get("name", raw_id))}}
        body = sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=custom)
        if form.get("bad") == "1":
            body["auth"] = f"{app.key}:{'0' * 64}"
        # (the SDK returns an encrypted channel's shared_secret as bytes)
        return web.json_response(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in body.items()}
        )

    async def _user_auth(self, request: web.Request) -> web.Response:
        form = await request.post()
        _, sdk = self._sdk(request.match_info["key"])
        user = {"id": str(form.get("user_id", "1")), "name": str(form.get("name", "someone"))}
        return web.json_response(sdk.authenticate_user(str(form["socket_id"]), user))


# -- pusher-js and Laravel Echo under Node --------------------------------------------------------


def node_tools() -> tuple[str, str] | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    return (node, npm) if node and npm else None


def ensure_node_modules() -> None:
    """``npm ci`` into ``tests/js`` once (across concurrent test sessions too)."""
    tools = node_tools()
    if tools is None:
        raise RuntimeError("node and npm are needed")
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    if marker.exists():
        return
    with (JS_DIR / ".npm-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return
        subprocess.run(
            [tools[1], "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )


Match = Callable[[dict[str, Any]], bool]


class JsDriver:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.records: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._read_errors()),
        ]

    @classmethod
    async def start(cls) -> JsDriver:
        tools = node_tools()
        assert tools is not None
        process = await asyncio.create_subprocess_exec(
            tools[0],
            "driver.cjs",
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        driver = cls(process)
        await driver.wait(type="ready", timeout=60)
        return driver

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.records.append(json.loads(line))
                self._changed.set()

    async def _read_errors(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.stderr.append(line.decode(errors="replace"))

    async def send(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        await self.process.stdin.drain()

    async def connect(
        self, cid: str, node: FanoutNode, app: TestApp, backend: AuthServer, **params: Any
    ) -> str:
        """A pusher-js client ``cid``; its auth requests carry ``params``. Its socket id."""
        await self.send(
            "pusher",
            id=cid,
            key=app.key,
            host=node.host,
            port=node.port,
            authEndpoint=backend.url(app),
            userAuthEndpoint=backend.user_url(app),
            params=params,
        )
        record = await self.wait(id=cid, type="state", current="connected")
        return str(record["socket_id"])

    async def connect_to(
        self,
        cid: str,
        host: str,
        port: int,
        key: str,
        *,
        auth_endpoint: str,
        user_auth_endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        echo: bool = False,
    ) -> str | None:
        """A pusher-js (or, ``echo``, Laravel Echo) client ``cid`` of any Pusher server, its
        auth requests to ``auth_endpoint`` with ``headers``; its socket id (pusher-js)."""
        await self.send(
            "echo" if echo else "pusher",
            id=cid,
            key=key,
            host=host,
            port=port,
            authEndpoint=auth_endpoint,
            userAuthEndpoint=user_auth_endpoint or auth_endpoint,
            headers=dict(headers or {}),
        )
        record = await self.wait(id=cid, type="state", current="connected")
        return str(record["socket_id"]) if record.get("socket_id") else None

    async def subscribe(self, cid: str, channel: str) -> dict[str, Any]:
        await self.send("subscribe", id=cid, channel=channel)
        return await self.wait(
            id=cid, type="event", channel=channel, event="pusher:subscription_succeeded"
        )

    def events(self, cid: str, event: str) -> list[dict[str, Any]]:
        return self.find(id=cid, type="event", event=event)

    def find(self, match: Match | None = None, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.records if _matches(r, fields) and (match is None or match(r))]

    async def wait(
        self, match: Match | None = None, *, timeout: float = 30.0, count: int = 1, **fields: Any
    ) -> dict[str, Any]:
        """The ``count``-th record with these fields (and passing ``match``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(match, **fields)
            if len(found) >= count:
                return found[count - 1]
            errors = self.find(type="driver_error")
            if errors:
                raise AssertionError(f"driver error: {errors[0]}")
            left = deadline - time.monotonic()
            if left <= 0:
                tail = "\n".join(json.dumps(r) for r in self.records[-30:])
                raise AssertionError(
                    f"no {count} record(s) with {fields} within {timeout} s; last:\n{tail}\n"
                    f"stderr: {''.join(self.stderr[-20:])}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("exit")
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        for reader in self._readers:
            reader.cancel()


class Balancer:
    """A TCP load balancer: each new connection goes to the next backend (round robin)
    that accepts it; when either side closes, so does the other (a dead node's clients
    see their socket drop and reconnect, to a live node)."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.routes: list[int] = []  # the backend port of each connection, in order
        self.host = "127.0.0.1"
        self.port = 0
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Balancer:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            for attempt in range(len(self.backends)):
                host, port = self.backends[(self._next + attempt) % len(self.backends)]
                try:
                    up_reader, up_writer = await asyncio.open_connection(host, port)
                except OSError:
                    continue
                self._next = (self._next + attempt + 1) % len(self.backends)
                self.routes.append(port)
                break
            else:
                writer.close()
                return
            pipes = [
                asyncio.create_task(_pipe(reader, up_writer)),
                asyncio.create_task(_pipe(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                for w in (writer, up_writer):
                    w.close()
        finally:
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _matches(record: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    return all(record.get(k) == v for k, v in fields.items())
