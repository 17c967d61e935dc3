"""NATS credentials in URLs: split off before connecting, never shown."""

from __future__ import annotations

import pytest

from confab import bus
from confab.errors import Unavailable
from confab.settings import Settings, load


def test_credentials_are_taken_from_the_first_url_and_removed_from_every_one() -> None:
    url = "nats://gateway:s3cret@n1:4222, nats://gateway:s3cret@n2:4222,tls://n3:4222"
    servers, user, password = bus.split_credentials(url)
    assert servers == ["nats://n1:4222", "nats://n2:4222", "tls://n3:4222"]
    assert (user, password) == ("gateway", "s3cret")
    assert bus.display_url(url) == "nats://n1:4222,nats://n2:4222,tls://n3:4222"
    assert bus.split_credentials("nats://n1:4222") == (["nats://n1:4222"], "", "")


def test_each_user_has_its_own_inbox_prefix() -> None:
    assert bus.inbox_prefix("fanout") == "_INBOX.fanout"
    assert bus.inbox_prefix("") == "_INBOX"  # no user: the server has no permissions


def test_the_credential_settings_load_from_the_environment() -> None:
    env = {
        "CONFAB_NATS_URL": "tls://n1:4222",
        "CONFAB_NATS_USER": "media",
        "CONFAB_NATS_PASSWORD": "pw",
        "CONFAB_NATS_TLS_CA_FILE": "/etc/ca.crt",
    }
    settings = load(Settings, argv=[], env=env)
    assert (settings.nats_user, settings.nats_password) == ("media", "pw")
    assert settings.nats_tls_ca_file == "/etc/ca.crt"


async def test_an_unreadable_ca_file_is_one_clear_error() -> None:
    with pytest.raises(Unavailable, match="cannot use the NATS CA file /nonexistent/ca"):
        await bus.connect("tls://127.0.0.1:1", "test", tls_ca_file="/nonexistent/ca.crt")
