"""TLS to NATS as deploy/ sets it up: certificates from `deploy/nats/make-certs.sh`, the
TLS configuration of the compose nodes (`deploy/nats/nats-tls.conf`) accepted by the real
nats-server, and a service connecting over TLS with the CA file setting while a client
that does not trust the CA is refused. The compose and Kubernetes TLS variants give every
service the TLS URL and the CA file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from confab import bus
from confab.errors import Unavailable
from confab_infra.nats_auth import PERMISSIONS, ROUTE_USER, password_variable
from confab_infra.ports import free_port, wait_tcp

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SERVICES = ("identity", "messaging", "media", "webhooks", "notifier", "fanout", "gateway")
PASSWORDS = {password_variable(user): f"pw-{user}" for user in (*PERMISSIONS, ROUTE_USER)}


def nats_server() -> str:
    server = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("nats-server is not installed (make install installs it)")
    return server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("tls") / "certs"
    subprocess.run(
        ["sh", str(DEPLOY / "nats" / "make-certs.sh"), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (out.stat().st_mode & 0o777) == 0o700
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    return out


def test_nats_server_accepts_the_compose_tls_configuration(certs: Path, tmp_path: Path) -> None:
    # The files as the compose nodes mount them, certificates where the config says.
    nats = DEPLOY / "nats"
    shutil.copy(nats / "nats.conf", tmp_path / "confab.conf")
    shutil.copy(nats / "auth.conf", tmp_path / "auth.conf")
    tls = (nats / "nats-tls.conf").read_text().replace("/etc/nats-certs", str(certs))
    (tmp_path / "tls.conf").write_text(tls)
    routes = {f"NATS_ROUTE_{i}": f"nats://route:pw@nats-{i}:6222" for i in (1, 2, 3)}
    result = subprocess.run(
        [nats_server(), "-c", str(tmp_path / "tls.conf"), "-t"],
        env={**PASSWORDS, **routes, "NATS_SERVER_NAME": "nats-1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def tls_server(certs: Path, tmp_path: Path) -> Iterator[str]:
    """nats-server with the users of deploy/nats/auth.conf, TLS required."""
    port = free_port()
    shutil.copy(DEPLOY / "nats" / "auth.conf", tmp_path / "auth.conf")
    (tmp_path / "server.conf").write_text(
        f"port: {port}\nhost: 127.0.0.1\ninclude ./auth.conf\n"
        f'tls {{ cert_file: "{certs / "server.crt"}", key_file: "{certs / "server.key"}" }}\n'
    )
    process = subprocess.Popen(
        [nats_server(), "-c", str(tmp_path / "server.conf")],
        env=PASSWORDS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_tcp("127.0.0.1", port, 10), "nats-server did not listen"
        yield f"tls://localhost:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def test_a_service_connects_over_tls_with_the_ca_and_untrusting_clients_fail(
    tls_server: str, certs: Path
) -> None:
    password = PASSWORDS[password_variable("gateway")]
    nc = await bus.connect(
        tls_server, "gateway", user="gateway", password=password, tls_ca_file=str(certs / "ca.crt")
    )
    try:
        assert nc.is_connected and nc.connected_url is not None
        assert nc.connected_url.scheme == "tls"
        await nc.flush(timeout=5)  # a round trip over TLS
    finally:
        await nc.close()
    started = time.monotonic()
    with pytest.raises(Unavailable):  # the system's CAs do not know ours
        await bus.connect(
            tls_server, "gateway", user="gateway", password=password, connect_timeout=2
        )
    assert time.monotonic() - started < 10
    with pytest.raises(Unavailable, match="CA file"):
        await bus.connect(tls_server, "x", tls_ca_file=str(certs / "missing.crt"))


def _compose(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return document


def test_the_compose_tls_override_gives_every_service_tls_and_the_ca() -> None:
    base, tls = _compose("docker-compose.yml"), _compose("docker-compose.tls.yml")
    for service in SERVICES:
        env = tls["services"][service]["environment"]
        urls = env["CONFAB_NATS_URL"].split(",")
        plain = base["services"][service]["environment"]["CONFAB_NATS_URL"].split(",")
        assert urls == [u.replace("nats://", "tls://") for u in plain]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in tls["services"][service]["volumes"]}
        assert mounts[env["CONFAB_NATS_TLS_CA_FILE"]] == "./nats/certs/ca.crt"
    for name, spec in base["services"].items():
        if str(spec.get("image", "")).startswith("nats:"):
            node = tls["services"][name]
            assert node["command"] == ["--config", "/etc/nats/tls.conf"]
            assert "./nats/nats-tls.conf:/etc/nats/tls.conf:ro" in node["volumes"]


def test_the_kubernetes_tls_overlay_gives_every_service_tls_and_the_ca() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization cannot be rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s-tls")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    objects = [d for d in yaml.safe_load_all(out) if d]
    (common,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert common["data"]["CONFAB_NATS_URL"] == "tls://nats:4222"
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        ca = Path(env["CONFAB_NATS_TLS_CA_FILE"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = {v["name"]: v for v in pod["volumes"]}[mounts[str(ca.parent)]]
        assert volume["secret"]["secretName"] == "nats-ca", name
        assert env["CONFAB_NATS_USER"] == name
