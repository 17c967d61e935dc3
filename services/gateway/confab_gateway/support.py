"""Support conversations over HTTP (issue 19): the inbox API and the widget's "Send us a message".

The tenant's side (``/api/v1/support/…``, an API key, or a staff member's
dashboard session by each route's ``permission``) lists the inbox views with
their counts, reads a support conversation, assigns it, changes its status
(open, snoozed until a time, closed), tags it, writes internal notes and
replies as an agent. A widget session starts a support conversation with the
team (``POST /api/widget/support/conversations``) and then uses the ordinary
widget conversation API; it can call none of the staff routes, and nothing it
can call returns a note (``docs/authority.md``, "Internal notes").

With an API key the staff member is named in the body (``author_id`` of notes
and replies); a dashboard session acts as its own user (``staff``).
"""

from __future__ import annotations

import msgspec

from confab.contracts.base import PageLimit, StreamSeq, TimeCursor
from confab.contracts.identity import (
    ApiKeyPrincipal,
    Email,
    GetUser,
    Name,
    UpdateUser,
    User,
    UserPatch,
    UserSaved,
)
from confab.contracts.messaging import (
    Actor,
    Body,
    ClientMsgId,
    Content,
    Conversation,
    ConversationInput,
    ConversationSaved,
    CreateConversation,
    Id,
    Message,
    MessageInput,
    MessageSaved,
    PostMessage,
)
from confab.contracts.support import (
    AddNote,
    AgentRead,
    AgentReadInput,
    AgentTyping,
    AgentTypingInput,
    AssignInput,
    AssignSupport,
    AutoAssign,
    GetSupport,
    GetSupportSetup,
    InboxView,
    ListNotes,
    ListSupport,
    Note,
    NoteInput,
    NoteList,
    ReplyInput,
    ReplySupport,
    SetSupportStatus,
    StatusInput,
    SupportConversation,
    SupportConversationList,
    SupportSetup,
    Tag,
    TagsInput,
    TagSupport,
)
from confab.errors import Forbidden, InvalidRequest
from confab.support import STAFF_ROLES
from confab_gateway.api import Call, Result, Router

router = Router()

TAG = "support"
WRITE_ERRORS = (400, 401, 403, 404, 413, 415, 422)
VISITOR_PREFIX = "visitor:"  # the external_id of a visitor: the tenant has not identified them
VISITOR_NAME = "Visitor"  # a visitor's name until they give theirs
ROUND_ROBIN = "round-robin"  # the actor of automatic assignments
READ = "conversations.read"
REPLY = "conversations.reply"


def staff(call: Call) -> tuple[Actor, str | None]:
    """Who acts on the tenant's side, and the staff member it is (None: an API key).

    A dashboard session (a principal with a staff ``role``) acts for the workspace
    as its own user, named by its user id where an API key's id would be (the events'
    ``by``, as on every other route: ``Call.actor``); anything else acts as
    ``Call.actor`` (a widget session is then refused by messaging).
    """
    p = call.principal
    assert p is not None
    if isinstance(p, ApiKeyPrincipal):
        return call.actor, None
    user_id = getattr(p, "user_id", None)
    if getattr(p, "role", None) in STAFF_ROLES and isinstance(user_id, str):
        return Actor(workspace_id=p.workspace_id, key_id=user_id), user_id
    return call.actor, None


def _author(given: str | None, staff_user: str | None) -> str:
    author = given or staff_user
    if author is None:
        raise InvalidRequest(
            "Name the staff member who writes this.",
            {"author_id": "required with an API key: the user id of the staff member"},
        )
    return author


async def _change(
    call: Call, request: type[AssignSupport | SetSupportStatus | TagSupport]
) -> SupportConversation:
    """A staff change of a support conversation; its answer is the conversation now."""
    actor, me = staff(call)
    found: SupportConversation = await call.rpc.call(
        request(actor=actor, conversation_id=call.path["conversation_id"], by=me, input=call.body),
        correlation=call.correlation,
    )
    return found


