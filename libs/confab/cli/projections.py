"""``confab projections status | rebuild NAME | verify NAME``: read models and the log.

``status`` shows each projection's checkpoint, the last event of its stream that
it follows, how many events it has yet to apply (lag) and how fast it applies
them. ``rebuild`` replays a read model into scratch tables while the live one
serves, then swaps them in (``confab.rebuild``); run it again after an
interruption and it resumes. It replays in ``--processes`` processes (2 by
default on two cores or more): this one and helpers it starts itself (``--part
I/N``), each applying whole conversations of its share. ``verify`` rebuilds into
scratch tables and compares them with the live ones, row by row: exit code 1
and every difference if they differ, 0 if they are identical.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

import sqlalchemy as sa
from nats.js.errors import NotFoundError

from confab.cli.context import (
    Platform,
    add_target_options,
    nats_url,
    print_json,
    print_table,
    run_on_platform,
)
from confab.cli.progress import ProgressBar
from confab.personal import KeyRing
from confab.projection import Projection, partition_holders
from confab.readmodels import ReadModel, UnknownReadModel, find, read_models
from confab.rebuild import (
    CHECKPOINTS,
    Helpers,
    Progress,
    ReadModelRebuild,
    RebuildError,
    RowDiff,
    part_line,
    quote_ident,
)
from confab.streamread import Start, StreamReader


def add_parser(commands: Any) -> None:
    p = commands.add_parser("projections", help="read models: status, rebuild, verify")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    status = sub.add_parser("status", help="each read model's checkpoint, lag and rate")
    status.add_argument(
        "--sample",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="measure the rate over this long (0: do not measure; default 1)",
    )
    add_target_options(status, database=True)
    status.set_defaults(run=status_command)

    rebuild = sub.add_parser(
        "rebuild", help="replay a read model into fresh tables, then swap them in"
    )
    rebuild.add_argument("name", help="read model (e.g. messaging) or one of its projections")
    rebuild.add_argument(
        "--restart", action="store_true", help="discard an interrupted rebuild and start over"
    )
    rebuild.add_argument(
        "--no-swap", action="store_true", help="only replay (swap later by running it again)"
    )
    rebuild.add_argument("--batch-size", type=int, default=2000, help="events per transaction")
    rebuild.add_argument(
        "--processes",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="replay in this many processes, split by conversation (default: 2 where the "
        "machine has two cores or more)",
    )
    # One helper process's share (started by the rebuild itself, never by hand).
    rebuild.add_argument("--part", default=None, help=argparse.SUPPRESS)
    add_target_options(rebuild, database=True)
    rebuild.set_defaults(run=rebuild_command)

    verify = sub.add_parser(
        "verify", help="recompute a read model from the log and report every difference"
    )
    verify.add_argument("name", help="read model (e.g. messaging) or one of its projections")
    verify.add_argument(
        "--keep", action="store_true", help="keep the scratch schema <name>_verify to inspect"
    )
    verify.add_argument("--batch-size", type=int, default=2000, help="events per transaction")
    add_target_options(verify, database=True)
    verify.set_defaults(run=verify_command)


def _model(name: str) -> ReadModel:
    try:
        return find(name)
    except UnknownReadModel as exc:
        raise SystemExit(f"confab: {exc}") from None


# -- status ------------------------------------------------------------------------------------


async def _checkpoints(platform: Platform, schema: str) -> dict[str, int] | None:
    async with platform.engine.connect() as conn:
        exists = await conn.execute(
            sa.text("SELECT to_regclass(:t) IS NOT NULL"),
            {"t": f"{quote_ident(schema)}.{CHECKPOINTS}"},
        )
        if not exists.scalar_one():
            return None
        rows = await conn.execute(
            sa.text(f"SELECT name, last_seq FROM {quote_ident(schema)}.{CHECKPOINTS}")
        )
        return {name: int(seq) for name, seq in rows.all()}


async def _pending(platform: Platform, projection: Projection, after: int) -> int:
    """Events of the projection's subjects with a sequence above ``after``, now."""
    reader = StreamReader(
        platform.js, projection.stream, projection.subjects, Start(seq=after + 1), batch=1
    )
    async with reader:
        return reader.pending


