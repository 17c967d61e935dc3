"""Search latency over a large index: ``--messages`` (default 1,000,000) in one workspace.

Loading a million messages through the API would take most of an hour on two cores,
so the read model is filled directly: conversations, participants, messages and
their search rows (``messaging.search_messages``, the tsvector built by PostgreSQL in
the workspace's language) are inserted with ``generate_series``, in chunks, into the
stack's database. Only the loading skips the event log; every query then goes the
whole way: gateway, messaging, the index, the messages read model, rendering.

Message text is ten words drawn from a vocabulary of 5,000 with a skewed (cubic)
distribution, so some words are in most messages and most are rare, as in chat.
The timed queries mix, one at a time (latency, not throughput): a rare word, a
common word (hundreds of thousands of matches to rank), a three-letter prefix,
two words, and the widget's search for a user in 50 of the 1,000 conversations.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import asyncpg

from confab.bench.measure import Latencies, LoopLag, ProcessMeter, with_generator
from confab.bench.result import add_error, run_record
from confab.bench.sends import workspace
from confab.db import plain_url

CONVERSATIONS = 1000
MEMBER_OF = 50  # conversations the widget's user is in
VOCABULARY = 5000
WORDS = 10
CHUNK = 100_000


def vocabulary_word(i: int) -> str:
    """The i-th word (letters only: PostgreSQL's parser stems no word with digits)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ""
    n = i + 26 * 26  # at least three letters
    while n:
        n, r = divmod(n, 26)
        out += letters[r]
    return "x" + out


async def load(database_url: str, ws: str, sender: str, viewer: str, messages: int) -> float:
    """Fill the read model of workspace ``ws``; the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        words = [vocabulary_word(i) for i in range(VOCABULARY)]
        await conn.execute(
            "INSERT INTO messaging.conversations (id, workspace_id, type, title, metadata, "
            "created_by, created_at, last_seq, last_message_id, last_activity_at, stream_seq) "
            "SELECT $1 || g, $2, 'group', 'Room ' || g, '{}', NULL, now(), 0, NULL, now(), 0 "
            "FROM generate_series(1, $3) g",
            f"bconv_{ws[-8:]}_",
            ws,
            CONVERSATIONS,
        )
        await conn.execute(
            "INSERT INTO messaging.participants (conversation_id, user_id, active, "
            "last_read_seq, unread_count, joined_seq, seq) "
            "SELECT $1 || g, u, true, 0, 0, 1, 1 FROM generate_series(1, $2) g, "
            "unnest($3::text[]) u WHERE u = $4 OR g <= $5",
            f"bconv_{ws[-8:]}_",
            CONVERSATIONS,
            [sender, viewer],
            sender,
            MEMBER_OF,
        )
        text = (
            "array_to_string(ARRAY(SELECT ($3::text[])[1 + floor($4 * random() ^ 3)::int] "
            f"FROM generate_series(1, {WORDS}) WHERE g IS NOT NULL), ' ')"
        )
        for start in range(1, messages + 1, CHUNK):
            end = min(start + CHUNK - 1, messages)
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS bench_chunk (g bigint, content text); "
                "TRUNCATE bench_chunk"
            )
            await conn.execute(
                f"INSERT INTO bench_chunk SELECT g, {text} FROM generate_series($1::bigint, "
                "$2::bigint) g",
                start,
                end,
                words,
                VOCABULARY,
            )
            prefix = f"bmsg_{ws[-8:]}_"
            conv = f"'bconv_{ws[-8:]}_' || (1 + g % {CONVERSATIONS})"
            seq = f"(1 + g / {CONVERSATIONS})::int"
            at = f"now() - ({messages} - g) * interval '1 second'"
            await conn.execute(
                "INSERT INTO messaging.messages (id, conversation_id, seq, sender_id, content, "
                "metadata, attachment_ids, reply_to, client_msg_id, created_at, edited_at, "
                "deleted, hidden, version, stream_seq, message_type) "
                f"SELECT $1 || g, {conv}, {seq}, $2, content, '{{}}', '[]', NULL, NULL, {at}, "
                f"NULL, false, false, {seq}, g, 'text' FROM bench_chunk",
                prefix,
                sender,
            )
            await conn.execute(
                "INSERT INTO messaging.search_messages (message_id, workspace_id, "
                "conversation_id, sender_id, seq, stream_seq, created_at, has_attachment, "
                "content, config, tsv, gone, version) "
                f"SELECT $1 || g, $2, {conv}, $3, {seq}, g, {at}, false, content, 'simple', "
                "to_tsvector('simple', content), false, g FROM bench_chunk",
                prefix,
                ws,
                sender,
            )
        await conn.execute("ANALYZE messaging.search_messages")
        await conn.execute("ANALYZE messaging.messages")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def run(info: dict[str, Any], messages: int, queries: int) -> list[dict[str, Any]]:
    base = info["gateway_url"]
    async with aiohttp.ClientSession() as http:
        space = await workspace(http, info, "bench-search")
        key = {"X-API-Key": space["api_key"]}

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(f"{base}{path}", headers=key, json=body) as r:
                if r.status not in (200, 201):
                    raise RuntimeError(f"POST {path} answered {r.status}: {await r.text()}")
                return dict(await r.json())

        sender = (await post("/api/v1/users", {"external_id": "sender", "name": "Sender"}))["id"]
        viewer = (await post("/api/v1/users", {"external_id": "viewer", "name": "Viewer"}))["id"]
        token = (await post("/api/v1/sessions", {"user_id": viewer}))["token"]
        loaded = await load(info["database_url"], space["id"], sender, viewer, messages)
        print(f"  loaded {messages:,} messages in {loaded:.0f} s", flush=True)

        rng = random.Random(23)
        common = [vocabulary_word(i) for i in range(3)]
        middling = [vocabulary_word(i) for i in range(40, 200)]
        rare = [vocabulary_word(i) for i in range(2000, VOCABULARY)]
        kinds: dict[str, Any] = {
            "rare word": lambda: ("tenant", rng.choice(rare)),
            "common word": lambda: ("tenant", rng.choice(common)),
            "3-letter prefix": lambda: ("tenant", rng.choice(middling)[:3]),
            "two words": lambda: ("tenant", f"{rng.choice(middling)} {rng.choice(middling)}"),
            "widget, 50 of 1,000 rooms": lambda: ("widget", rng.choice(middling)),
        }
        runs = []
        for name, make in kinds.items():
            latencies, errors, hits = Latencies(), {}, 0
            meter = ProcessMeter(with_generator(info["pids"]))
            with meter, LoopLag() as lag:
                for _ in range(queries):
                    side, q = make()
                    path = "/api/v1/search" if side == "tenant" else "/api/widget/search"
                    headers = key if side == "tenant" else {"Authorization": f"Bearer {token}"}
                    t0 = time.perf_counter()
                    async with http.get(
                        f"{base}{path}", params={"q": q, "limit": 20}, headers=headers
                    ) as r:
                        body = await r.json()
                        status = r.status
                    if status == 200:
                        latencies.add(time.perf_counter() - t0)
                        hits += len(body["data"])
                    else:
                        add_error(errors, str(status))
            runs.append(
                run_record(
                    name,
                    f"{queries} searches one at a time, {messages:,} messages in one workspace",
                    unit="search",
                    work=len(latencies.values),
                    latencies=latencies,
                    meter=meter,
                    lag=lag,
                    # Every answered search counts as sent and received: nothing to lose.
                    loss={
                        "sent": len(latencies.values),
                        "received": len(latencies.values),
                        "lost": 0,
                        "duplicates": 0,
                    },
                    errors=errors,
                    hits_per_page=round(hits / max(len(latencies.values), 1), 1),
                    load_seconds=round(loaded),
                )
            )
            await asyncio.sleep(0)
        return runs
