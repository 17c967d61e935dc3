"""``confab up``: the whole platform on one machine, supervised.

Starts the embedded backends that were not given by URL, then each service as
its own process; waits until the gateway reports every service healthy, writes
``<data-dir>/stack.json`` and prints ``confab: ready``. A service that dies is
reported and restarted; SIGINT/SIGTERM stops services gracefully, then backends.

``--cluster`` runs the distributed topology on this machine, so it is tested rather
than assumed: a 3-node NATS cluster (streams at R3), two copies of every service, and
the gateways and fanouts behind HAProxy on the usual ports.

Supervision (see ``confab_infra.process``): every child, service or backend, dies with
this process however it dies (SIGKILL from the kernel when we die, on Linux); the data
directory is leased for as long as we run, so a second ``confab up`` on it says in one
line what runs there and how to stop it, and a start after one that died takes over
what it left. The gateway and fanout ports are held from the start (``ports.reserve``),
so no backend picking a free port is ever given one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confab.bus import display_url, split_credentials
from confab.cli import demo
from confab.cli.demo import dashboard_url
from confab.errors import ConfabError
from confab.settings import check_url, mask_url

SERVICES = ("identity", "messaging", "media", "webhooks", "notifier", "fanout", "gateway")
CLUSTER_NODES = 3  # NATS servers: a majority survives one loss
CLUSTER_COPIES = 2  # processes of each service
CLUSTER_START_RETRIES = 3
READY_TIMEOUT = 90.0
NATS_CREDENTIALS = "nats-credentials.json"  # in the data dir: every NATS user's password
STOP_TIMEOUT = 20.0


class UpError(Exception):
    """Start-up failed; the message is one line for the operator."""


def add_parser(commands: Any) -> None:
    p = commands.add_parser("up", help="run the whole platform on this machine")
    env = os.environ.get
    p.add_argument(
        "--data-dir",
        default=env("CONFAB_DATA_DIR", ".confab"),
        type=Path,
        help="all state: JetStream store, database, objects (default .confab)",
    )
    p.add_argument("--gateway-port", type=int, default=int(env("CONFAB_GATEWAY_PORT", "8000")))
    p.add_argument("--fanout-port", type=int, default=int(env("CONFAB_FANOUT_PORT", "6001")))
    p.add_argument(
        "--host",
        default=env("CONFAB_HOST", "127.0.0.1"),
        help="address the gateway and fanout listen on",
    )
    p.add_argument("--nats-url", default=env("CONFAB_NATS_URL"), help="use this NATS server")
    p.add_argument(
        "--nats-credentials",
        default=env("CONFAB_NATS_CREDENTIALS"),
        type=Path,
        help="with --nats-url: a credentials file like the one confab up keeps for its own "
        f"NATS ({NATS_CREDENTIALS}), so each service connects as its own user",
    )
    p.add_argument(
        "--database-url", default=env("CONFAB_DATABASE_URL"), help="use this PostgreSQL database"
    )
    p.add_argument("--s3-endpoint", default=env("CONFAB_S3_ENDPOINT"), help="use this S3 endpoint")
    p.add_argument("--s3-access-key", default=env("CONFAB_S3_ACCESS_KEY"))
    p.add_argument("--s3-secret-key", default=env("CONFAB_S3_SECRET_KEY"))
    p.add_argument("--s3-bucket", default=env("CONFAB_S3_BUCKET", "confab"))
    p.add_argument("--s3-region", default=env("CONFAB_S3_REGION", "us-east-1"))
    p.add_argument(
        "--admin-token",
        default=env("CONFAB_ADMIN_TOKEN"),
        help="admin API token (default: generated once, kept in the data dir)",
    )
    p.add_argument(
        "--no-demo",
        action="store_true",
        default=env("CONFAB_NO_DEMO", "") not in ("", "0"),
        help="do not create the demo workspace (e.g. to import an export into empty streams)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        default=env("CONFAB_CLUSTER", "") not in ("", "0"),
        help=f"{CLUSTER_NODES} NATS nodes (streams at R{CLUSTER_NODES}), {CLUSTER_COPIES} copies "
        "of each service, gateways and fanouts behind HAProxy",
    )
    p.set_defaults(run=run)


@dataclass
class Child:
    name: str  # "gateway", or "gateway-2" with --cluster
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None
    log_file: Any = None
    on_start: Callable[[str, int], None] | None = None  # records the pid in the lease

    def start(self) -> None:
        from confab_infra.process import spawn

        if self.log_file is None:
            self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        self.process = spawn(
            self.command,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self.on_start is not None:
            self.on_start(self.name, self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def service(self) -> str:
        return self.name.partition("-")[0]

    def stop(self) -> None:
        """SIGTERM and wait (a graceful drain), SIGKILL after STOP_TIMEOUT."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Stack:
    args: argparse.Namespace
    data_dir: Path
    backends: list[Any] = field(default_factory=list)
    nats_credentials: Any = None  # confab_infra.nats_auth.Credentials, if we know them
    balancer: Any = None  # HAProxy, with --cluster
    ready_urls: list[str] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    lease: Any = None  # confab_infra.process.DataDirLease, held while we run
    mail_catcher: Any = None  # confab_infra.mailcatcher.MailCatcher, without CONFAB_SMTP_HOST

    # -- start ----------------------------------------------------------------

    def start_backends(self) -> dict[str, str]:
        from confab_infra.backends import (
            BackendError,
            EmbeddedNats,
            EmbeddedNatsCluster,
            EmbeddedPostgres,
            EmbeddedS3,
            reserve,
        )

        a = self.args
        try:  # held from now on: no backend picking a free port can be given them
            reserve("gateway", a.host, a.gateway_port)
            reserve("fanout", a.host, a.fanout_port)
        except BackendError as exc:
            raise UpError(str(exc)) from None
        urls: dict[str, str] = {}
        jobs: dict[str, Any] = {}
        if a.nats_url:
            _check("--nats-url", a.nats_url, ("nats", "tls"))
            urls["nats_url"] = a.nats_url
            if a.nats_credentials:
                self.nats_credentials = _nats_credentials(Path(a.nats_credentials), create=False)
        else:
            # Our own NATS requires a user: generated passwords, kept in the data dir.
            login = self.nats_credentials = _nats_credentials(self.data_dir / NATS_CREDENTIALS)
            if a.cluster:
                jobs["nats_url"] = EmbeddedNatsCluster(
                    self.data_dir, CLUSTER_NODES, credentials=login
                )
            else:
                jobs["nats_url"] = EmbeddedNats(self.data_dir, credentials=login)
        if a.database_url:
            _check("--database-url", a.database_url, ("postgresql", "postgres"))
            urls["database_url"] = a.database_url
        else:
            jobs["database_url"] = EmbeddedPostgres(self.data_dir)
        if a.s3_endpoint:
            _check("--s3-endpoint", a.s3_endpoint, ("http", "https"))
            if not (a.s3_access_key and a.s3_secret_key):
                raise UpError("--s3-endpoint needs --s3-access-key and --s3-secret-key")
            urls.update(
                s3_endpoint=a.s3_endpoint,
                s3_access_key=a.s3_access_key,
                s3_secret_key=a.s3_secret_key,
            )
        else:
            jobs["s3"] = EmbeddedS3(self.data_dir, bucket=a.s3_bucket)
        self.backends = list(jobs.values())
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = {key: pool.submit(backend.start) for key, backend in jobs.items()}
            errors = []
            for key, future in futures.items():
                try:
                    result = future.result()
                except BackendError as exc:
                    errors.append(str(exc))
                    continue
                if key == "s3":
                    urls.update(
                        s3_endpoint=result.endpoint,
                        s3_access_key=result.access_key,
                        s3_secret_key=result.secret_key,
                    )
                else:
                    urls[key] = result
        if errors:
            raise UpError("; ".join(errors))
        return urls

    def admin_token(self) -> str:
        if self.args.admin_token:
            return str(self.args.admin_token)
        path = self.data_dir / "admin_token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def start_services(self, urls: dict[str, str]) -> None:
        a = self.args
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "CONFAB_NATS_URL": urls["nats_url"],
            "CONFAB_DATABASE_URL": urls["database_url"],
            "CONFAB_S3_ENDPOINT": urls["s3_endpoint"],
            "CONFAB_S3_ACCESS_KEY": urls["s3_access_key"],
            "CONFAB_S3_SECRET_KEY": urls["s3_secret_key"],
            "CONFAB_S3_BUCKET": a.s3_bucket,
            "CONFAB_S3_REGION": a.s3_region,
            "CONFAB_ADMIN_TOKEN": self.admin_token(),
            "CONFAB_GATEWAY_HOST": a.host,
            "CONFAB_GATEWAY_PORT": str(a.gateway_port),
            "CONFAB_FANOUT_HOST": a.host,
            "CONFAB_FANOUT_PORT": str(a.fanout_port),
            "CONFAB_FANOUT_WS_URL": f"ws://{a.host}:{a.fanout_port}",
        }
        # On one machine every endpoint is local: a tenant's webhooks may reach loopback and
        # private addresses (a platform serving tenants leaves this off).
        env.setdefault("CONFAB_WEBHOOKS_ALLOW_PRIVATE", "1")
        env.setdefault("CONFAB_NOTIFIER_ALLOW_PRIVATE", "1")
        env.setdefault("CONFAB_NOTIFIER_PUBLIC_URL", f"http://{a.host}:{a.gateway_port}")
        env.update(self.start_mail_catcher(env))
        if a.cluster:
            env.setdefault("CONFAB_STREAM_REPLICAS", str(CLUSTER_NODES))
            # HAProxy on loopback says who the client is (X-Forwarded-For).
            env.setdefault("CONFAB_TRUSTED_PROXIES", "127.0.0.1")
            self._start_copies(env, logs)
        else:
            for name in SERVICES:
                self._start_child(name, name, env, logs)
            self.ready_urls = [f"http://{a.host}:{a.gateway_port}/healthz"]
        self.info = {
            "gateway_url": f"http://{a.host}:{a.gateway_port}",
            "fanout_ws_url": f"ws://{a.host}:{a.fanout_port}",
            "fanout_http_url": f"http://{a.host}:{a.fanout_port}",
            # The operator's (admin) credentials, for the confab command line.
            "nats_url": self.nats_url_as(urls["nats_url"], "admin"),
            "database_url": urls["database_url"],
            "s3_endpoint": urls["s3_endpoint"],
            "s3_bucket": a.s3_bucket,
            "admin_token": env["CONFAB_ADMIN_TOKEN"],
            "demo": None,
        }
        if self.mail_catcher is not None:
            self.info["mail"] = {
                "smtp": f"{self.mail_catcher.host}:{self.mail_catcher.port}",
                "dir": str(self.mail_catcher.directory),
                "page": f"http://{a.host}:{a.gateway_port}/dev/mail",
            }
        if self.balancer is not None:
            self.info["cluster"] = {
                "nats_urls": urls["nats_url"].split(","),
                "stream_replicas": int(env["CONFAB_STREAM_REPLICAS"]),
                "gateway_urls": [
                    f"http://{host}:{port}" for host, port in self.balancer.frontends[0].servers
                ],
                "fanout_urls": [
                    f"http://{host}:{port}" for host, port in self.balancer.frontends[1].servers
                ],
            }

    def start_mail_catcher(self, env: dict[str, str]) -> dict[str, str]:
        """Without a mail server of the operator's (``CONFAB_SMTP_HOST``), the notifier's
        mail goes to a local catcher: ``<data-dir>/mail/*.eml`` and ``/dev/mail``."""
        if env.get("CONFAB_SMTP_HOST"):
            return {}
        from confab_infra.mailcatcher import MailCatcher

        folder = self.data_dir / "mail"
        self.mail_catcher = MailCatcher(folder, self.args.host).start()
        return {
            "CONFAB_SMTP_HOST": self.mail_catcher.host,
            "CONFAB_SMTP_PORT": str(self.mail_catcher.port),
            "CONFAB_SMTP_SECURITY": "none",
            "CONFAB_GATEWAY_DEV_MAIL_DIR": str(folder.resolve()),
        }

    def nats_url_as(self, url: str, user: str) -> str:
        """``url`` with ``user``'s credentials, if we hold them."""
        return self.nats_credentials.url(url, user) if self.nats_credentials else url

    def _nats_env(self, service: str) -> dict[str, str]:
        """The service connects as its own NATS user (``confab_infra.nats_auth``)."""
        if self.nats_credentials is None:
            return {}  # a given --nats-url: CONFAB_NATS_USER/PASSWORD, or those in the URL
        try:
            return dict(self.nats_credentials.environment(service))
        except ValueError as exc:
            raise UpError(str(exc)) from None

    def _start_child(self, name: str, service: str, env: dict[str, str], logs: Path) -> None:
        command = [sys.executable, "-m", f"confab_{service}.app"]
        env = {**env, **self._nats_env(service)}
        if service == "gateway" and (key := _demo_api_key(self.data_dir)):
            env = {**env, "CONFAB_DEMO_API_KEY": key}  # the demo page's rooms
        on_start = self.lease.child_started if self.lease is not None else None
        child = Child(name, command, env, logs / f"{name}.log", on_start=on_start)
        child.start()
        self.children[name] = child

    def _start_copies(self, env: dict[str, str], logs: Path) -> None:
        """Every service twice; the gateways and fanouts on ports of their own behind HAProxy."""
        from confab_infra.backends import BackendError, Frontend, HAProxy, free_port

        a = self.args
        public = {"gateway": a.gateway_port, "fanout": a.fanout_port}
        servers: dict[str, list[tuple[str, int]]] = {"gateway": [], "fanout": []}
        for service in SERVICES:
            for i in range(1, CLUSTER_COPIES + 1):
                name = f"{service}-{i}"
                copy_env = {**env, "CONFAB_INSTANCE": name}
                if service in servers:
                    port = free_port(a.host)
                    copy_env[f"CONFAB_{service.upper()}_PORT"] = str(port)
                    servers[service].append((a.host, port))
                self._start_child(name, service, copy_env, logs)
        self.balancer = HAProxy(
            self.data_dir,
            [Frontend(s, a.host, public[s], tuple(servers[s])) for s in ("gateway", "fanout")],
        )
        try:
            self.balancer.start()
        except BackendError as exc:
            raise UpError(str(exc)) from None
        # Every gateway copy answers, and the platform answers through the balancer.
        self.ready_urls = [f"http://{h}:{p}/healthz" for h, p in servers["gateway"]]
        self.ready_urls += [f"http://{h}:{p}/healthz" for h, p in servers["fanout"]]
        self.ready_urls.append(f"http://{a.host}:{a.gateway_port}/healthz")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not self.stopping.is_set():
            for child in self.children.values():
                code = child.process.poll() if child.process else None
                if code is None:
                    continue
                why = f"{child.name} exited with code {code} while starting: " + _last_line(
                    child.log_path
                )
                # With --cluster, copies racing to create replicated streams can lose (NATS
                # answers "no response from stream" while a new stream elects its leader):
                # start such a copy again, a few times, as an orchestrator would.
                if self.balancer is None or len(child.crashes) >= CLUSTER_START_RETRIES:
                    raise UpError(why)
                child.crashes.append(time.monotonic())
                print(f"confab: {why}; starting it again", file=sys.stderr, flush=True)
                child.start()
            if all(_healthy(url) for url in self.ready_urls):
                return
            time.sleep(0.25)
        raise UpError(
            f"the platform was not healthy after {READY_TIMEOUT:.0f} s; "
            f"see the logs in {self.data_dir / 'logs'}"
        )

    def give_gateway_demo_key(self, key: str) -> None:
        """The demo workspace was created after the gateways started: restart them with its
        key, one at a time (with --cluster the other keeps serving behind the balancer)."""
        for gateway in self.children.values():
            if gateway.service != "gateway" or gateway.env.get("CONFAB_DEMO_API_KEY") == key:
                continue
            gateway.env = {**gateway.env, "CONFAB_DEMO_API_KEY": key}
            gateway.stop()
            gateway.start()
            self.wait_ready()

    def write_stack_json(self) -> None:
        self.info["pids"] = {name: child.pid for name, child in self.children.items()}
        from confab_infra.backends import EmbeddedNatsCluster

        backend_pids: dict[str, int] = {}
        for backend in self.backends:
            if isinstance(backend, EmbeddedNatsCluster):
                backend_pids.update(backend.pids)
            elif backend.pid is not None:
                backend_pids[backend.name.lower()] = backend.pid
        if self.balancer is not None and self.balancer.pid is not None:
            backend_pids["haproxy"] = self.balancer.pid
        self.info["backend_pids"] = backend_pids
        path = self.data_dir / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    # -- run and stop ---------------------------------------------------------------

    def supervise(self) -> None:
        """Restart any service that exits, backing off if it keeps crashing."""
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for child in self.children.values():
                if child.restart_at is None:
                    code = child.process.poll() if child.process else 0
                    if code is None:
                        continue
                    child.crashes = [t for t in child.crashes if t > now - 60] + [now]
                    delay = min(0.25 * 2 ** (len(child.crashes) - 1), 4.0)
                    print(
                        f"confab: {child.name} exited with code {code}; "
                        f"restarting in {delay:.2g} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    child.restart_at = now + delay
                elif now >= child.restart_at:
                    child.restart_at = None
                    child.start()
                    self.write_stack_json()
                    print(f"confab: {child.name} restarted (pid {child.pid})", flush=True)

    def stop(self) -> None:
        self.stopping.set()
        if self.balancer is not None:
            self.balancer.stop()
        # The gateway first, so no new requests arrive while services drain.
        order = ["gateway", "fanout", "notifier", "webhooks", "media", "messaging", "identity"]
        for child in sorted(self.children.values(), key=lambda c: order.index(c.service)):
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.children.values():
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        for backend in reversed(self.backends):
            backend.stop()
        if self.mail_catcher is not None:
            self.mail_catcher.stop()


def _check(flag: str, url: str, schemes: tuple[str, ...]) -> None:
    try:
        check_url(url, schemes)
    except ValueError as exc:
        raise UpError(f"{flag}: {exc}") from None


def _nats_credentials(path: Path, *, create: bool = True) -> Any:
    from confab_infra.nats_auth import Credentials

    try:
        return Credentials.load_or_create(path) if create else Credentials.load(path)
    except ValueError as exc:
        raise UpError(str(exc)) from None


def _demo_api_key(data_dir: Path) -> str:
    """The demo workspace's API key, when an earlier start created it (``demo.json``)."""
    try:
        return str(json.loads((data_dir / "demo.json").read_text()).get("api_key") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:500] if lines else "(no output)"


def banner(info: dict[str, Any], data_dir: Path) -> str:
    cluster = info.get("cluster")
    nats_login = (
        " (admin login in the stack file)" if split_credentials(info["nats_url"])[1] else ""
    )
    rows = [
        ("gateway", info["gateway_url"] + (" (HAProxy)" if cluster else "")),
        ("fanout (Pusher WebSocket)", info["fanout_ws_url"] + (" (HAProxy)" if cluster else "")),
        ("health", info["gateway_url"] + "/healthz"),
        ("NATS", display_url(info["nats_url"]) + nats_login),
        ("PostgreSQL", mask_url(info["database_url"])),
        ("S3", info["s3_endpoint"]),
        ("state and logs", str(data_dir)),
        ("stack file", str(data_dir / "stack.json")),
    ]
    if mail := info.get("mail"):
        rows.append(("mail (caught, not sent)", f"{mail['page']} and {mail['dir']}/*.eml"))
    if cluster:
        rows += [
            ("stream replicas", str(cluster["stream_replicas"])),
            ("gateway copies", " ".join(cluster["gateway_urls"])),
            ("fanout copies", " ".join(cluster["fanout_urls"])),
        ]
    demo = info.get("demo")
    if demo:
        rows += [
            ("demo page", info["gateway_url"] + "/demo"),
            ("demo workspace", demo["workspace_id"]),
            ("demo API key", demo["api_key"]),
            ("demo app key", demo["app_key"]),
            ("dashboard", dashboard_url(info["gateway_url"], demo["workspace_id"])),
        ]
        owner = demo.get("owner") or {}
        if owner:
            rows.append(("dashboard login", f"{owner['email']} / {owner['password']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(["Confab is running.", *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


def run(args: argparse.Namespace) -> int:
    try:
        from confab_infra.process import DataDirLease, StackInUse
    except ImportError:  # a service image: it has the command line, not the backends
        print(
            "confab: confab up needs the confab-infra package (the embedded backends and "
            "process supervision); `make install` installs it",
            file=sys.stderr,
        )
        return 1

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lease = DataDirLease(data_dir)
    try:
        lease.acquire(
            gateway=f"http://{args.host}:{args.gateway_port}",
            fanout=f"ws://{args.host}:{args.fanout_port}",
        )
    except StackInUse as exc:
        print(f"confab: {exc}", file=sys.stderr, flush=True)
        return 1
    (data_dir / "stack.json").unlink(missing_ok=True)  # an earlier run's, no longer true
    stack = Stack(args, data_dir, lease=lease)

    def on_signal(_signum: int, _frame: Any) -> None:
        stack.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        urls = stack.start_backends()
        stack.start_services(urls)
        stack.wait_ready()
        if stack.stopping.is_set():
            return 0
        try:
            if not args.no_demo:
                stack.info["demo"] = demo.ensure_demo_workspace(stack.info, data_dir)
        except ConfabError as exc:
            raise UpError(f"could not create the demo workspace: {exc.message}") from None
        if stack.info["demo"]:
            stack.give_gateway_demo_key(stack.info["demo"]["api_key"])
            if stack.stopping.is_set():
                return 0
        stack.write_stack_json()
        print(banner(stack.info, data_dir), flush=True)
        print("confab: ready", flush=True)
        stack.supervise()
        print("confab: stopping", flush=True)
        return 0
    except UpError as exc:
        print(f"confab: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
        lease.release()
        print("confab: stopped", flush=True)
