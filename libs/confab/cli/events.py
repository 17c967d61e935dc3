"""``confab events tail | export | import``: the event log itself.

One JSON line per event, the same for ``export``, ``import`` and ``tail --json``::

    {"stream": "CONVERSATIONS", "seq": 42, "subject": "conv.evt.ws_….conv_…",
     "time": "2025-…Z", "type": "message.posted",
     "headers": {"Nats-Msg-Id": "…", "Confab-Event": "message.posted", …},
     "body": {…the event exactly as stored…}}

``body`` holds the stored bytes verbatim (a body that is not one line of JSON
goes in ``body_base64`` instead), so an import stores exactly what was exported.
Reading goes through ephemeral consumers in batches (``confab.streamread``):
memory stays flat whatever the size of the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fnmatch
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from confab import bus, personal
from confab.cli.context import Platform, add_target_options, run_on_platform
from confab.cli.progress import ProgressBar
from confab.events import H_ACTOR, H_EVENT, H_SCHEMA, H_WORKSPACE
from confab.ids import is_valid_id
from confab.streamread import Start, StreamReader, parse_since, position

# Headers the server adds on delivery, or that guarded the original append: not re-published.
SERVER_HEADERS = frozenset(
    {
        "nats-stream",
        "nats-sequence",
        "nats-time-stamp",
        "nats-subject",
        "nats-last-sequence",
        "nats-num-pending",
        "nats-expected-stream",
        "nats-expected-last-sequence",
        "nats-expected-last-subject-sequence",
        "nats-expected-last-subject-sequence-subject",
        "nats-expected-last-msg-id",
    }
)
IMPORT_WINDOW = 1000  # publishes in flight during an import
ACK_TIMEOUT = 30.0


class Record(msgspec.Struct, kw_only=True, omit_defaults=True):
    stream: str
    seq: int
    subject: str
    time: str = ""
    type: str = ""
    headers: dict[str, str] = {}
    body: msgspec.Raw = msgspec.Raw(b"null")  # the stored JSON, byte for byte
    body_base64: str | None = None  # a body that is not one line of JSON

    def data(self) -> bytes:
        if self.body_base64 is not None:
            return base64.b64decode(self.body_base64)
        return bytes(self.body)


_ENCODER = msgspec.json.Encoder()
_RECORD = msgspec.json.Decoder(Record)
_JSON = msgspec.json.Decoder(msgspec.Raw)


def record_of(stream: str, msg: Msg) -> Record:
    seq, _, ns = position(msg)
    headers = dict(msg.headers or {})
    data = msg.data or b""
    body = msgspec.Raw(b"null")
    encoded: str | None = None
    try:
        if not data or b"\n" in data or b"\r" in data:
            raise msgspec.DecodeError("not one line of JSON")
        _JSON.decode(data)
        body = msgspec.Raw(data)
    except msgspec.DecodeError:
        encoded = base64.b64encode(data).decode()
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return Record(
        stream=stream,
        seq=seq,
        subject=msg.subject,
        time=f"{stamp}.{nanos:09d}Z",
        type=headers.get(H_EVENT, ""),
        headers=headers,
        body=body,
        body_base64=encoded,
    )


def add_parser(commands: Any) -> None:
    p = commands.add_parser("events", help="tail, export and import the event log")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    tail = sub.add_parser("tail", help="print events as they are stored (Ctrl-C to stop)")
    tail.add_argument("--workspace", metavar="W", help="only this workspace's events")
    tail.add_argument("--conversation", metavar="C", help="only this conversation's events")
    tail.add_argument(
        "--type",
        metavar="T",
        action="append",
        default=[],
        help="only events of this type (e.g. user.banned, message.*); may repeat",
    )
    tail.add_argument("--stream", action="append", default=[], help="only this stream; may repeat")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--since", metavar="TIME", help="start back then: 10m, 2h, 1d or a time")
    start.add_argument("--from-seq", type=int, metavar="N", help="start at this stream sequence")
    tail.add_argument(
        "--no-follow", action="store_true", help="stop at the end of the log instead of waiting"
    )
    tail.add_argument("--count", type=int, metavar="N", help="stop after N events")
    add_target_options(tail)
    tail.set_defaults(run=tail_command)

    export = sub.add_parser("export", help="write events as JSON lines (a file or stdout)")
    export.add_argument(
        "--stream",
        action="append",
        default=[],
        help="this stream (default: all three, after the users' data keys); may repeat",
    )
    start = export.add_mutually_exclusive_group()
    start.add_argument("--from-seq", type=int, metavar="N", help="from this stream sequence")
    start.add_argument("--since", metavar="TIME", help="from then: 10m, 2h, 1d or a time")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    add_target_options(export)
    export.set_defaults(run=export_command)

    load = sub.add_parser(
        "import", help="publish an export into an empty deployment (recovery, migration)"
    )
    load.add_argument("file", help="JSON lines from 'confab events export' ('-': stdin)")
    load.add_argument(
        "--replicas", type=int, default=1, help="replicas of streams created here (default 1)"
    )
    add_target_options(load, database=True)
    load.set_defaults(run=import_command)


def _start(args: argparse.Namespace, *, default_new: bool) -> Start:
    if args.since:
        try:
            return Start(time=parse_since(args.since))
        except ValueError as exc:
            raise SystemExit(f"confab: --since: {exc}") from None
    if args.from_seq is not None:
        if args.from_seq < 1:
            raise SystemExit("confab: --from-seq starts at 1")
        return Start(seq=args.from_seq)
    return Start(new_only=default_new)


def _streams(chosen: list[str]) -> list[bus.StreamSpec]:
    if not chosen:
        return list(bus.STREAMS.values())
    specs = []
    for name in chosen:
        spec = bus.STREAMS.get(name.upper())
        if spec is None:
            known = ", ".join(bus.STREAMS)
            raise SystemExit(f"confab: no stream {name!r} (the platform's streams: {known})")
        specs.append(spec)
    return specs


# The order export writes (and so import publishes) every stream in. Streams of events the
# platform derives from others' come before those others. The stack imported into is
# running: its notifier, say, following the imported conversations, would decide again a
# notification the export holds, under the same message id, before the import reached
# it, and JetStream would drop the export's copy as a duplicate. Imported first, the
# decision is there when the conversations come, and a decision made again is dropped.
MOVED_ORDER = (bus.NOTIFIER, bus.MEDIA, bus.WEBHOOKS, bus.IDENTITY, bus.CONVERSATIONS)
assert {s.name for s in MOVED_ORDER} == set(bus.STREAMS), "every stream, in an order"


def _moved_streams(chosen: list[str]) -> list[bus.StreamSpec]:
    """What export and import move: the chosen streams (all: in ``MOVED_ORDER``), and with
    all of them the users' data keys first, so an imported deployment can read the
    personal data it replays."""
    if not chosen:
        return [personal.KEYS, *MOVED_ORDER]
    if [c.upper() for c in chosen] == [personal.KEYS.name]:
        return [personal.KEYS]
    return _streams(chosen)


# -- tail ----------------------------------------------------------------------------------------


def _tail_filters(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(stream, subjects) pairs to read, from --workspace / --conversation / --stream."""
    for flag in ("workspace", "conversation"):
        value = getattr(args, flag)
        if value is not None and not is_valid_id(value):
            raise SystemExit(f"confab: --{flag}: not an id")
    workspace = args.workspace or "*"
    out = []
    for spec in _streams(args.stream):
        prefix = spec.subjects[0].removesuffix(">")  # e.g. "conv.evt."
        if args.conversation:
            if spec.name != bus.CONVERSATIONS.name:
                continue
            out.append((spec.name, [f"{prefix}{workspace}.{args.conversation}"]))
        elif args.workspace:
            out.append((spec.name, [f"{prefix}{args.workspace}.>"]))
        else:
            out.append((spec.name, list(spec.subjects)))
    if not out:
        raise SystemExit("confab: --conversation needs the CONVERSATIONS stream")
    return out