async def _last(platform: Platform, projection: Projection) -> int:
    last = 0
    for subject in projection.subjects:
        try:
            msg = await platform.js.get_last_msg(projection.stream, subject, direct=False)
        except NotFoundError:
            continue
        last = max(last, msg.seq or 0)
    return last


async def _held(platform: Platform, projection: Projection) -> list[int]:
    async with platform.engine.connect() as conn:
        return await partition_holders(conn, projection)


async def _status(platform: Platform, sample: float) -> list[dict[str, Any]]:
    models = read_models()
    first: dict[str, dict[str, int] | None] = {}
    for model in models.values():
        first[model.schema] = await _checkpoints(platform, model.schema)
    started = time.monotonic()
    if sample > 0:
        await asyncio.sleep(sample)  # the rate is measured over this interval
    elapsed = time.monotonic() - started
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        schema = model.schema
        now = await _checkpoints(platform, schema)
        for projection in model.projections():
            checkpoint = (now or {}).get(projection.name)
            row: dict[str, Any] = {
                "read_model": name,
                "projection": projection.name,
                "schema": schema,
                "stream": projection.stream,
                "checkpoint": checkpoint,
                "last_seq": await _last(platform, projection),
                "partitions": projection.partitions,
                "held": await _held(platform, projection),
            }
            if checkpoint is None:
                row.update(lag=None, rate=None, eta=None, state="no read model yet")
                rows.append(row)
                continue
            lag = await _pending(platform, projection, checkpoint)
            row["lag"] = lag
            before = (first.get(schema) or {}).get(projection.name)
            rate = None
            if sample > 0 and before is not None:
                applied = 0
                if checkpoint > before:
                    applied = await _pending(platform, projection, before) - lag
                rate = round(applied / elapsed, 1)
            row["rate"] = rate
            row["eta"] = round(lag / rate, 1) if rate and lag else (0.0 if lag == 0 else None)
            row["state"] = "up to date" if lag == 0 else "catching up"
            rows.append(row)
        scratch = await _checkpoints(platform, f"{schema}_rebuild")
        if scratch is not None:
            for projection in model.projections():
                # A partitioned projection is replayed in lanes, each with its own row.
                lanes = [s for n, s in scratch.items() if n.startswith(f"{projection.name}@")]
                rows.append(
                    {
                        "read_model": name,
                        "projection": projection.name,
                        "schema": f"{schema}_rebuild",
                        "stream": projection.stream,
                        "checkpoint": min(lanes) if lanes else scratch.get(projection.name),
                        "last_seq": await _last(platform, projection),
                        "partitions": projection.partitions,
                        "held": [],
                        "lag": None,
                        "rate": None,
                        "eta": None,
                        "state": "rebuild (interrupted or running)",
                    }
                )
    return rows


def status_command(args: argparse.Namespace) -> int:
    async def work(platform: Platform) -> list[dict[str, Any]]:
        return await _status(platform, args.sample)

    rows = run_on_platform(args, work, database=True)
    if args.json:
        print_json(rows)
        return 0
    shown = []
    for r in rows:
        shown.append(
            {
                **r,
                "checkpoint": "-" if r["checkpoint"] is None else r["checkpoint"],
                "lag": "-" if r["lag"] is None else r["lag"],
                "rate": "-" if r["rate"] is None else f"{r['rate']:,.1f}/s",
                "eta": "-" if r["eta"] is None else f"{r['eta']:.0f} s",
                # Partitions per live process: "8+8 of 16", or "0 of 1" with none leading.
                "partitions": f"{'+'.join(map(str, r['held'])) or 0} of {r['partitions']}",
            }
        )
    columns = ("projection", "schema", "stream", "checkpoint", "last_seq", "lag", "rate", "eta")
    print_table(shown, (*columns, "partitions", "state"))
    return 0


# -- rebuild -----------------------------------------------------------------------------------


