from typing import ClassVar

import pytest

from confab.settings import (
    DatabaseSettings,
    Port,
    Settings,
    SettingsError,
    load,
    mask_url,
    names,
)


class Example(DatabaseSettings, kw_only=True, frozen=True):
    __urls__: ClassVar[dict[str, tuple[str, ...]]] = {
        **DatabaseSettings.__urls__,
        "s3_endpoint": ("http", "https"),
    }
    gateway_port: Port = 8000
    s3_endpoint: str = "http://127.0.0.1:8333"


def test_flags_win_over_environment_over_defaults() -> None:
    settings = load(
        Example,
        argv=["--gateway-port", "9000"],
        env={"CONFAB_GATEWAY_PORT": "7000", "CONFAB_STREAM_REPLICAS": "3"},
    )
    assert settings.gateway_port == 9000
    assert settings.stream_replicas == 3
    assert settings.log_level == "info"


def test_flag_with_equals_sign() -> None:
    assert load(Example, argv=["--gateway-port=9001"], env={}).gateway_port == 9001


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CONFAB_GATEWAY_PORT": "eighty"}, "CONFAB_GATEWAY_PORT"),
        ({"CONFAB_GATEWAY_PORT": "70000"}, "CONFAB_GATEWAY_PORT"),
        ({"CONFAB_NATS_URL": "nats//bad"}, "CONFAB_NATS_URL"),
        ({"CONFAB_DATABASE_URL": "mysql://db:3306/x"}, "CONFAB_DATABASE_URL"),
        ({"CONFAB_S3_ENDPOINT": "ftp://x"}, "CONFAB_S3_ENDPOINT"),
        ({"CONFAB_LOG_LEVEL": "loud"}, "CONFAB_LOG_LEVEL"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(Example, argv=[], env=env)
    assert str(caught.value).startswith(named)
    assert "\n" not in str(caught.value)


def test_a_bad_flag_names_the_flag() -> None:
    with pytest.raises(SettingsError, match=r"^--nats-url"):
        load(Settings, argv=["--nats-url", "http://x"], env={})
    with pytest.raises(SettingsError, match="unknown option --bogus"):
        load(Settings, argv=["--bogus", "1"], env={})


def test_database_password_never_shown_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        load(Example, argv=[], env={"CONFAB_DATABASE_URL": "mysql://u:hunter2@h/x"})
    assert "hunter2" not in str(caught.value)
    assert mask_url("postgresql://u:hunter2@h:5432/x") == "postgresql://u:***@h:5432/x"


def test_several_nats_servers_are_accepted() -> None:
    urls = "nats://a:4222,nats://b:4222"
    assert load(Settings, argv=[], env={"CONFAB_NATS_URL": urls}).nats_url == urls


class Service(DatabaseSettings, kw_only=True, frozen=True):
    __namespace__: ClassVar[str] = "svc"
    __shared__: ClassVar[frozenset[str]] = frozenset({"trusted_proxies"})
    port: Port = 7000
    trusted_proxies: str = ""


def test_a_service_reads_its_own_fields_in_its_namespace() -> None:
    env = {
        "CONFAB_SVC_PORT": "7001",
        "CONFAB_PORT": "1",  # another service's setting, not this one's
        "CONFAB_TRUSTED_PROXIES": "10.0.0.0/8",
        "CONFAB_DATABASE_URL": "postgresql://db:5432/x",
        "CONFAB_STREAM_REPLICAS": "3",
    }
    settings = load(Service, argv=[], env=env)
    assert settings.port == 7001 and settings.trusted_proxies == "10.0.0.0/8"
    assert settings.database_url == "postgresql://db:5432/x" and settings.stream_replicas == 3
    assert load(Service, argv=["--svc-port=7002"], env=env).port == 7002
    assert names(Service)["port"] == "svc_port" and names(Service)["nats_url"] == "nats_url"


def test_a_namespaced_setting_is_named_by_its_variable_and_flag() -> None:
    with pytest.raises(SettingsError, match=r"^CONFAB_SVC_PORT="):
        load(Service, argv=[], env={"CONFAB_SVC_PORT": "eighty"})
    with pytest.raises(SettingsError, match=r"^--svc-port="):
        load(Service, argv=["--svc-port", "eighty"], env={})
    with pytest.raises(SettingsError, match=r"unknown option --port;.*--svc-port"):
        load(Service, argv=["--port", "1"], env={})


def test_a_subclass_keeps_the_namespace() -> None:
    class Sub(Service, kw_only=True, frozen=True):
        extra: int = 0

    assert names(Sub)["port"] == "svc_port" and names(Sub)["extra"] == "svc_extra"
    assert names(Sub)["trusted_proxies"] == "trusted_proxies"


def test_settings_that_would_share_a_variable_are_refused() -> None:
    class Clash(Settings, kw_only=True, frozen=True):
        __namespace__: ClassVar[str] = "http"
        port: Port = 1  # read as http_port, which every process already has

    class Typo(Settings, kw_only=True, frozen=True):
        __namespace__: ClassVar[str] = "svc"
        __shared__: ClassVar[frozenset[str]] = frozenset({"trusted_proxy"})
        trusted_proxies: str = ""

    with pytest.raises(TypeError, match="Clash"):
        load(Clash, argv=[], env={})
    with pytest.raises(TypeError, match="trusted_proxy"):
        load(Typo, argv=[], env={})