REDUNDANT = ("workspace_id", "conversation_id", "at")  # in the subject and the time already


def human_line(record: Record, width: int = 240) -> str:
    h = record.headers
    body = record.data().decode(errors="replace")
    if record.body_base64 is None:
        with contextlib.suppress(msgspec.DecodeError):
            fields = msgspec.json.decode(record.data())
            if isinstance(fields, dict):
                shown = {k: v for k, v in fields.items() if k not in REDUNDANT}
                body = msgspec.json.encode(shown).decode()
    if len(body) > width:
        body = body[: width - 1] + "…"
    version = h.get(H_SCHEMA, "")
    kind = f"{record.type or '?'}" + (f" v{version}" if version and version != "1" else "")
    parts = [
        record.time[:23] + ("Z" if record.time else "-"),
        f"{record.stream}#{record.seq}",
        kind,
        f"workspace={h.get(H_WORKSPACE) or '-'}",
        f"actor={h.get(H_ACTOR) or '-'}",
        record.subject,
        body,
    ]
    return "  ".join(parts)


def tail_command(args: argparse.Namespace) -> int:
    start = _start(args, default_new=True)
    filters = _tail_filters(args)
    types = list(args.type)
    out = sys.stdout

    def wanted(record: Record) -> bool:
        return not types or any(fnmatch.fnmatchcase(record.type, t) for t in types)

    async def work(platform: Platform) -> int:
        shown = 0
        done = asyncio.Event()
        lock = asyncio.Lock()

        async def follow(reader: StreamReader) -> None:
            nonlocal shown
            stream = reader.stream
            try:
                async for msgs in reader.batches(follow=not args.no_follow, poll=0.5):
                    for msg in msgs:
                        record = record_of(stream, msg)
                        if not wanted(record):
                            continue
                        async with lock:
                            if args.count is not None and shown >= args.count:
                                done.set()
                                return
                            if args.json:
                                out.write(_ENCODER.encode(record).decode() + "\n")
                            else:
                                out.write(human_line(record) + "\n")
                            out.flush()
                            shown += 1
                            if args.count is not None and shown >= args.count:
                                done.set()
                                return
            finally:
                await reader.close()

        # Every consumer exists before the first line: nothing stored after it is missed.
        readers = []
        for stream, subjects in filters:
            reader = StreamReader(platform.js, stream, subjects, start, batch=256)
            try:
                await reader.open()
            except NotFoundError:
                continue  # the stream does not exist (yet): nothing to show
            readers.append(reader)
        tasks = [asyncio.create_task(follow(reader)) for reader in readers]
        names = ", ".join(reader.stream for reader in readers) or "no stream"
        what = "until the end of the log" if args.no_follow else "as they are stored; Ctrl-C stops"
        print(f"confab: showing events of {names} {what}", file=sys.stderr, flush=True)
        waiter = asyncio.create_task(done.wait())
        try:
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if not done.is_set():
                # One stream finished (--no-follow) or failed: wait for the others too.
                await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, waiter]:
                task.cancel()
            for task in [*tasks, waiter]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return shown

    run_on_platform(args, work, interrupted="stopped")
    return 0


