"""The deployment files in deploy/, checked against the code.

They cannot run here (no Docker engine, no Kubernetes), so every file is parsed and
cross-checked instead: each CONFAB_* variable is a setting of the service it is given
to and loads with the value given, each command is that service's console script, each
probe and published port is one the service listens on, and the NATS cluster is three
JetStream nodes that the real nats-server accepts. A renamed setting, script or port
then fails here rather than in someone's deployment.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from confab.settings import DatabaseSettings, Settings, env_name, load, names
from confab_fanout.settings import FanoutSettings
from confab_gateway.settings import GatewaySettings
from confab_identity.settings import IdentitySettings
from confab_infra.nats_auth import PERMISSIONS, ROUTE_USER, password_variable
from confab_media.settings import MediaSettings
from confab_messaging.settings import MessagingSettings
from confab_notifier.settings import NotifierSettings
from confab_webhooks.settings import WebhooksSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NATS_CONF = DEPLOY / "nats" / "nats.conf"

SETTINGS: dict[str, type[Settings]] = {
    "gateway": GatewaySettings,
    "identity": IdentitySettings,
    "messaging": MessagingSettings,
    "media": MediaSettings,
    "fanout": FanoutSettings,
    "webhooks": WebhooksSettings,
    "notifier": NotifierSettings,
}
SERVICES = tuple(SETTINGS)
HEALTH_PATHS = {"/healthz", "/metrics"}  # confab.service.health_routes
OUTBOUND = {"smtp_host", "smtp_port"}  # hosts and ports a service connects to, not listens on
SECRET = "confab-secrets"


# -- reading the files ---------------------------------------------------------------------


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuations joined

    def all(self, name: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == name]

    def one(self, name: str) -> str:
        found = self.all(name)
        assert len(found) == 1, f"{self.path.name}: expected one {name}, found {len(found)}"
        return found[0]

    @property
    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"{self.path.name}: ENV {item!r} is not KEY=value"
                out[key] = value
        return out

    @property
    def cmd(self) -> list[str]:
        return exec_form(self.one("CMD"), self.path)

    @property
    def exposed(self) -> set[int]:
        return {int(port.split("/")[0]) for args in self.all("EXPOSE") for port in args.split()}

    @property
    def healthcheck(self) -> list[str]:
        args = self.one("HEALTHCHECK")
        _, _, command = args.partition("CMD ")
        return exec_form(command, self.path)


INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def exec_form(args: str, path: Path) -> list[str]:
    """CMD/HEALTHCHECK in exec form (a JSON array): no shell between the runtime and us."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"{path.name}: {args!r} is not in exec form"
    )
    return value


def parse_dockerfile(path: Path) -> Dockerfile:
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instr, _, args = full.partition(" ")
        assert instr.upper() == instr and instr in INSTRUCTIONS, (
            f"{path.name}: unknown instruction {instr!r}"
        )
        instructions.append((instr, args.strip()))
    assert not pending, f"{path.name}: ends inside a continued line"
    assert instructions and instructions[0][0] == "FROM", f"{path.name}: must start with FROM"
    return Dockerfile(path, instructions)


