"""Message search: a full-text index kept as a projection of ``CONVERSATIONS``.

``SearchProjection`` ("messaging.search", in schema ``messaging``, so
``confab projections rebuild|verify messaging`` rebuild and check it with the
rest of the read model) keeps one row per visible message with its
``tsvector``, built with the workspace's text-search language
(``search.settings_changed``, default ``simple``). It has one partition, so a
language change and the messages around it are applied in stream order: the
change re-indexes the workspace's rows in the same transaction, and a replay
gives the same rows however the stream is cut into batches.

What the index never holds, so no search can show it:

- a deleted message (its row is removed), a hidden one (flagged ``gone``
  until restored);
- an erased user's messages: ``UsersProjection`` removes their rows when it
  blanks their messages (``remove_erased``), under the same lock this
  projection's batches share; a later batch reveals their posts blank
  (the key is gone), and rows of users the read model has erased are skipped.

Deletions and moderation settle this projection too before their call returns
(``handlers.Lookups.settle``), so nothing gone is found once the call is done.

Queries (``Searcher``) turn the user's words into a prefix ``tsquery`` (words
only: no operator of the query syntax reaches PostgreSQL), rank the newest
``CANDIDATES`` matches by ``ts_rank_cd`` and page through them by (rank, stream
sequence): ranking every match of a word found in most messages would cost
seconds at a million messages, so a very common query is answered from the
recent past (a rarer word or a second one narrows it). Snippets come from
``ts_headline`` with control characters as marks, then are HTML-escaped and the
marks replaced by ``<mark>``: safe to put in a page as they are.
"""

from __future__ import annotations

import base64
import html
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import TSVECTOR, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.bus import CONVERSATIONS
from confab.contracts.events.messaging import (
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
)
from confab.contracts.events.moderation import SearchSettingsChanged
from confab.contracts.search import SearchHit, SearchMessages, SearchResults
from confab.errors import Forbidden, InvalidRequest
from confab.events import Envelope
from confab.personal import KeyRing
from confab.projection import Projection
from confab.rpc import CallContext
from confab.shell import Route
from confab_messaging.handlers import valid
from confab_messaging.queries import Queries
from confab_messaging.store import ERASURE_LOCK, SCHEMA, MessagePage

DEFAULT_LANGUAGE = "simple"
MAX_TERMS = 8
MAX_TERM_LENGTH = 64
CANDIDATES = 5000  # the newest matches ranked (and paged through)
TSQUERY = "to_tsquery(CAST(:config AS regconfig), :expr)"
PREFIX_MIN = 2  # shorter words are matched whole: a one-letter prefix matches everything
START, STOP = "\x02", "\x03"  # ts_headline's marks; stripped from the content first
HEADLINE_OPTIONS = (
    f"StartSel={START}, StopSel={STOP}, MaxWords=24, MinWords=8, MaxFragments=2, "
    'FragmentDelimiter=" … "'
)


@dataclass(frozen=True)
class SearchTables:
    messages: sa.Table
    settings: sa.Table


def define_search_tables(metadata: sa.MetaData) -> SearchTables:
    ts = sa.DateTime(timezone=True)
    messages = sa.Table(
        "search_messages",
        metadata,
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("sender_id", sa.Text, nullable=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),  # where it was posted
        sa.Column("created_at", ts, nullable=False),
        sa.Column("has_attachment", sa.Boolean, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),  # the text-search configuration
        sa.Column("tsv", TSVECTOR, nullable=False),
        sa.Column("gone", sa.Boolean, nullable=False),  # hidden by a moderator
        sa.Column("version", sa.BigInteger, nullable=False),  # stream seq of the last change
        sa.Index("search_messages_tsv", "tsv", postgresql_using="gin"),
        sa.Index("search_messages_workspace", "workspace_id", "stream_seq"),
        sa.Index("search_messages_sender", "sender_id"),
    )
    settings = sa.Table(
        "search_settings",
        metadata,
        sa.Column("workspace_id", sa.Text, primary_key=True),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
    )
    return SearchTables(messages, settings)