class InboxQuery(msgspec.Struct, kw_only=True, frozen=True):
    view: InboxView = "all"
    assignee_id: Id | None = None
    tag: Tag | None = None
    cursor: TimeCursor | None = None
    limit: PageLimit = 50
    # The highest ``seq`` of the ``inbox.conversation`` frames a dashboard has had: the
    # answer waits (up to 2 s) until the inbox has applied it, so it shows that change.
    min_seq: StreamSeq = 0
    # The highest ``seq`` of its ``inbox.profile`` frames (a user's profile changed, in
    # identity's log): the answer waits likewise until the names shown have it.
    users_min_seq: StreamSeq = 0


class NotesQuery(msgspec.Struct, kw_only=True, frozen=True):
    after: StreamSeq = 0
    limit: PageLimit = 50


@router.route(
    "GET",
    "/api/v1/support/conversations",
    auth="api_key",
    tag=TAG,
    summary="An inbox view of support conversations, newest activity first, with the count "
    "of every view: unassigned (open, nobody assigned), mine (open, assigned to assignee_id), "
    "all (open or snoozed), snoozed, closed. A snooze past its time counts as open. "
    "min_seq (an inbox.conversation frame's seq): answer once that change is in; "
    "users_min_seq (an inbox.profile frame's seq): once that profile change is in.",
    query=InboxQuery,
    response=SupportConversationList,
    errors=(401, 403, 404, 422),
    permission=READ,
)
async def list_support(call: Call) -> SupportConversationList:
    q: InboxQuery = call.query
    actor, me = staff(call)
    assignee = q.assignee_id or (me if q.view == "mine" else None)
    return await call.rpc.call(
        ListSupport(
            actor=actor,
            view=q.view,
            assignee_id=assignee,
            tag=q.tag,
            cursor=q.cursor,
            limit=q.limit,
            min_seq=max(call.min_seq, q.min_seq),
            users_min_seq=q.users_min_seq,
        )
    )


@router.route(
    "GET",
    "/api/v1/support/conversations/{conversation_id}",
    auth="api_key",
    tag=TAG,
    summary="A support conversation: status, assignee, tags, response times and the conversation",
    response=SupportConversation,
    errors=(401, 403, 404),
    permission=READ,
)
async def get_support(call: Call) -> SupportConversation:
    actor, _ = staff(call)
    return await call.rpc.call(
        GetSupport(actor=actor, conversation_id=call.path["conversation_id"], min_seq=call.min_seq)
    )


@router.route(
    "POST",
    "/api/v1/support/conversations/{conversation_id}/assign",
    auth="api_key",
    tag=TAG,
    summary="Assign to a staff member (a user of the workspace), or unassign (null)",
    body=AssignInput,
    response=SupportConversation,
    errors=WRITE_ERRORS,
    permission=REPLY,
)
async def assign(call: Call) -> SupportConversation:
    return await _change(call, AssignSupport)


@router.route(
    "POST",
    "/api/v1/support/conversations/{conversation_id}/status",
    auth="api_key",
    tag=TAG,
    summary="Open (reopen), snooze until a time (it wakes by itself), or close",
    body=StatusInput,
    response=SupportConversation,
    errors=WRITE_ERRORS,
    permission=REPLY,
)
async def set_status(call: Call) -> SupportConversation:
    return await _change(call, SetSupportStatus)


@router.route(
    "PUT",
    "/api/v1/support/conversations/{conversation_id}/tags",
    auth="api_key",
    tag=TAG,
    summary="Set the tags (trimmed, lower-cased, de-duplicated; at most 20 of 1-50 characters)",
    body=TagsInput,
    response=SupportConversation,
    errors=WRITE_ERRORS,
    permission=REPLY,
)
async def set_tags(call: Call) -> SupportConversation:
    return await _change(call, TagSupport)