def rebuild_command(args: argparse.Namespace) -> int:
    model = _model(args.name)
    quiet = bool(args.json)

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    async def work(platform: Platform) -> dict[str, Any]:
        keys = await platform.key_ring()
        if args.part:
            return await _replay_part(platform, model, args, keys)
        job = ReadModelRebuild(
            platform.js, platform.engine, model, batch_size=args.batch_size, keys=keys
        )
        helpers = None
        if args.processes > 1:
            env = dict(os.environ, CONFAB_NATS_URL=nats_url(args))
            env["CONFAB_DATABASE_URL"] = platform.database_url or ""
            argv = [sys.executable, "-m", "confab.cli.main", "projections", "rebuild"]
            argv += [model.name, "--batch-size", str(args.batch_size)]
            helpers = Helpers(argv, env, args.processes)
        names = ", ".join(p.name for p in job.projections)
        async with job.exclusive():
            if args.restart:
                await job.drop_scratch()
            resumed = await job.scratch_exists()
            positions = await job.prepare()
            if resumed and any(positions.values()):
                at = ", ".join(f"{n} at {s}" for n, s in positions.items())
                say(f"Resuming the rebuild of {model.name} in {job.scratch_schema} ({at}).")
            else:
                say(f"Rebuilding {model.name} ({names}) into {job.scratch_schema}.")
            progress = ProgressBar(model.name, quiet=quiet)
            started = time.monotonic()
            await job.converge(progress, helpers=helpers)
            progress.finish()
            replay_seconds = time.monotonic() - started
            result: dict[str, Any] = {
                "read_model": model.name,
                "events": progress.done,
                "seconds": round(replay_seconds, 3),
                "events_per_second": round(progress.done / replay_seconds, 1)
                if replay_seconds > 0
                else None,
                "skipped": job.skipped + sum(r["skipped"] for r in job.helper_reports),
                "processes": args.processes,
            }
            say(
                f"Replayed {progress.done:,} events in {replay_seconds:.1f} s "
                f"({progress.rate:,.0f} events/s)."
            )
            if args.no_swap:
                result.update(swapped=False, checkpoints=job.positions())
                say(f"Not swapped: {job.scratch_schema} stays; run again to catch up and swap.")
                return result
            swapped = await job.swap(progress)
            result.update(
                swapped=True,
                checkpoints=swapped.checkpoints,
                paused_seconds=round(swapped.paused_seconds, 3),
            )
            at = ", ".join(f"{n} at {s}" for n, s in swapped.checkpoints.items())
            say(
                f"Swapped {job.scratch_schema} in as {model.schema} ({at}); live projections "
                f"paused for {swapped.paused_seconds * 1000:.0f} ms, queries not at all."
            )
            return result

    try:
        result = run_on_platform(
            args,
            work,
            database=True,
            interrupted="interrupted; run the same command again to resume the rebuild",
        )
    except RebuildError as exc:
        raise SystemExit(f"confab: {exc}") from None
    if args.json:
        print_json(result)
    return 0


class _PartProgress(Progress):
    """A helper's progress, as JSON lines on stdout for the rebuild that started it."""

    def add_total(self, n: int) -> None:
        super().add_total(n)
        print(part_line(total=n), flush=True)

    def advance(self, n: int) -> None:
        super().advance(n)
        print(part_line(advanced=n), flush=True)