SEARCH_METADATA = sa.MetaData(schema=SCHEMA)
SEARCH_TABLES = define_search_tables(SEARCH_METADATA)


# The columns of a ``search_messages`` row as the projection writes them (``tsv`` is
# computed from ``config`` and ``content``), with their PostgreSQL types.
_ROW_TYPES = (
    ("message_id", "text"),
    ("workspace_id", "text"),
    ("conversation_id", "text"),
    ("sender_id", "text"),
    ("seq", "integer"),
    ("stream_seq", "bigint"),
    ("created_at", "timestamptz"),
    ("has_attachment", "boolean"),
    ("content", "text"),
    ("config", "text"),
    ("gone", "boolean"),
    ("version", "bigint"),
)


def _q(schema: str | None, table: str) -> str:
    return f'"{schema}"."{table}"' if schema else f'"{table}"'


# -- the projection ----------------------------------------------------------------------------


class SearchProjection(Projection):
    stream = CONVERSATIONS.name
    subjects = CONVERSATIONS.subjects
    partitions = 1  # a language change is applied in order with the messages around it

    def __init__(
        self, name: str = "messaging.search", schema: str = SCHEMA, keys: KeyRing | None = None
    ) -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=schema)
        self.tables = define_search_tables(self.metadata)
        self.keys = keys
        self.users = sa.table(
            "users", sa.column("id", sa.Text), sa.column("erased", sa.Boolean), schema=schema
        )
        table = _q(schema, "search_messages")
        # Every row of a batch in one statement: each column bound as one array.
        columns = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _ROW_TYPES)
        names = ", ".join(name for name, _ in _ROW_TYPES)
        self._upsert = sa.text(
            f"INSERT INTO {table} (message_id, workspace_id, conversation_id, sender_id, seq, "
            "stream_seq, created_at, has_attachment, content, config, tsv, gone, version) "
            "SELECT message_id, workspace_id, conversation_id, sender_id, seq, stream_seq, "
            "created_at, has_attachment, content, config, "
            "to_tsvector(CAST(config AS regconfig), content), gone, version "
            f"FROM unnest({columns}) AS r({names}) "
            "ON CONFLICT (message_id) DO UPDATE SET content = excluded.content, "
            "config = excluded.config, tsv = excluded.tsv, gone = excluded.gone, "
            f"version = excluded.version WHERE {table}.version < excluded.version"
        )
        self._reindex = sa.text(
            f"UPDATE {table} SET config = CAST(:language AS text), "
            "tsv = to_tsvector(CAST(CAST(:language AS text) AS regconfig), content) "
            "WHERE workspace_id = :workspace_id AND config <> CAST(:language AS text)"
        )
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        if self.keys is not None:
            events = await self.keys.reveal_all(events)
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(ERASURE_LOCK)))
        t = self.tables
        touched = {
            e.event.message_id
            for e in events
            if isinstance(e.event, MessageEdited | MessageModerated | MessageDeleted)
        }
        workspaces = {
            e.event.workspace_id if isinstance(e.event, SearchSettingsChanged) else _workspace(e)
            for e in events
            if isinstance(e.event, SearchSettingsChanged | MessagePosted)
        }
        rows: dict[str, dict[str, Any]] = {}
        if touched:
            m = t.messages
            loaded = await conn.execute(
                sa.select(*[c for c in m.c if c.name != "tsv"]).where(
                    m.c.message_id.in_(sorted(touched))
                )
            )
            rows = {r.message_id: dict(r._mapping) for r in loaded}
        languages: dict[str, str] = {}
        if workspaces:
            s = t.settings
            found = await conn.execute(
                sa.select(s.c.workspace_id, s.c.language).where(
                    s.c.workspace_id.in_(sorted(workspaces))
                )
            )
            languages = {r.workspace_id: r.language for r in found}
        changed: set[str] = set()
        deleted: set[str] = set()
        settings: dict[str, dict[str, Any]] = {}
        for envelope in events:
            event = envelope.event
            match event:
                case SearchSettingsChanged():
                    languages[event.workspace_id] = event.language
                    settings[event.workspace_id] = {
                        "workspace_id": event.workspace_id,
                        "language": event.language,
                        "stream_seq": envelope.seq,
                    }
                case MessagePosted():
                    if event.seq <= 0 or not event.content:
                        continue
                    rows[event.message_id] = {
                        "message_id": event.message_id,
                        "workspace_id": _workspace(envelope),
                        "conversation_id": event.conversation_id,
                        "sender_id": event.sender_id,
                        "seq": event.seq,
                        "stream_seq": envelope.seq,
                        "created_at": event.at,
                        "has_attachment": bool(event.attachment_ids),
                        "content": event.content,
                        "config": "",
                        "gone": False,
                        "version": envelope.seq,
                    }
                    changed.add(event.message_id)
                    deleted.discard(event.message_id)
                case MessageEdited():
                    row = rows.get(event.message_id)
                    if row is not None:
                        row.update(content=event.content, version=envelope.seq)
                        changed.add(event.message_id)
                case MessageDeleted():
                    rows.pop(event.message_id, None)
                    deleted.add(event.message_id)
                    changed.discard(event.message_id)
                case MessageModerated():
                    if event.action == "delete":
                        rows.pop(event.message_id, None)
                        deleted.add(event.message_id)
                        changed.discard(event.message_id)
                    elif (row := rows.get(event.message_id)) is not None:
                        row.update(gone=event.action == "hide", version=envelope.seq)
                        changed.add(event.message_id)
        out = [rows[i] for i in sorted(changed) if i in rows]
        senders = sorted({r["sender_id"] for r in out if r["sender_id"]})
        if senders:
            u = self.users
            erased = await conn.execute(
                sa.select(u.c.id).where(u.c.id.in_(senders), u.c.erased.is_(True))
            )
            gone = {r.id for r in erased}
            out = [r for r in out if r["sender_id"] not in gone]
        for row in out:
            row["config"] = languages.get(row["workspace_id"], DEFAULT_LANGUAGE)
        if deleted:
            m = t.messages
            await conn.execute(m.delete().where(m.c.message_id.in_(sorted(deleted))))
        if out:  # one row per message id: ``rows`` is keyed by it
            await conn.execute(
                self._upsert, {name: [row[name] for row in out] for name, _ in _ROW_TYPES}
            )
        for workspace_id, row in settings.items():
            s = t.settings
            stmt = insert(s)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[s.c.workspace_id],
                    set_={
                        "language": stmt.excluded.language,
                        "stream_seq": stmt.excluded.stream_seq,
                    },
                    where=s.c.stream_seq < stmt.excluded.stream_seq,
                ),
                [row],
            )
            await conn.execute(
                self._reindex, {"workspace_id": workspace_id, "language": row["language"]}
            )