def yaml_documents(path: Path) -> list[Any]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?]([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default (empty without one)."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value)


def pyproject(service: str) -> dict[str, Any]:
    return tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())


def console_script(service: str) -> str:
    """The service's one console script, which must run ``confab_<service>.app:main``."""
    scripts = pyproject(service)["project"]["scripts"]
    names = [n for n, target in scripts.items() if target == f"confab_{service}.app:main"]
    assert len(names) == 1, f"services/{service}/pyproject.toml: {scripts}"
    return names[0]


def image_tag(service: str) -> str:
    return f"confab-{service}:{pyproject(service)['project']['version']}"


# -- checking a service's environment ----------------------------------------------------------


@dataclass
class ServiceEnv:
    """The environment one container of ``service`` gets, and where each variable is from."""

    service: str
    values: dict[str, str]  # resolvable values (the image's ENV overlaid by the file's)
    secret_names: set[str] = field(default_factory=set)  # values from a Secret, unknown here

    @property
    def names(self) -> set[str]:
        return set(self.values) | self.secret_names

    def check(self, where: str) -> Settings:
        """Every CONFAB_* variable is a setting of this service, and the values load."""
        cls = SETTINGS[self.service]
        variables = {f: env_name(cls, f) for f in cls.__struct_fields__}
        unknown = {n for n in self.names if n.startswith("CONFAB_")} - set(variables.values())
        assert not unknown, f"{where}: {self.service} has no settings {sorted(unknown)}"
        confab = {k: v for k, v in self.values.items() if k.startswith("CONFAB_")}
        settings = load(cls, argv=[], env=confab)
        for name, variable in variables.items():
            value = getattr(settings, name)
            if variable.endswith("_HOST") and name not in OUTBOUND:
                assert value == "0.0.0.0", f"{where}: {variable}={value} (unreachable)"
        return settings


def listen_ports(settings: Settings) -> set[int]:
    """The ports the service listens on: its own (gateway, fanout) and the health port."""
    cls = type(settings)
    ports = {
        getattr(settings, f)
        for f in cls.__struct_fields__
        if env_name(cls, f).endswith("_PORT") and f not in OUTBOUND
    }
    return {p for p in ports if p}


def needs_database(service: str) -> bool:
    return issubclass(SETTINGS[service], DatabaseSettings)


def url_hosts(value: str) -> list[tuple[str, int | None]]:
    return [(p.hostname or "", p.port) for p in map(urlsplit, value.split(","))]


def test_a_variable_two_services_read_is_one_shared_setting() -> None:
    """Every service gets the same environment (``confab up``, the compose file): a
    variable read by two services is a shared setting of one name in both, never one
    service's own setting (``CONFAB_FANOUT_WS_URL`` is the gateway's ``fanout_ws_url``;
    a fanout field ``ws_url`` would read it too)."""
    readers: dict[str, set[tuple[str, str, bool]]] = {}
    for service, cls in SETTINGS.items():
        for field_name, read_as in names(cls).items():
            shared = read_as == field_name
            readers.setdefault(env_name(cls, field_name), set()).add((service, field_name, shared))
    for variable, by in readers.items():
        if len(by) > 1:
            assert all(shared for _, _, shared in by), f"{variable}: {sorted(by)}"
            assert len({field_name for _, field_name, _ in by}) == 1, f"{variable}: {sorted(by)}"


# -- Dockerfiles -------------------------------------------------------------------------------


def dockerfile(service: str) -> Dockerfile:
    return parse_dockerfile(DEPLOY / "docker" / f"{service}.Dockerfile")


def lock_python_version() -> str:
    found = re.search(r"--python-version\s+(\S+)", (ROOT / "Makefile").read_text())
    assert found, "the Makefile's lock target names no --python-version"
    return found.group(1)


def test_there_is_one_dockerfile_per_service_and_no_other() -> None:
    names = {p.name for p in (DEPLOY / "docker").iterdir()}
    assert names == {f"{s}.Dockerfile" for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_installs_the_lock_and_the_service_and_runs_its_script(service: str) -> None:
    image = dockerfile(service)
    base = image.one("FROM")
    assert base.startswith(f"python:{lock_python_version()}-"), (
        f"{base}: the lock is resolved for Python {lock_python_version()}"
    )
    for args in image.all("COPY"):
        *sources, _target = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), f"{image.path.name}: COPY {source}: no such path"
    runs = image.all("RUN")
    assert "pip install --require-hashes -r requirements.lock" in runs
    assert f"pip install --no-deps ./libs ./services/{service}" in runs
    assert image.cmd == [console_script(service)]
    assert image.one("USER").split(":")[0] != "0", "the service must not run as root"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_environment_ports_and_healthcheck_match_the_settings(service: str) -> None:
    image = dockerfile(service)
    settings = ServiceEnv(service, image.env).check(image.path.name)
    assert image.exposed == listen_ports(settings)
    check = " ".join(image.healthcheck)
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", check)
    assert url, f"{image.path.name}: HEALTHCHECK requests no local URL: {check}"
    assert int(url.group(1)) == settings.http_port and url.group(2) == "/healthz"


# -- docker-compose.yml --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (document,) = yaml_documents(DEPLOY / "docker-compose.yml")
    return document


def compose_env(compose: Mapping[str, Any], service: str) -> ServiceEnv:
    spec = compose["services"][service]
    raw = spec.get("environment") or {}
    assert isinstance(raw, dict), f"compose {service}: environment must be a mapping"
    values = {**dockerfile(service).env, **{k: interpolate(str(v)) for k, v in raw.items()}}
    return ServiceEnv(service, values)


def nats_nodes(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if str(spec.get("image", "")).startswith("nats:")
    }


def nats_conf() -> str:
    return NATS_CONF.read_text()


def conf_value(text: str, key: str) -> str:
    found = re.findall(rf"^\s*{key}:\s*(\S+)\s*$", text, re.MULTILINE)
    assert found, f"{NATS_CONF.name}: no {key}"
    return found[0]


@pytest.mark.parametrize("service", SERVICES)
def test_compose_runs_each_service_from_its_dockerfile_with_its_settings(
    compose: dict[str, Any], service: str
) -> None:
    spec = compose["services"][service]
    build = spec["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert build["dockerfile"] == f"deploy/docker/{service}.Dockerfile"
    assert spec["image"] == image_tag(service)
    assert spec.get("command", dockerfile(service).cmd) == [console_script(service)]
    env = compose_env(compose, service)
    settings = env.check(f"compose {service}")
    published = {int(str(p).rsplit(":", 1)[1]) for p in spec.get("ports", [])}
    assert published <= listen_ports(settings) - {settings.http_port}
    for dependency in spec.get("depends_on", {}):
        assert dependency in compose["services"], f"compose {service}: needs {dependency}"
    # Backends by the names compose gives them, on the ports they listen on.
    nodes = nats_nodes(compose)
    port = int(conf_value(nats_conf(), "port"))
    assert url_hosts(env.values["CONFAB_NATS_URL"]) == [(n, port) for n in sorted(nodes)]
    if needs_database(service):
        assert isinstance(settings, DatabaseSettings)
        assert url_hosts(settings.database_url) == [("postgres", 5432)]
        assert "postgres" in spec["depends_on"]
    if isinstance(settings, MediaSettings):
        assert url_hosts(settings.s3_endpoint) == [("minio", 9000)]
        minio = compose["services"]["minio"]["environment"]
        assert settings.s3_access_key == interpolate(minio["MINIO_ROOT_USER"])
        assert settings.s3_secret_key == interpolate(minio["MINIO_ROOT_PASSWORD"])


def test_compose_has_a_three_node_jetstream_cluster_and_three_replicas(
    compose: dict[str, Any],
) -> None:
    nodes = nats_nodes(compose)
    assert len(nodes) == 3
    conf = nats_conf()
    cluster_port = re.search(r"cluster\s*\{[^}]*?\bport:\s*(\d+)", conf, re.DOTALL)
    assert cluster_port and "jetstream {" in conf
    variables = re.search(r"routes:\s*\[([^\]]*)\]", conf)
    assert variables, f"{NATS_CONF.name}: no routes"
    mounted = f"./{NATS_CONF.relative_to(DEPLOY)}"
    names = set()
    for name, spec in nodes.items():
        env = nats_node_env(spec)
        routes = {urlsplit(env[v.lstrip("$")]) for v in variables.group(1).split()}
        assert {(r.hostname, str(r.port)) for r in routes} == {
            (n, cluster_port.group(1)) for n in nodes
        }
        assert all(r.username == "route" and r.password for r in routes), routes
        assert spec["command"] == ["--config", "/etc/nats/confab.conf"]
        assert f"{mounted}:/etc/nats/confab.conf:ro" in spec["volumes"]
        assert "./nats/auth.conf:/etc/nats/auth.conf:ro" in spec["volumes"]
        assert any(v.endswith(":/data") for v in spec["volumes"]), f"{name}: no JetStream volume"
        names.add(spec["environment"]["NATS_SERVER_NAME"])
    assert names == set(nodes), "JetStream needs a unique server name per node"
    for service in SERVICES:
        settings = compose_env(compose, service).check(f"compose {service}")
        assert settings.stream_replicas == len(nodes)


def nats_server() -> str | None:
    return shutil.which("nats-server", path=str(Path(sys.executable).parent))


def nats_node_env(spec: Mapping[str, Any], secret: str = "s3cret") -> dict[str, str]:
    """A node's environment with every required variable (``${VAR:?...}``) set to
    ``secret``: the passwords that deploy/.env holds."""
    required = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}")
    return {k: interpolate(required.sub(secret, str(v))) for k, v in spec["environment"].items()}


def test_compose_gives_each_service_its_own_nats_user_and_every_password_to_nats(
    compose: dict[str, Any],
) -> None:
    for service in SERVICES:
        env = compose["services"][service]["environment"]
        assert env["CONFAB_NATS_USER"] == service
        assert env["CONFAB_NATS_PASSWORD"].startswith(f"${{{password_variable(service)}:?")
    for name, spec in nats_nodes(compose).items():
        for user in (*PERMISSIONS, ROUTE_USER):
            variable = password_variable(user)
            assert spec["environment"][variable].startswith(f"${{{variable}:?"), (name, user)


def test_nats_server_accepts_the_cluster_configuration(compose: dict[str, Any]) -> None:
    server = nats_server()
    if server is None:
        pytest.skip("nats-server is not installed (make install installs it)")
    for spec in nats_nodes(compose).values():
        result = subprocess.run(
            [server, "-c", str(NATS_CONF), "-t"],
            env=nats_node_env(spec),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "is valid" in result.stderr + result.stdout


# -- Kubernetes ----------------------------------------------------------------------------------


def k8s_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml_documents(path):
            if "kind" in doc:
                yield path, doc


def k8s_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_objects() if d["kind"] == kind}


def container(service: str) -> dict[str, Any]:
    deployment = k8s_kind("Deployment")[service]
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def k8s_env(service: str) -> ServiceEnv:
    spec = container(service)
    values = dict(dockerfile(service).env)
    configmaps = k8s_kind("ConfigMap")
    for source in spec.get("envFrom", []):
        values.update(configmaps[source["configMapRef"]["name"]]["data"])
    env = ServiceEnv(service, values)
    for item in spec.get("env", []):
        if "value" in item:
            values[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET, f"k8s {service}: {item['name']} from {ref['name']}"
            env.secret_names.add(item["name"])
    return env


def container_ports(spec: Mapping[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in spec["ports"]}


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = yaml_documents(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    manifests = {p.name for p, _ in k8s_objects() if p.name != "kustomization.yaml"}
    assert listed == manifests
    assert set(k8s_kind("Deployment")) == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_runs_the_service_with_its_settings_and_probes(service: str) -> None:
    spec = container(service)
    assert spec["image"] == image_tag(service)
    assert spec.get("command", dockerfile(service).cmd) == [console_script(service)]
    env = k8s_env(service)
    settings = env.check(f"k8s {service}")
    if needs_database(service):
        assert "CONFAB_DATABASE_URL" in env.secret_names
    ports = container_ports(spec)
    assert set(ports.values()) == listen_ports(settings)
    assert ports["health"] == settings.http_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = spec[probe]["httpGet"]
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == settings.http_port, f"k8s {service} {probe}: port {get['port']}"
        assert get["path"] in HEALTH_PATHS
    assert spec["readinessProbe"]["httpGet"]["path"] == "/healthz"
    requests = spec["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests), f"k8s {service}: resource requests"
    assert "memory" in spec["resources"]["limits"]


def test_k8s_services_and_ingress_reach_named_container_ports() -> None:
    deployments = k8s_kind("Deployment")
    services = k8s_kind("Service")
    assert set(services) == {"gateway", "fanout"}  # the two that take outside traffic
    for name, service in services.items():
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [d["metadata"]["name"] for d in selected] == [name]
        ports = container_ports(container(name))
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"]
    for ingress in k8s_kind("Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                names = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in names


def test_k8s_nats_values_make_a_three_node_jetstream_cluster() -> None:
    (values,) = yaml_documents(K8S / "nats-values.yaml")
    cluster, jetstream = values["config"]["cluster"], values["config"]["jetstream"]
    assert cluster["enabled"] and jetstream["enabled"] and jetstream["fileStore"]["enabled"]
    (common,) = k8s_kind("ConfigMap").values()
    assert int(common["data"]["CONFAB_STREAM_REPLICAS"]) == cluster["replicas"] == 3


def test_readme_names_every_secret_key_and_scales_every_service() -> None:
    readme = (DEPLOY / "README.md").read_text()
    keys = {
        item["valueFrom"]["secretKeyRef"]["key"]
        for service in SERVICES
        for item in container(service).get("env", [])
        if "valueFrom" in item
    }
    for key in keys:
        assert f"--from-literal={key}=" in readme, f"deploy/README.md: secret key {key}"
    scaling = readme.split("## Scaling", 1)[1]
    for service in SERVICES:
        assert f"**{service}**" in scaling, f"deploy/README.md: no scaling note for {service}"


# Work that may wait (deliveries, notifications): its nice value counts only inside its own
# container's cgroup, so the deployment gives it a lower CPU weight than the real-time path.
BACKGROUND = {"webhooks", "notifier"}
REAL_TIME = {"gateway", "messaging", "fanout"}


def millicores(cpu: str | int | float) -> float:
    text = str(cpu)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def test_work_that_may_wait_weighs_less_than_the_real_time_path(compose: dict[str, Any]) -> None:
    shares = {s: compose["services"][s].get("cpu_shares", 1024) for s in SERVICES}
    requests = {s: millicores(container(s)["resources"]["requests"]["cpu"]) for s in SERVICES}
    for service in BACKGROUND:
        assert shares[service] * 4 <= min(shares[s] for s in REAL_TIME), service
        assert requests[service] * 4 <= min(requests[s] for s in REAL_TIME), service
        assert "cpu" not in container(service)["resources"].get("limits", {}), service
    readme = (DEPLOY / "README.md").read_text()
    assert "### CPU priority" in readme.split("## Scaling", 1)[1]


# -- what an image installs: the runtime lock, and nothing for tests or benchmarks ---------------

RUNTIME_LOCK = "requirements.lock"
DEV_LOCK = "requirements-dev.lock"
# Test, browser, fuzzing and plotting tools: a service image that carries one of these
# ships what it never runs.
DEV_ONLY = {"pytest", "playwright", "schemathesis", "matplotlib", "numpy"}
OWN_PACKAGES = {"confab", "confab-infra", *(f"confab-{s}" for s in SERVICES)}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path) -> dict[str, str]:
    """{distribution: version} of a lock made by ``uv pip compile`` (one ``name==v`` a line)."""
    pins = {}
    for line in path.read_text().splitlines():
        if found := _PIN.match(line):
            pins[canonical(found.group(1))] = found.group(2)
    assert pins, f"{path.name}: no pinned packages"
    return pins


def requirement_name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert found, requirement
    return canonical(found.group(0))


def runtime_requirements(service: str) -> set[str]:
    """The third-party packages the service and the shared library declare they need."""
    needs = set()
    for path in (ROOT / "libs" / "pyproject.toml", ROOT / "services" / service / "pyproject.toml"):
        for requirement in tomllib.loads(path.read_text())["project"]["dependencies"]:
            needs.add(requirement_name(requirement))
    return needs - OWN_PACKAGES


def image_installs(image: Dockerfile) -> dict[str, str]:
    """Every third-party package the image installs, resolved from the locks it installs.

    Each ``pip install`` must either install a copied lock with hashes checked, or our own
    packages with ``--no-deps``: nothing is installed by name, so the locks are the whole list.
    """
    copied = {source for args in image.all("COPY") for source in shlex.split(args)[:-1]}
    installed: dict[str, str] = {}
    for run in image.all("RUN"):
        if "pip install" not in run:
            continue
        words = shlex.split(run)
        if "--no-deps" in words:
            paths = words[words.index("install") + 1 :]
            assert all(p.startswith("./") or p == "--no-deps" for p in paths), (
                f"{image.path.name}: {run!r} installs something by name"
            )
            continue
        assert "--require-hashes" in words, f"{image.path.name}: {run!r} checks no hashes"
        locks = [words[i + 1] for i, w in enumerate(words) if w == "-r"]
        assert locks and len(words) == words.index("install") + 2 + 2 * len(locks), (
            f"{image.path.name}: {run!r} installs more than locks"
        )
        for lock in locks:
            assert lock in copied, f"{image.path.name}: installs {lock} without copying it"
            installed.update(lock_pins(ROOT / lock))
    return installed


@pytest.mark.parametrize("service", SERVICES)
def test_image_installs_the_runtime_lock_only(service: str) -> None:
    installed = image_installs(dockerfile(service))
    carried = sorted(DEV_ONLY & set(installed))
    assert not carried, (
        f"{service}.Dockerfile installs development tools {carried}: images install "
        f"{RUNTIME_LOCK} only, and `make lock` keeps test and benchmark packages out of it"
    )
    missing = sorted(runtime_requirements(service) - set(installed))
    assert not missing, f"{service}.Dockerfile: {missing} are needed but not in the lock"


def test_the_dev_lock_pins_the_runtime_lock_as_it_is_and_adds_the_tools() -> None:
    runtime, dev = lock_pins(ROOT / RUNTIME_LOCK), lock_pins(ROOT / DEV_LOCK)
    changed = {name: (v, dev.get(name)) for name, v in runtime.items() if dev.get(name) != v}
    assert not changed, f"{DEV_LOCK} pins these differently from {RUNTIME_LOCK}: {changed}"
    assert set(dev) >= DEV_ONLY, f"{DEV_LOCK} lacks {sorted(DEV_ONLY - set(dev))}"
    assert not DEV_ONLY & set(runtime), f"{RUNTIME_LOCK}: {sorted(DEV_ONLY & set(runtime))}"
    makefile = (ROOT / "Makefile").read_text()
    assert f"pip sync --quiet --compile-bytecode --python $(BIN)/python {DEV_LOCK}" in makefile


PACKAGES = ["confab", *(f"confab_{s}" for s in SERVICES)]

IMPORT_ALL = """
import importlib, importlib.machinery, json, pkgutil, sys
allowed = set(json.loads(sys.argv[1]))
class RuntimeOnly(importlib.machinery.PathFinder):
    # Finds on sys.path only what the image has: anything else is absent, as there.
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in allowed and not top.startswith("_sysconfigdata"):
            return None
        return super().find_spec(name, path, target)
finders = sys.meta_path
sys.meta_path = [RuntimeOnly if f is importlib.machinery.PathFinder else f for f in finders]
failed = []
for package in json.loads(sys.argv[2]):
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        parts = module.name.split(".")
        if "tests" in parts or parts[-1] == "testing":
            continue
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            failed.append(f"{module.name}: {exc}")
print("\\n".join(failed))
"""


def top_level_modules(distribution: str) -> set[str]:
    """The importable top-level names an installed distribution provides."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    names = set()
    for file in files:
        first = file.parts[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__"):
            continue
        names.add(first.split(".")[0] if "." in first else first)
    return names


def test_every_runtime_module_imports_with_the_runtime_lock_alone() -> None:
    """Each module of the shared library and the services (test helpers aside) imports with
    nothing but the standard library and the runtime lock: test, benchmark and backend
    packages (pytest, matplotlib, confab_infra, ...) are imported only where they are used."""
    allowed = set(sys.stdlib_module_names) | set(PACKAGES)
    for name in lock_pins(ROOT / RUNTIME_LOCK):
        allowed |= top_level_modules(name)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, json.dumps(sorted(allowed)), json.dumps(PACKAGES)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT / "deploy",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", "imports outside the runtime lock:\n" + done.stdout
