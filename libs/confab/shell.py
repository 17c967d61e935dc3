"""The command shell: a command handler is its decider plus its contract.

Every write request of every service goes the same way:

1. *prepare*: the handler checks the request (ids that go into subjects),
   does the few look-ups the decision needs in read models or other services
   (does a user exist, which attachments media stored), and makes the
   decider's command value (``Intent``: the command, the subject of its
   aggregate, who acts, and the message id that makes a retry harmless);
2. *run*: ``Aggregates.execute`` loads the state (cached, caught up from the
   subject), decides, appends with optimistic concurrency, retries on a
   conflict and recognises a retried append by its message id;
3. *reply*: from what was stored (``Executed``); by default ``Ok`` with the
   stream sequence, so a query given it as ``min_seq`` reads the write back.

``CommandShell.handler(prepare, reply)`` makes the RPC handler of that shape;
a handler whose reply needs more than ``Executed`` calls ``run`` itself. The
shell never reads a read model: the look-ups are the handler's, before
deciding, and passed in the command.

A service lists its handlers on two sides, commands and queries (each with a
``routes()``); ``routes`` puts them together for ``RpcServer.serve``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from confab.aggregate import Aggregates, Executed
from confab.contracts.base import Ok, Request
from confab.ids import new_id
from confab.rpc import CallContext, Handler

C = TypeVar("C")
S = TypeVar("S")
Req = TypeVar("Req")

Route = tuple[type[Request], Handler]


class Side(Protocol):
    """The commands or the queries of a service."""

    def routes(self) -> list[Route]: ...


def routes(*sides: Side) -> list[Route]:
    """Every request of the given sides with its handler."""
    return [route for side in sides for route in side.routes()]


class Intent(msgspec.Struct, Generic[C], frozen=True):
    """A decider's command, ready to run against the aggregate at ``subject``."""

    subject: str
    command: C
    workspace: str
    actor: str = ""  # who acts, for the event's headers: a user id or an API key id
    msg_id: str = ""  # the append's message id; "" makes a fresh one


async def ok(_request: Any, executed: Executed[Any]) -> Ok:
    """The reply of a command that has nothing to say but where it was stored."""
    return Ok(seq=executed.version)


class CommandShell(Generic[C, S]):
    """Prepare, run and reply for the commands of one decider."""

    def __init__(self, aggregates: Aggregates[C, S]) -> None:
        self.aggregates = aggregates

    async def run(self, intent: Intent[C], ctx: CallContext | None = None) -> Executed[S]:
        return await self.aggregates.execute(
            intent.subject,
            intent.command,
            msg_id=intent.msg_id or new_id("evt"),
            workspace=intent.workspace,
            actor=intent.actor,
            correlation=ctx.correlation if ctx is not None else "",
        )

    def handler(
        self,
        prepare: Callable[[Req, CallContext], Awaitable[Intent[C]]],
        reply: Callable[[Req, Executed[S]], Awaitable[Any]] = ok,
    ) -> Callable[[Req, CallContext], Awaitable[Any]]:
        """The RPC handler that prepares a request, runs it and replies."""

        async def handle(request: Req, ctx: CallContext) -> Any:
            return await reply(request, await self.run(await prepare(request, ctx), ctx))

        return handle