def _workspace(envelope: Envelope) -> str:
    parts = envelope.subject.split(".")  # conv.evt.<workspace>.<conversation>
    return parts[2] if len(parts) == 4 else envelope.workspace


async def remove_erased(conn: AsyncConnection, schema: str, user_ids: Sequence[str]) -> None:
    """Drop erased users' messages from the index (``UsersProjection``, under its lock)."""
    m = sa.table("search_messages", sa.column("sender_id", sa.Text), schema=schema)
    await conn.execute(m.delete().where(m.c.sender_id.in_(list(user_ids))))


# -- queries -----------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def tsquery_text(q: str) -> str:
    """The user's words as a ``to_tsquery`` expression: each word required, those of
    ``PREFIX_MIN`` characters or more as prefixes. Only word characters reach it, quoted,
    so no operator of the tsquery syntax can be injected; empty if there are no words."""
    terms = [w[:MAX_TERM_LENGTH] for w in _WORD.findall(q)][:MAX_TERMS]
    return " & ".join(f"'{w}':*" if len(w) >= PREFIX_MIN else f"'{w}'" for w in terms)


def snippet_html(headline: str) -> str:
    """``ts_headline``'s text with its marks, escaped and marked with ``<mark>``."""
    return html.escape(headline).replace(START, "<mark>").replace(STOP, "</mark>")