@router.route(
    "GET",
    "/api/v1/support/conversations/{conversation_id}/notes",
    auth="api_key",
    tag=TAG,
    summary="Internal notes, oldest first (staff only: never shown to the visitor)",
    query=NotesQuery,
    response=NoteList,
    errors=(401, 403, 404, 422),
    permission=READ,
)
async def list_notes(call: Call) -> NoteList:
    q: NotesQuery = call.query
    actor, _ = staff(call)
    return await call.rpc.call(
        ListNotes(
            actor=actor,
            conversation_id=call.path["conversation_id"],
            after=q.after,
            limit=q.limit,
            min_seq=call.min_seq,
        )
    )


@router.route(
    "POST",
    "/api/v1/support/conversations/{conversation_id}/notes",
    auth="api_key",
    tag=TAG,
    status=201,
    summary="Add an internal note (staff only: never in the visitor's REST, socket, "
    "/events or webhooks)",
    body=NoteInput,
    response=Note,
    errors=WRITE_ERRORS,
    permission=REPLY,
)
async def add_note(call: Call) -> Note:
    body: NoteInput = call.body
    actor, me = staff(call)
    note: Note = await call.rpc.call(
        AddNote(
            actor=actor,
            conversation_id=call.path["conversation_id"],
            by=me,
            author_id=_author(body.author_id, me),
            content=body.content,
        ),
        correlation=call.correlation,
    )
    return note


@router.route(
    "POST",
    "/api/v1/support/conversations/{conversation_id}/replies",
    auth="api_key",
    tag=TAG,
    status=201,
    summary="Reply as an agent: posted as the agent's own user, who joins the conversation "
    "if not a participant yet",
    body=ReplyInput,
    response=Message,
    errors=WRITE_ERRORS,
    permission=REPLY,
)
async def reply(call: Call) -> Message:
    body: ReplyInput = call.body
    actor, me = staff(call)
    saved: MessageSaved = await call.rpc.call(
        ReplySupport(
            actor=actor,
            conversation_id=call.path["conversation_id"],
            by=me,
            author_id=_author(body.author_id, me),
            input=body,
        ),
        correlation=call.correlation,
    )
    call.wrote(saved.stream_seq)
    return saved.message


@router.route(
    "POST",
    "/api/v1/support/conversations/{conversation_id}/read",
    auth="api_key",
    tag=TAG,
    status=204,
    summary='The agent has read up to seq (default: the latest): the visitor sees "Seen by" '
    "(the agent joins the conversation if not a participant yet)",
    body=AgentReadInput,
    errors=WRITE_ERRORS,
    permission=REPLY,
)
async def agent_read(call: Call) -> None:
    body: AgentReadInput = call.body
    actor, me = staff(call)
    author = _author(body.author_id, me)
    await call.write(
        AgentRead(
            actor=actor,
            conversation_id=call.path["conversation_id"],
            by=me,
            author_id=author,
            seq=body.seq,
        )
    )


@router.route(
    "POST",
    "/api/v1/support/conversations/{conversation_id}/typing",
    auth="api_key",
    tag=TAG,
    status=204,
    summary="The agent is typing, or stopped (not stored; the visitor's widget shows it)",
    body=AgentTypingInput,
    errors=WRITE_ERRORS,
    permission=REPLY,
)
async def agent_typing(call: Call) -> None:
    body: AgentTypingInput = call.body
    actor, me = staff(call)
    await call.rpc.call(
        AgentTyping(
            actor=actor,
            conversation_id=call.path["conversation_id"],
            by=me,
            author_id=_author(body.author_id, me),
            is_typing=body.is_typing,
        ),
        correlation=call.correlation,
    )


# -- the widget: "Send us a message" -----------------------------------------------------------


class StartSupportInput(Body, kw_only=True, frozen=True):
    content: Content
    client_msg_id: ClientMsgId | None = None
    # Pre-chat fields, for a visitor the tenant has not identified (settings say which).
    name: Name | None = None
    email: Email | None = None