# -- export --------------------------------------------------------------------------------------


def export_command(args: argparse.Namespace) -> int:
    start = _start(args, default_new=False)
    specs = _moved_streams(args.stream)
    target: IO[str] | None = None

    async def work(platform: Platform) -> dict[str, int]:
        counts: dict[str, int] = {}
        progress = ProgressBar(
            "export", quiet=args.out is None and not sys.stderr.isatty(), tty=sys.stderr.isatty()
        )
        assert target is not None
        for spec in specs:
            reader = StreamReader(platform.js, spec.name, spec.subjects, start, batch=1000)
            try:
                await reader.open()
            except NotFoundError:
                counts[spec.name] = 0
                continue
            n = 0
            try:
                progress.add_total(reader.pending)
                async for msgs in reader.batches():
                    lines = (_ENCODER.encode(record_of(spec.name, m)) for m in msgs)
                    target.write("".join(line.decode() + "\n" for line in lines))
                    n += len(msgs)
                    progress.advance(len(msgs))
            finally:
                await reader.close()
            counts[spec.name] = n
        progress.finish()
        target.flush()
        return counts

    started = time.monotonic()
    if args.out is None:
        target = sys.stdout
        counts = run_on_platform(args, work)
    else:
        partial = args.out.with_name(args.out.name + ".partial")
        with open(partial, "w", encoding="utf-8") as target:
            counts = run_on_platform(args, work)
        partial.replace(args.out)
    seconds = time.monotonic() - started
    total = sum(counts.values())
    per_stream = ", ".join(f"{s} {n:,}" for s, n in counts.items())
    where = str(args.out) if args.out else "stdout"
    print(
        f"confab: exported {total:,} events ({per_stream}) to {where} in {seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


# -- import --------------------------------------------------------------------------------------


def _lines(name: str) -> Iterator[tuple[int, bytes]]:
    if name == "-":
        yield from enumerate(sys.stdin.buffer, 1)
        return
    try:
        with open(name, "rb") as f:
            yield from enumerate(f, 1)
    except FileNotFoundError:
        raise SystemExit(f"confab: no file {name}") from None


class ImportFailed(Exception):
    pass


def import_command(args: argparse.Namespace) -> int:
    async def work(platform: Platform) -> dict[str, dict[str, int]]:
        js = platform.js
        # 1. The target must be empty: an import never merges into existing history.
        held = {}
        for spec in _moved_streams([]):
            try:
                info = await js.stream_info(spec.name)
            except NotFoundError:
                continue
            if info.state.messages:
                held[spec.name] = info.state.messages
        if held:
            listing = ", ".join(f"{name} holds {n:,}" for name, n in held.items())
            raise ImportFailed(
                f"the target is not empty ({listing} events); import only into a new "
                "deployment (e.g. 'confab up --no-demo' on a new data dir)"
            )
        await bus.ensure_streams(js, bus.STREAMS.values(), args.replicas)
        await personal.ensure_bucket(js, args.replicas)

        # 2. Publish every line in order, a window of publishes in flight at a time.
        stats: dict[str, dict[str, int]] = {}
        window: list[tuple[Record, asyncio.Future[Any]]] = []
        progress = ProgressBar("import", tty=sys.stderr.isatty())

        async def settle() -> None:
            if not window:
                return
            try:
                acks = await asyncio.wait_for(asyncio.gather(*(f for _, f in window)), ACK_TIMEOUT)
            except TimeoutError:
                raise ImportFailed(
                    "the event log did not acknowledge the import in time; the deployment "
                    "now holds part of it: start again from an empty one"
                ) from None
            for (record, _), ack in zip(window, acks, strict=True):
                s = stats[record.stream]
                if ack.duplicate:
                    raise ImportFailed(
                        f"{record.stream} #{record.seq} was dropped as a duplicate of an "
                        f"earlier message id ({record.headers.get('Nats-Msg-Id')})"
                    )
                if ack.seq <= s["last"]:
                    raise ImportFailed(f"{record.stream}: events were stored out of order")
                s["last"] = ack.seq
                s["first"] = s["first"] or ack.seq
                s["events"] += 1
                if ack.seq != record.seq:
                    s["renumbered"] += 1
            progress.advance(len(window))
            window.clear()

        for number, line in _lines(args.file):
            if not line.strip():
                continue
            try:
                record = _RECORD.decode(line)
            except msgspec.DecodeError as exc:
                raise ImportFailed(f"line {number}: not an exported event ({exc})") from None
            if record.stream not in bus.STREAMS and record.stream != personal.KEYS.name:
                raise ImportFailed(f"line {number}: unknown stream {record.stream}")
            stats.setdefault(record.stream, {"events": 0, "first": 0, "last": 0, "renumbered": 0})
            headers = {k: v for k, v in record.headers.items() if k.lower() not in SERVER_HEADERS}
            future = await js.publish_async(
                record.subject, record.data(), stream=record.stream, headers=headers or None
            )
            window.append((record, future))
            if len(window) >= IMPORT_WINDOW:
                await settle()
        await settle()
        progress.finish()
        return stats

    stale = _checkpoints_before_import(args)
    started = time.monotonic()
    try:
        stats = run_on_platform(
            args, work, interrupted="interrupted: the deployment holds part of the import"
        )
    except ImportFailed as exc:
        raise SystemExit(f"confab: {exc}") from None
    seconds = time.monotonic() - started
    total = sum(s["events"] for s in stats.values())
    if args.json:
        print(msgspec.json.encode({"events": total, "streams": stats, "seconds": seconds}).decode())
        return 0
    for name, s in stats.items():
        note = f"; {s['renumbered']:,} at other sequences" if s["renumbered"] else ""
        print(f"{name}: {s['events']:,} events stored as #{s['first']}..#{s['last']}{note}")
    print(
        f"Imported {total:,} events in {seconds:.1f} s. The services' projections apply them "
        "as they arrive; 'confab projections status' shows how far they are."
    )
    if stale:
        names = ", ".join(stale)
        print(
            f"Note: the read models already had checkpoints ({names}). If they were not built "
            "from this same log, run 'confab projections rebuild NAME' for each.",
            file=sys.stderr,
        )
    return 0


def _checkpoints_before_import(args: argparse.Namespace) -> list[str]:
    """Read models whose checkpoints were past 0 before the import (e.g. a database that
    survived the loss of the event log), if the database can be found; best effort."""
    import asyncpg

    from confab.db import plain_url
    from confab.readmodels import read_models

    try:
        url = (
            args.database_url
            or json.loads((Path(args.data_dir) / "stack.json").read_text())["database_url"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return []

    async def look() -> list[str]:
        conn = await asyncpg.connect(plain_url(url), timeout=5)
        try:
            found = []
            for name, model in read_models().items():
                table = f'"{model.schema}".projection_checkpoints'
                if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                    continue
                if await conn.fetchval(f"SELECT count(*) FROM {table} WHERE last_seq > 0"):
                    found.append(name)
            return found
        finally:
            await conn.close()

    try:
        return asyncio.run(look())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return []
