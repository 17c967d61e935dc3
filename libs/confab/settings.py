"""Settings from environment variables and command-line flags, validated at start-up.

Every field ``foo_bar`` of a settings struct is read from the flag ``--foo-bar``
or the variable ``CONFAB_FOO_BAR`` (flag wins). A bad value stops the process
with one line that names the variable, never a traceback.

``confab up`` gives every service the same environment, so a service's own settings
live in its namespace: a class with ``__namespace__ = "fanout"`` reads its field
``port`` from ``--fanout-port`` and ``CONFAB_FANOUT_PORT``. The fields every process
shares (those of ``Settings`` and ``DatabaseSettings``) and those a class names in
``__shared__`` (read by several services, or documented without the prefix) are read
without it. ``names`` is the one place that mapping is made.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

ENV_PREFIX = "CONFAB_"

T = TypeVar("T", bound="Settings")


class SettingsError(Exception):
    """A configuration value is missing or malformed; the message names it."""


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Base class: the settings every Confab process shares."""

    # Fields holding URLs, with the schemes each accepts; checked by ``load``.
    __urls__: ClassVar[dict[str, tuple[str, ...]]] = {"nats_url": ("nats", "tls", "ws", "wss")}
    # A service's settings: its name, put before the fields it declares (see above) ...
    __namespace__: ClassVar[str] = ""
    # ... except these, read under their own names.
    __shared__: ClassVar[frozenset[str]] = frozenset()

    nats_url: str = "nats://127.0.0.1:4222"
    # Who this process is on NATS: each service has a user of its own with only the
    # permissions it needs (infra/confab_infra/nats_auth.py). Empty: the credentials in
    # nats_url (nats://user:password@host:port), or none.
    nats_user: str = ""
    nats_password: str = ""
    # PEM file of the CA that signed the NATS servers' certificates, for tls:// URLs
    # (empty: the system's CAs).
    nats_tls_ca_file: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    # The event loop: uvloop (libuv, where installed: less CPU per socket operation, which
    # is most of a service's work), or Python's own.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    instance: str = ""
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    rpc_timeout: PositiveFloat = 5.0
    # How long a starting service waits for NATS and PostgreSQL to answer.
    start_timeout: PositiveFloat = 30.0
    # How often the event loop's lag is sampled for /metrics (confab.looplag), in seconds;
    # 0: not at all. Each sample wakes an idle process (about 0.1 ms of CPU here).
    loop_lag_interval: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.1
    # Serve /healthz and /metrics over HTTP on this port (0: off; the gateway and
    # fanout serve them on their own ports anyway).
    http_port: Port = 0
    http_host: str = "127.0.0.1"
    # Slow clients, on the gateway's and the fanout's listeners (confab.httpserver): a
    # request's line and headers must arrive within http_header_timeout seconds of its
    # first byte, and its body within http_body_timeout seconds plus one second per
    # http_body_min_rate bytes received (an upload that keeps flowing goes on, a trickle
    # does not); both answer 408 and close. A kept-alive connection that sends no request
    # for http_idle_timeout seconds is closed.
    http_header_timeout: PositiveFloat = 10.0
    http_body_timeout: PositiveFloat = 30.0
    http_body_min_rate: Annotated[int, msgspec.Meta(ge=1)] = 50_000
    http_idle_timeout: PositiveFloat = 60.0

    @property
    def instance_name(self) -> str:
        return self.instance or f"{socket.gethostname()}-{os.getpid()}"


class DatabaseSettings(Settings, kw_only=True, frozen=True):
    """Settings of a process that owns PostgreSQL read models."""

    __urls__: ClassVar[dict[str, tuple[str, ...]]] = {
        **Settings.__urls__,
        "database_url": ("postgresql", "postgres"),
    }

    database_url: str = "postgresql://confab:confab@127.0.0.1:5432/confab"
    database_pool_size: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10


@functools.cache
def names(cls: type[Settings]) -> dict[str, str]:
    """Each field of ``cls`` and the name its flag and variable are made of: the field's
    own, or ``<namespace>_<field>`` for a field the namespaced class declares itself."""
    common: tuple[str, ...] = ()
    for base in cls.__mro__[1:]:
        if issubclass(base, Settings) and not base.__namespace__:
            common = base.__struct_fields__
            break
    if unknown := cls.__shared__ - set(cls.__struct_fields__):
        raise TypeError(f"{cls.__name__}.__shared__ names no field {sorted(unknown)}")
    prefix = cls.__namespace__ + "_" if cls.__namespace__ else ""
    out = {
        f: f if not prefix or f in common or f in cls.__shared__ else prefix + f
        for f in cls.__struct_fields__
    }
    if len(set(out.values())) < len(out):
        raise TypeError(f"{cls.__name__}: two of its fields would be read from one variable")
    return out


def env_name(cls: type[Settings], field: str) -> str:
    """The variable ``field`` of ``cls`` is read from: ``CONFAB_FANOUT_PORT``."""
    return ENV_PREFIX + names(cls)[field].upper()


def flag_name(cls: type[Settings], field: str) -> str:
    """The flag ``field`` of ``cls`` is read from: ``--fanout-port``."""
    return "--" + names(cls)[field].replace("_", "-")


def check_url(value: str, schemes: tuple[str, ...]) -> None:
    """Raise ValueError unless every comma-separated URL has a known scheme and a host."""
    for url in value.split(","):
        try:
            parts = urlsplit(url.strip())
            valid = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
        except ValueError as exc:
            raise ValueError(f"{mask_url(url)!r} is not a valid URL ({exc})") from None
        if not valid:
            raise ValueError(
                f"{mask_url(url)!r} is not a valid URL; expected {schemes[0]}://host:port"
            )


def mask_url(url: str) -> str:
    """The URL with any password replaced, so it can be printed or logged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url


def load(
    cls: type[T],
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> T:
    """Build ``cls`` from overrides, flags, environment, then defaults; raise SettingsError."""
    env = os.environ if env is None else env
    flags = _parse_flags(cls, sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        name = field.name
        if name in overrides:
            raw: Any = overrides[name]
        elif name in flags:
            raw = flags[name]
        elif env_name(cls, name) in env:
            raw = env[env_name(cls, name)]
        else:
            continue
        try:
            values[name] = msgspec.convert(raw, field.type, strict=False)
        except msgspec.ValidationError as exc:
            shown = mask_url(raw) if name.endswith("_url") and isinstance(raw, str) else raw
            raise SettingsError(f"{_source(cls, name, flags)}={shown!r}: {_plain(exc)}") from None
    settings = cls(**values)
    for name, schemes in cls.__urls__.items():
        value = getattr(settings, name)
        if value:
            try:
                check_url(value, schemes)
            except ValueError as exc:
                raise SettingsError(f"{_source(cls, name, flags)}: {exc}") from None
    return settings


def _source(cls: type[Settings], name: str, flags: Mapping[str, str]) -> str:
    return flag_name(cls, name) if name in flags else env_name(cls, name)


def _plain(exc: msgspec.ValidationError) -> str:
    text = str(exc).split(" - at ")[0]
    return text.replace("`", "")


def _parse_flags(cls: type[Settings], argv: Sequence[str]) -> dict[str, str]:
    known = {flag_name(cls, f): f for f in cls.__struct_fields__}
    out: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        key, sep, value = arg.partition("=")
        if key not in known:
            raise SettingsError(f"unknown option {key}; known options: {', '.join(sorted(known))}")
        if not sep:
            if i + 1 >= len(args):
                raise SettingsError(f"option {key} needs a value")
            i += 1
            value = args[i]
        out[known[key]] = value
        i += 1
    return out
