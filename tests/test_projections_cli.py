"""``confab projections status | rebuild | verify`` against the running stack: a rebuild under
live traffic loses nothing and fails no request; verify finds a row changed by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import asyncpg
import pytest

from confab.db import plain_url
from tests.client import Api
from tests.ops import Chat, confab, target, wait_caught_up
from tests.stack import CONFAB, RunningStack


@pytest.fixture
def admin(stack: RunningStack, http: aiohttp.ClientSession) -> Api:
    return Api(http, stack.gateway, stack.admin_headers)


def test_status_shows_each_projections_checkpoint_lag_and_rate(stack: RunningStack) -> None:
    shown = confab("projections", "status", *target(stack), "--json", "--sample", "0.2")
    assert shown.returncode == 0, shown.stderr
    rows = {
        r["projection"]: r for r in json.loads(shown.stdout) if not r["schema"].endswith("_rebuild")
    }
    assert {"identity", "messaging.users", "messaging.conversations"} <= set(rows)
    conversations = rows["messaging.conversations"]
    assert conversations["stream"] == "CONVERSATIONS" and conversations["schema"] == "messaging"
    assert 0 <= conversations["checkpoint"] <= conversations["last_seq"]
    assert conversations["lag"] >= 0 and conversations["rate"] is not None
    # The stack runs one copy of messaging: it holds all of the conversations' partitions.
    assert (conversations["partitions"], conversations["held"]) == (16, [16])
    assert (rows["identity"]["partitions"], rows["identity"]["held"]) == (1, [1])
    table = confab("projections", "status", *target(stack), "--sample", "0")
    assert table.returncode == 0, table.stderr
    assert "CHECKPOINT" in table.stdout and "messaging.conversations" in table.stdout
    assert "16 of 16" in table.stdout


async def test_verify_finds_a_row_changed_by_hand_and_a_rebuild_repairs_it(
    stack: RunningStack, admin: Api
) -> None:
    chat = await Chat.create(admin, "Tampered")
    ann, bob = await chat.user("Ann"), await chat.user("Bob")
    cid = await chat.conversation(ann, bob)
    message = await chat.send(ann, cid, "the original words")
    await wait_caught_up(stack)
    clean = confab("projections", "verify", "messaging", *target(stack))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "identical" in clean.stdout

    db = await asyncpg.connect(plain_url(stack.info["database_url"]))
    try:
        changed = await db.execute(
            "UPDATE messaging.messages SET content = 'forged' WHERE id = $1", message["id"]
        )
        assert changed == "UPDATE 1"
    finally:
        await db.close()
    found = confab("projections", "verify", "messaging", *target(stack))
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"messaging.messages id={message['id']}: differs" in found.stdout
    assert 'content: live "forged" != from the log "the original words"' in found.stdout
    assert "1 row(s) differ" in found.stdout
    report = confab("projections", "verify", "messaging", *target(stack), "--json")
    assert report.returncode == 1
    body = json.loads(report.stdout)
    assert body["identical"] is False
    assert [(d["table"], d["key"], d["kind"], d["columns"]) for d in body["differences"]] == [
        ("messaging.messages", {"id": message["id"]}, "changed", ["content"])
    ]

    # Replay without swapping, then run again: it resumes from its own checkpoints and swaps.
    partial = confab("projections", "rebuild", "messaging", *target(stack), "--no-swap")
    assert partial.returncode == 0, partial.stderr
    assert "Not swapped" in partial.stdout
    resumed = confab("projections", "rebuild", "messaging", *target(stack), "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["swapped"] is True and result["checkpoints"]["messaging.conversations"] > 0
    repaired = confab("projections", "verify", "messaging", *target(stack))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    status, page = await chat.widgets[bob["id"]].get(f"/api/widget/conversations/{cid}/messages")
    assert status == 200 and [m["content"] for m in page["data"]] == ["the original words"]


async def test_rebuild_under_live_traffic_loses_nothing_and_fails_no_request(
    stack: RunningStack, admin: Api
) -> None:
    chat = await Chat.create(admin, "Busy")
    users = [await chat.user(f"U{i}") for i in range(4)]
    rooms = [await chat.conversation(users[i], users[(i + 1) % 4]) for i in range(4)]
    sent: dict[str, list[str]] = {room: [] for room in rooms}
    failures: list[Any] = []
    requests = 0
    stop = asyncio.Event()
    goal = float("inf")  # requests to reach after the swap
    reached = asyncio.Event()

    async def writer(i: int) -> None:
        nonlocal requests
        room, user = rooms[i], users[i]
        widget = chat.widgets[user["id"]]
        n = 0
        while not stop.is_set():
            n += 1
            status, body = await widget.post(
                f"/api/widget/conversations/{room}/messages", {"content": f"{i}-{n}"}
            )
            requests += 1
            if requests >= goal:
                reached.set()
            if status != 201:
                failures.append((status, body))
            else:
                sent[room].append(body["id"])
            # Read what was just written (the gateway passes min_seq): list and page.
            for path in ("/api/widget/conversations", f"/api/widget/conversations/{room}/messages"):
                status, body = await widget.get(path)
                requests += 1
                if status != 200:
                    failures.append((status, body))

    load = [asyncio.create_task(writer(i)) for i in range(4)]
    try:
        rebuild = await asyncio.create_subprocess_exec(
            CONFAB,
            "projections",
            "rebuild",
            "messaging",
            *target(stack),
            "--batch-size",
            "50",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(rebuild.communicate(), 240)
        assert rebuild.returncode == 0, err.decode()
        assert "Swapped messaging_rebuild in as messaging" in out.decode()
        goal = requests + 40  # and some traffic after the swap
        await asyncio.wait_for(reached.wait(), 120)
    finally:
        stop.set()
        await asyncio.gather(*load)
    assert not failures, failures[:5]
    assert requests > 100
    # Plain lines, not a bar, when stderr is not a terminal.
    assert "\r" not in err.decode() and "events/s" not in err.decode()
    assert "events" in err.decode()

    for room, ids in sent.items():
        reader = chat.widgets[users[rooms.index(room)]["id"]]
        seen: list[str] = []
        after = 0
        while True:
            status, page = await reader.get(
                f"/api/widget/conversations/{room}/messages", params={"after": after, "limit": 100}
            )
            assert status == 200, page
            seen += [m["id"] for m in page["data"]]
            if not page["has_more"]:
                break
            after = page["data"][-1]["seq"]
        assert seen == ids
    await wait_caught_up(stack)
    verified = confab("projections", "verify", "messaging", *target(stack))
    assert verified.returncode == 0, verified.stdout + verified.stderr