def snippet_text(headline: str) -> str:
    return headline.replace(START, "").replace(STOP, "")


def encode_cursor(rank: float, stream_seq: int) -> str:
    return base64.urlsafe_b64encode(struct.pack(">dq", rank, stream_seq)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[float, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, stream_seq = struct.unpack(">dq", raw)
    except (ValueError, struct.error):
        raise InvalidRequest(
            "The cursor is not valid.", {"cursor": "not a cursor we issued"}
        ) from None
    if rank != rank or stream_seq < 0:  # NaN
        raise InvalidRequest("The cursor is not valid.", {"cursor": "not a cursor we issued"})
    return rank, stream_seq


@dataclass(frozen=True)
class Filters:
    conversation_id: str | None = None
    sender_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    has_attachment: bool | None = None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class Hit:
    message_id: str
    conversation_id: str
    rank: float
    stream_seq: int
    headline: str


class Searcher:
    """Searches of the index, joined with membership (widget) or filters (tenant)."""

    def __init__(self, engine: AsyncEngine, schema: str = SCHEMA) -> None:
        self.engine = engine
        self.schema = schema

    async def language(self, conn: AsyncConnection, workspace_id: str) -> str:
        s = SEARCH_TABLES.settings
        found = await conn.execute(sa.select(s.c.language).where(s.c.workspace_id == workspace_id))
        return found.scalar_one_or_none() or DEFAULT_LANGUAGE

    async def search(
        self,
        workspace_id: str,
        q: str,
        *,
        viewer: str | None,
        filters: Filters,
        cursor: tuple[float, int] | None,
        limit: int,
    ) -> tuple[list[Hit], bool]:
        """A page of hits, best first; ``viewer``: only conversations they are in now."""
        expression = tsquery_text(q)
        if not expression:
            return [], False
        sm = _q(self.schema, "search_messages")
        where = ["s.workspace_id = :ws", f"s.tsv @@ {TSQUERY}", "NOT s.gone"]
        params: dict[str, Any] = {"ws": workspace_id, "expr": expression, "n": limit + 1}
        if viewer is not None:
            where.append(
                f"EXISTS (SELECT 1 FROM {_q(self.schema, 'participants')} p "
                "WHERE p.conversation_id = s.conversation_id AND p.user_id = :viewer "
                "AND p.active)"
            )
            params["viewer"] = viewer
        if filters.conversation_id is not None:
            where.append("s.conversation_id = :cid")
            params["cid"] = filters.conversation_id
        if filters.sender_id is not None:
            where.append("s.sender_id = :sender")
            params["sender"] = filters.sender_id
        if filters.since is not None:
            where.append("s.created_at >= :since")
            params["since"] = filters.since
        if filters.until is not None:
            where.append("s.created_at < :until")
            params["until"] = filters.until
        if filters.has_attachment is not None:
            where.append("s.has_attachment = :att")
            params["att"] = filters.has_attachment
        if filters.metadata:
            where.append(
                f"EXISTS (SELECT 1 FROM {_q(self.schema, 'conversations')} c "
                "WHERE c.id = s.conversation_id AND c.metadata::jsonb @> CAST(:meta AS jsonb))"
            )
            params["meta"] = json.dumps(filters.metadata)
        after = ""
        if cursor is not None:
            after = "WHERE (c.rank, c.stream_seq) < (:crank, :cseq) "
            params["crank"], params["cseq"] = cursor
        # The newest CANDIDATES matches are ranked: a rare word is found through the GIN
        # index, a common one by walking the workspace's newest messages (the planner
        # picks, from the query's own words: plans are made per query, not cached).
        sql = (
            "WITH candidates AS ("
            "SELECT s.message_id, s.conversation_id, s.stream_seq, s.config, s.content, "
            f"ts_rank_cd(s.tsv, {TSQUERY})::float8 AS rank "
            f"FROM {sm} s WHERE {' AND '.join(where)} "
            "ORDER BY s.stream_seq DESC LIMIT :candidates), "
            f"page AS (SELECT * FROM candidates c {after}"
            "ORDER BY c.rank DESC, c.stream_seq DESC LIMIT :n) "
            "SELECT page.message_id, page.conversation_id, page.stream_seq, page.rank, "
            "ts_headline(CAST(page.config AS regconfig), "
            f"translate(page.content, :marks, ''), {TSQUERY}, :options) AS headline "
            "FROM page ORDER BY page.rank DESC, page.stream_seq DESC"
        )
        params["marks"] = START + STOP
        params["options"] = HEADLINE_OPTIONS
        params["candidates"] = CANDIDATES
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))
            params["config"] = await self.language(conn, workspace_id)
            rows = (await conn.execute(sa.text(sql), params)).all()
        hits = [
            Hit(r.message_id, r.conversation_id, float(r.rank), int(r.stream_seq), r.headline)
            for r in rows
        ]
        return hits[:limit], len(hits) > limit