async def _end_of_input() -> None:
    """Return at the end of stdin: a helper's is a pipe from the rebuild that started it,
    closed when that process ends, however it ends."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def _replay_part(
    platform: Platform, model: ReadModel, args: argparse.Namespace, keys: KeyRing
) -> dict[str, Any]:
    """``--part I/N``: replay one share of a rebuild (``confab.rebuild.shares``) for the
    rebuild that started this process and holds the scratch schema's lock."""
    try:
        mine, parts = (int(x) for x in args.part.split("/"))
    except ValueError:
        raise SystemExit(f"confab: --part {args.part!r} is not I/N") from None
    if not 0 < mine < parts:
        raise SystemExit(f"confab: --part {args.part!r} is not I/N with 0 < I < N")
    job = ReadModelRebuild(
        platform.js,
        platform.engine,
        model,
        batch_size=args.batch_size,
        keys=keys,
        part=(mine, parts),
    )
    if not await job.locked_elsewhere():
        raise SystemExit("confab: --part is for the helpers a rebuild starts itself")
    await job.prepare()
    progress = _PartProgress()
    replay = asyncio.ensure_future(job.converge(progress))
    gone = asyncio.ensure_future(_end_of_input())
    await asyncio.wait({replay, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not replay.done():
        # Whatever became of the rebuild (even killed), its helper stops with it: what
        # it committed stays, and the rebuild run again resumes from there.
        replay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replay
        raise SystemExit("confab: the rebuild that started this helper is gone; stopped")
    gone.cancel()
    replay.result()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    done = {
        "events": progress.done,
        "skipped": job.skipped,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    print(part_line(done=done), flush=True)
    return done


# -- verify ------------------------------------------------------------------------------------


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(diff: RowDiff) -> list[str]:
    key = " ".join(f"{k}={v}" for k, v in diff.key.items())
    if diff.kind == "missing":
        return [f"{diff.table} {key}: missing from the live read model (the log has it)"]
    if diff.kind == "extra":
        return [f"{diff.table} {key}: in the live read model, but the log does not produce it"]
    lines = [f"{diff.table} {key}: differs"]
    assert diff.live is not None and diff.rebuilt is not None
    for column in diff.columns:
        lines.append(
            f"    {column}: live {_short(diff.live.get(column))}"
            f" != from the log {_short(diff.rebuilt.get(column))}"
        )
    return lines


def verify_command(args: argparse.Namespace) -> int:
    model = _model(args.name)
    found: list[RowDiff] = []

    def report(diff: RowDiff) -> None:
        if args.json:
            found.append(diff)
        else:  # as they are found: a big difference does not pile up in memory
            print("\n".join(describe(diff)), flush=True)

    async def work(platform: Platform) -> Any:
        job = ReadModelRebuild(
            platform.js,
            platform.engine,
            model,
            purpose="verify",
            batch_size=args.batch_size,
            keys=await platform.key_ring(),
        )
        async with job.exclusive():
            await job.drop_scratch()
            await job.prepare()
            progress = ProgressBar(f"{model.name} (verify)", quiet=bool(args.json))
            try:
                result = await job.verify(progress, report)
            finally:
                progress.finish()
                if not args.keep:
                    await job.drop_scratch()
            return job, result

    try:
        job, result = run_on_platform(args, work, database=True)
    except RebuildError as exc:
        raise SystemExit(f"confab: {exc}") from None
    total = sum(result.differences.values())
    if args.json:
        print_json(
            {
                "read_model": model.name,
                "identical": result.identical,
                "checkpoints": result.checkpoints,
                "checkpoint_mismatch": result.checkpoint_mismatch,
                "rows": result.rows,
                "differences_per_table": result.differences,
                "differences": [
                    {
                        "table": d.table,
                        "key": d.key,
                        "kind": d.kind,
                        "columns": d.columns,
                        "live": d.live,
                        "rebuilt": d.rebuilt,
                    }
                    for d in found
                ],
            }
        )
        return 0 if result.identical else 1
    at = ", ".join(f"{n} at {s}" for n, s in result.checkpoints.items())
    for name, (live, rebuilt) in result.checkpoint_mismatch.items():
        print(f"{name}: the live checkpoint is {live}, the replay stopped at {rebuilt}")
    rows = sum(result.rows.values())
    tables = len(result.rows)
    if result.identical:
        print(f"{model.name}: identical to the log ({tables} tables, {rows:,} rows; {at}).")
        return 0
    per_table = ", ".join(f"{t}: {n}" for t, n in result.differences.items() if n)
    print(
        f"{model.name}: {total} row(s) differ from the log ({per_table}; "
        f"{tables} tables, {rows:,} rows compared; {at}).",
        file=sys.stdout,
    )
    if args.keep:
        print(f"The replayed tables are in schema {job.scratch_schema}.")
    return 1