@router.route(
    "POST",
    "/api/widget/support/conversations",
    auth="session",
    tag="widget",
    status=201,
    summary='Start a conversation with the workspace\'s team ("Send us a message"): a '
    "support conversation with the session's user and its first message",
    body=StartSupportInput,
    response=Conversation,
    errors=(400, 401, 403, 413, 415, 422),
)
async def start_support(call: Call) -> Result:
    body: StartSupportInput = call.body
    assert call.principal is not None
    setup: SupportSetup = await call.rpc.call(GetSupportSetup(workspace_id=call.workspace_id))
    if not setup.settings.enabled:
        raise Forbidden("This workspace does not take messages from the widget.")
    profile_seq = await prechat(call, setup, body.name, body.email)
    user_id = call.principal.user_id  # type: ignore[union-attr]
    conversation_input = ConversationInput(
        participant_ids=[user_id], type="support", title=setup.settings.team_name or None
    )
    # The staff's inbox shows the visitor by the name just given, from its first frame.
    saved: ConversationSaved = await call.rpc.call(
        CreateConversation(actor=call.actor, input=conversation_input, users_min_seq=profile_seq),
        correlation=call.correlation,
    )
    posted: MessageSaved = await call.rpc.call(
        PostMessage(
            actor=call.actor,
            conversation_id=saved.conversation.id,
            sender_id=user_id,
            input=MessageInput(content=body.content, client_msg_id=body.client_msg_id),
        ),
        correlation=call.correlation,
    )
    call.wrote(posted.stream_seq)
    await _round_robin(call, setup, saved.conversation.id)
    conversation = msgspec.structs.replace(
        saved.conversation, last_message=posted.message, last_seq=posted.message.seq
    )
    return Result(conversation, 201)


async def _round_robin(call: Call, setup: SupportSetup, conversation_id: str) -> None:
    """Assign a new support conversation among the agents online, when the workspace
    says so (``AutoAssign``: the one with the fewest open conversations)."""
    online = [a.user_id for a in setup.agents if a.status == "online"]
    if setup.settings.round_robin and online:
        await call.rpc.call(
            AutoAssign(
                actor=Actor(workspace_id=call.workspace_id, key_id=ROUND_ROBIN),
                conversation_id=conversation_id,
                candidates=online,
            ),
            correlation=call.correlation,
        )


async def prechat(call: Call, setup: SupportSetup, name: str | None, email: str | None) -> int:
    """The pre-chat fields of a visitor starting a support conversation: required ones
    checked, given ones saved on the visitor's profile (the IDENTITY sequence of that
    change, 0 if none). Users the tenant identified (any external id but a visitor's) are
    asked nothing."""
    assert call.principal is not None
    user: User = await call.rpc.call(
        GetUser(workspace_id=call.workspace_id, user_id=call.principal.user_id)  # type: ignore[union-attr]
    )
    if not user.external_id.startswith(VISITOR_PREFIX):
        return 0
    s = setup.settings
    known_name = user.name if user.name != VISITOR_NAME else None
    fields = (
        ("name", s.prechat_name, name or known_name),
        ("email", s.prechat_email, email or user.email),
    )
    missing = {
        f: "required by the workspace"
        for f, wanted, given in fields
        if wanted == "required" and not given
    }
    if missing:
        raise InvalidRequest("Please fill in the required fields.", missing)
    given = (("name", s.prechat_name, name), ("email", s.prechat_email, email))
    patch = {f: value for f, wanted, value in given if wanted != "off" and value}
    if not patch:
        return 0
    saved: UserSaved = await call.rpc.call(
        UpdateUser(
            workspace_id=call.workspace_id,
            user_id=user.id,
            patch=UserPatch(**patch),
            actor=user.id,
        ),
        correlation=call.correlation,
    )
    return saved.seq