# -- the query handler ---------------------------------------------------------------------------


class SearchQueries:
    """``SearchMessages``: hits from the index, shown as history shows the messages now.

    Each hit is rendered from the messages read model by the one fold's renderer,
    and a hit whose message is gone there (a deletion the index has not applied
    yet cannot exist: deletions settle both before returning) is left out.
    """

    def __init__(self, queries: Queries, searcher: Searcher) -> None:
        self.queries = queries
        self.searcher = searcher

    def routes(self) -> list[Route]:
        return [(SearchMessages, self.search)]

    async def search(self, query: SearchMessages, _ctx: CallContext) -> SearchResults:
        actor = query.actor
        workspace_id = valid(actor.workspace_id, "Workspace")
        tenant_only = (
            query.sender_id,
            query.since,
            query.until,
            query.has_attachment,
            query.metadata or None,
        )
        if actor.user_id is not None and any(f is not None for f in tenant_only):
            raise Forbidden("Only the workspace's backend can filter a search.")
        filters = Filters(
            conversation_id=valid(query.conversation_id, "Conversation")
            if query.conversation_id is not None
            else None,
            sender_id=valid(query.sender_id, "User") if query.sender_id is not None else None,
            since=query.since,
            until=query.until,
            has_attachment=query.has_attachment,
            metadata=dict(query.metadata) or None,
        )
        await self.queries.lookups.min_seq(query.min_seq, search=True)
        hits, has_more = await self.searcher.search(
            workspace_id,
            query.q,
            viewer=actor.user_id,
            filters=filters,
            cursor=decode_cursor(query.cursor),
            limit=query.limit,
        )
        page = await self.queries.store.messages_by_id([h.message_id for h in hits])
        shown = {r["id"]: r for r in page.rows if not (r["deleted"] or r["hidden"])}
        visible = [r for r in page.rows if r["id"] in shown]
        rendered = await self.queries.render_messages(
            workspace_id, MessagePage(visible, page.reactions, False), actor.user_id
        )
        by_id = {m.id: m for m in rendered}
        data = [
            SearchHit(
                message=by_id[h.message_id],
                snippet=snippet_text(h.headline),
                snippet_html=snippet_html(h.headline),
                rank=h.rank,
            )
            for h in hits
            if h.message_id in by_id
        ]
        last = hits[-1] if hits else None
        return SearchResults(
            data=data,
            has_more=has_more,
            next_cursor=encode_cursor(last.rank, last.stream_seq) if has_more and last else None,
        )
