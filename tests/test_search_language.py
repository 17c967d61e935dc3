"""The search language of a workspace, on a stack of its own.

On the session's shared stack this test failed in three full CI runs out of three (and
never alone): the language change reached the live search index in none of 60 s, while
the messages posted before it were indexed. The cause was not found (a suspicion: what
an earlier test of the suite does to the search projection, a rebuild swapped in or a
messaging process killed). Here it runs on a stack nobody else touches, and prints the
projection's complaints from the stack's logs if it fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from confab_infra.testing import TestBackends, fresh_database
from tests.client import Api, new_workspace
from tests.stack import RunningStack, backend_flags, running_stack
from tests.test_messaging_api import World, send
from tests.test_search import widget_ids, word
from tests.waiting import until


@pytest.fixture(scope="module")
def own_stack(
    backends: TestBackends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    with fresh_database(backends.database_url) as database_url:
        data_dir = tmp_path_factory.mktemp("search-stack")
        with running_stack(data_dir, *backend_flags(backends, database_url)) as running:
            yield running


@pytest.fixture
async def world(own_stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, own_stack.gateway, own_stack.admin_headers)
    return World(admin, await new_workspace(admin))


def complaints(stack: RunningStack) -> str:
    lines = [
        line[:300]
        for line in stack.logs().splitlines()
        if "projection" in line and ("error" in line.lower() or "failed" in line)
    ]
    return "\n".join(lines[-20:])


async def test_search_language_stems_words(world: World, own_stack: RunningStack) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    stem = word()
    posted = await send(ann_w, cid, f"Many {stem}ies were visited")
    assert await widget_ids(ann_w, f"{stem}y") == []  # simple: no stemming
    status, body = await world.tenant.call(
        "PUT", "/api/v1/settings/search", {"language": "english"}
    )
    assert (status, body) == (200, {"language": "english"}), body
    assert (await world.tenant.get("/api/v1/settings/search")) == (200, {"language": "english"})
    # The index was rebuilt in English: "<stem>y" and "<stem>ies" share a stem now. The
    # reply waits for the re-index, but only so long (``Lookups.read_wait``, 2 s), so this
    # asks until the index has caught up, for up to 60 s.
    try:
        hits = await until(lambda: widget_ids(ann_w, f"{stem}y"), "the English index", 60)
    except AssertionError:
        raise AssertionError(complaints(own_stack)) from None
    assert hits == [posted["id"]], complaints(own_stack)
    status, body = await world.tenant.call("PUT", "/api/v1/settings/search", {"language": "xx"})
    assert status == 422, body
