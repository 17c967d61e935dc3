"""Fixtures for every test directory: real backends, see `confab_infra.testing`.

`backends` starts (or finds) NATS, PostgreSQL and S3 once per session, and only when a
test asks for it; `CONFAB_TEST_BACKENDS` = embedded (default) | containers | external.
"""

from collections.abc import AsyncIterator, Iterator

import pytest

from confab_fanout.testing import JsDriver, ensure_node_modules, node_tools
from confab_infra.backends import BackendError
from confab_infra.testing import BackendsUnavailable, TestBackends, fresh_database, open_backends


@pytest.fixture(scope="session")
def backends() -> Iterator[TestBackends]:
    try:
        with open_backends() as found:
            yield found
    except BackendsUnavailable as exc:
        pytest.skip(str(exc))
    except BackendError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def fresh_database_url(backends: TestBackends) -> Iterator[str]:
    """A new empty database on the session's server, dropped after the test."""
    with fresh_database(backends.database_url) as url:
        yield url


@pytest.fixture(scope="session")
def js_clients() -> None:
    """pusher-js and Laravel Echo under Node, installed from npm once per session."""
    if node_tools() is None:
        pytest.skip("node and npm are not installed: the pusher-js tests need them")
    ensure_node_modules()


@pytest.fixture
async def driver(js_clients: None) -> AsyncIterator[JsDriver]:
    """A Node process running pusher-js clients on the test's behalf."""
    js = await JsDriver.start()
    yield js
    await js.close()
