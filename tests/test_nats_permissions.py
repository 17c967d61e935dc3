"""NATS holds every client to its user's permissions (`confab_infra.nats_auth`).

Against the real embedded nats-server of the test backends, which requires credentials
as under `confab up`: no credentials or a wrong password is refused; each service's user
can do what the service does and is refused, by the server, what it must not: the
fanout and the gateway cannot append to a stream or change one, the gateway cannot
read users' data keys, the fanout cannot write them, and nobody reads another user's
replies. The session's `confab up` hands every service a user of its own, and keeps the
credentials readable only by its owner. The files in `deploy/` are the same table.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
import yaml
from nats.aio.client import Client as NATS

from confab import bus, personal
from confab.errors import Unavailable
from confab_infra.nats_auth import (
    PERMISSIONS,
    Credentials,
    allowed,
    deploy_config,
    helm_values,
    password_variable,
    secret_key,
)
from confab_infra.ports import free_port
from confab_infra.testing import TestBackends
from tests.stack import RunningStack, up_command
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def credentials(backends: TestBackends) -> Credentials:
    if backends.nats_credentials is None:
        pytest.skip("the NATS of these backends was not started here: its users are unknown")
    return backends.nats_credentials


class Client:
    """A connection as one user that records what the server refused it."""

    def __init__(self, nc: NATS, refused: list[str]) -> None:
        self.nc = nc
        self.refused = refused

    async def publish(self, subject: str, data: bytes = b"{}") -> None:
        await self.nc.publish(subject, data)
        await self.nc.flush()

    async def subscribe(self, subject: str) -> None:
        await self.nc.subscribe(subject)
        await self.nc.flush()

    async def was_refused(self, action: str, subject: str, timeout: float = 5.0) -> bool:
        """Whether the server refused ``action`` on ``subject`` (its -ERR may come a
        little after the PONG of a flush)."""
        wanted = f'permissions violation for {action} to "{subject.lower()}"'
        deadline = time.monotonic() + timeout
        while not any(wanted in error.lower() for error in self.refused):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


@asynccontextmanager
async def connected(backends: TestBackends, credentials: Credentials, user: str):  # type: ignore[no-untyped-def]
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc))

    servers, _, _ = bus.split_credentials(backends.nats_url)
    nc = await nats.connect(
        servers=servers,
        user=user,
        password=credentials.password(user),
        inbox_prefix=bus.inbox_prefix(user),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        yield Client(nc, refused)
    finally:
        await nc.close()


@pytest.fixture
async def admin(backends: TestBackends) -> AsyncIterator[NATS]:
    nc = await bus.connect(backends.nats_url, "test-admin")
    await bus.ensure_streams(nc.jetstream(), bus.STREAMS.values())
    await personal.ensure_bucket(nc.jetstream())
    yield nc
    await bus.close(nc)


async def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(
    backends: TestBackends, credentials: Credentials
) -> None:
    url = bus.display_url(backends.nats_url)
    with pytest.raises(Unavailable, match="refused a client without credentials"):
        await bus.connect(url, "anonymous", connect_timeout=2)
    with pytest.raises(Unavailable, match="refused user 'gateway'"):
        await bus.connect(url, "intruder", user="gateway", password="guess", connect_timeout=2)
    nc = await bus.connect(url, "gateway", user="gateway", password=credentials.password("gateway"))
    assert nc.is_connected
    await nc.close()


async def test_only_the_owner_appends_to_a_stream(
    backends: TestBackends, credentials: Credentials, admin: NATS
) -> None:
    subject = f"conv.evt.w{uuid.uuid4().hex[:8]}.c{uuid.uuid4().hex[:8]}"
    for user in ("fanout", "gateway", "identity", "media", "notifier"):
        async with connected(backends, credentials, user) as client:
            await client.publish(subject)
            await client.publish("$JS.API.STREAM.UPDATE.CONVERSATIONS")
            await client.publish("$JS.API.STREAM.DELETE.CONVERSATIONS")
            await client.publish("$JS.API.STREAM.PURGE.CONVERSATIONS")
            assert await client.was_refused("publish", subject), (user, client.refused)
            for verb in ("UPDATE", "DELETE", "PURGE"):
                assert await client.was_refused("publish", f"$JS.API.STREAM.{verb}.CONVERSATIONS")
    js = admin.jetstream()
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg("CONVERSATIONS", subject)
    # The owner does append, and the acknowledgement reaches its own inbox.
    async with connected(backends, credentials, "messaging") as messaging:
        ack = await messaging.nc.jetstream().publish(subject, b"{}", stream="CONVERSATIONS")
        assert not messaging.refused
    assert (await js.get_last_msg("CONVERSATIONS", subject)).seq == ack.seq


async def test_the_gateway_cannot_read_the_key_bucket_and_the_fanout_cannot_write_it(
    backends: TestBackends, credentials: Credentials, admin: NATS
) -> None:
    keys = f"$KV.{personal.BUCKET}"
    async with connected(backends, credentials, "gateway") as gateway:
        await gateway.subscribe(f"{keys}.>")
        await gateway.publish(f"$JS.API.DIRECT.GET.{personal.STREAM}.{keys}.w.u")
        await gateway.publish(f"$JS.API.STREAM.MSG.GET.{personal.STREAM}")
        await gateway.publish(f"$JS.API.CONSUMER.CREATE.{personal.STREAM}")
        assert await gateway.was_refused("subscription", f"{keys}.>")
        assert await gateway.was_refused(
            "publish", f"$JS.API.DIRECT.GET.{personal.STREAM}.{keys}.w.u"
        )
        assert await gateway.was_refused("publish", f"$JS.API.STREAM.MSG.GET.{personal.STREAM}")
        assert await gateway.was_refused("publish", f"$JS.API.CONSUMER.CREATE.{personal.STREAM}")
    owner = f"w{uuid.uuid4().hex[:8]}.u{uuid.uuid4().hex[:8]}"
    async with connected(backends, credentials, "fanout") as fanout:
        await fanout.publish(f"{keys}.{owner}", b"not a key")
        assert await fanout.was_refused("publish", f"{keys}.{owner}")
        fanout.refused.clear()
        # ...but reads keys, as it reveals names (the key does not exist: not found).
        ring = await personal.KeyRing(fanout.nc, fanout.nc.jetstream()).open()
        assert await ring.key(*owner.split(".")) is None
        await ring.close()
        await fanout.nc.flush()
        assert not fanout.refused
    # Identity does write them.
    async with connected(backends, credentials, "identity") as identity:
        ring = await personal.KeyRing(identity.nc, identity.nc.jetstream()).open()
        assert await ring.key(*owner.split("."), create=True) is not None
        await ring.erase(*owner.split("."))
        await ring.close()
        assert not identity.refused


async def test_replies_are_private_and_answered_only_once_asked(
    backends: TestBackends, credentials: Credentials
) -> None:
    async with (
        connected(backends, credentials, "identity") as identity,
        connected(backends, credentials, "gateway") as gateway,
        connected(backends, credentials, "fanout") as fanout,
    ):
        await gateway.subscribe("_INBOX.>")
        await gateway.subscribe("_INBOX.identity.>")
        assert await gateway.was_refused("subscription", "_INBOX.>")
        assert await gateway.was_refused("subscription", "_INBOX.identity.>")
        # A service answers on the reply subject of a request it received...
        subject = f"identity.q.permissions_{uuid.uuid4().hex[:8]}"

        async def answer(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(b"pong")

        await identity.nc.subscribe(subject, queue="identity", cb=answer)
        await identity.nc.flush()

        async def asked() -> nats.aio.msg.Msg | None:
            # On a loaded machine the server has answered "no responders" right after the
            # subscription's flush (twice in many runs), as in nats-server issue #2876.
            try:
                return await gateway.nc.request(subject, b"ping", timeout=5)
            except nats.errors.NoRespondersError:
                return None

        reply = await until(asked, "the identity user's answer to the gateway's request")
        assert reply.data == b"pong" and not identity.refused
        # ...never on an inbox it was not asked from, and the fanout sends no commands.
        await identity.publish("_INBOX.gateway.forged")
        assert await identity.was_refused("publish", "_INBOX.gateway.forged")
        await fanout.publish("identity.cmd.erase_user")
        assert await fanout.was_refused("publish", "identity.cmd.erase_user")


def test_every_user_may_read_its_own_replies_only() -> None:
    for user in PERMISSIONS:
        _, subscribe = allowed(user)
        inboxes = [s for s in subscribe if s.startswith("_INBOX")]
        assert inboxes == ([] if user == "admin" else [f"{bus.inbox_prefix(user)}.>"]), user
    assert allowed("admin") == ([">"], [">"])


def _nats_ports(data_dir: Path) -> dict[str, list[str]]:
    (ports,) = (data_dir / "nats").glob("nats-server_*.ports")
    return dict(json.loads(ports.read_text()))


def test_confab_up_gives_each_service_its_own_user_and_keeps_the_credentials_private(
    stack: RunningStack,
) -> None:
    monitor = _nats_ports(stack.data_dir)["monitoring"][0]
    with urllib.request.urlopen(f"{monitor}/connz?auth=true&limit=1000", timeout=5) as response:
        connections = json.loads(response.read())["connections"]
    users: dict[str, set[str]] = {}
    for connection in connections:
        service = str(connection.get("name", "")).partition(":")[0]
        users.setdefault(service, set()).add(connection.get("authorized_user", ""))
    for service in ("identity", "messaging", "media", "webhooks", "notifier", "fanout", "gateway"):
        assert users.get(service) == {service}, users
    for path in (stack.data_dir / "nats-credentials.json", stack.data_dir / "stack.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # stack.json carries the operator's credentials, for the confab command line.
    saved = Credentials.load(stack.data_dir / "nats-credentials.json")
    assert bus.split_credentials(stack.info["nats_url"])[1:] == ("admin", saved.password("admin"))


def test_the_deploy_files_are_the_table_and_nats_server_accepts_them() -> None:
    auth = ROOT / "deploy" / "nats" / "auth.conf"
    assert auth.read_text() == deploy_config(), (
        "deploy/nats/auth.conf is out of date: "
        "python -m confab_infra.nats_auth deploy > deploy/nats/auth.conf"
    )
    helm = ROOT / "deploy" / "k8s" / "nats-auth-values.yaml"
    assert helm.read_text() == helm_values(), (
        "deploy/k8s/nats-auth-values.yaml is out of date: "
        "python -m confab_infra.nats_auth helm > deploy/k8s/nats-auth-values.yaml"
    )
    values = yaml.safe_load(helm.read_text())
    assert values["configMap"]["merge"]["data"]["auth.conf"] == deploy_config()
    env = values["container"]["env"]
    for user in PERMISSIONS:
        ref = env[password_variable(user)]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "confab-secrets", "key": secret_key(user)}
    server = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("nats-server is not installed (make install installs it)")
    env = {password_variable(user): "secret" for user in PERMISSIONS}
    result = subprocess.run(
        [server, "-c", str(auth), "-t"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_confab_up_refuses_a_missing_credentials_file_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = subprocess.run(
        [*up_command(tmp_path / "data"), "--gateway-port", str(free_port()), "--fanout-port",
         str(free_port()), "--nats-url=nats://127.0.0.1:4222", f"--nats-credentials={missing}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"confab: cannot read NATS credentials {missing}" in result.stderr
    assert "Traceback" not in result.stderr
