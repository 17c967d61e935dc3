"""Fixtures of the cross-service tests: one ``confab up`` for the session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from confab_infra.mailcatcher import MailCatcher
from confab_infra.testing import TestBackends, fresh_database
from tests.pushservices import ApnsService, FcmService
from tests.stack import RunningStack, backend_flags, running_stack


@pytest.fixture(scope="session")
def mailbox() -> Iterator[MailCatcher]:
    """A real SMTP server (aiosmtpd) in this process: the session stack's notifier sends
    its mail here, and tests read what arrived."""
    catcher = MailCatcher().start()
    yield catcher
    catcher.stop()


@pytest.fixture(scope="session")
async def fcm_service() -> AsyncIterator[FcmService]:
    """A stand-in for FCM (HTTP v1 and its OAuth2 token endpoint), on loopback."""
    service = await FcmService().start()
    yield service
    await service.close()


@pytest.fixture(scope="session")
async def apns_service() -> AsyncIterator[ApnsService]:
    """A stand-in for APNs (HTTP/2, token authentication), on loopback."""
    service = await ApnsService().start()
    yield service
    await service.close()


@pytest.fixture(scope="session")
def stack(
    backends: TestBackends,
    tmp_path_factory: pytest.TempPathFactory,
    mailbox: MailCatcher,
    fcm_service: FcmService,
    apns_service: ApnsService,
) -> Iterator[RunningStack]:
    smtp = {
        "CONFAB_SMTP_HOST": mailbox.host,
        "CONFAB_SMTP_PORT": str(mailbox.port),
        "CONFAB_SMTP_SECURITY": "none",
        "CONFAB_SMTP_FROM": "notify@acme.test",
        "CONFAB_NOTIFIER_FCM_URL": fcm_service.base,
        "CONFAB_NOTIFIER_FCM_TOKEN_URL": fcm_service.token_url,
        "CONFAB_NOTIFIER_APNS_URL": apns_service.base,
    }
    with fresh_database(backends.database_url) as database_url:
        data_dir = tmp_path_factory.mktemp("stack")
        flags = backend_flags(backends, database_url)
        with running_stack(data_dir, *flags, env=smtp) as running:
            yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
