"""The media decider and its rules: policies, file names, keys; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from confab.contracts.events.media import AttachmentAttached, AttachmentDeleted, AttachmentStored
from confab.errors import Conflict, InvalidRequest
from confab_media import domain
from confab_media.domain import TYPES, Policy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PNG, TEXT, PDF = TYPES["image/png"], TYPES["text/plain"], TYPES["application/pdf"]


def stored(attachment_id: str = "att_1") -> AttachmentStored:
    return AttachmentStored(
        workspace_id="ws_1",
        attachment_id=attachment_id,
        conversation_id="conv_1",
        uploader_id="usr_1",
        filename="a.png",
        content_type="image/png",
        size=10,
        key=domain.object_key("ws_1", attachment_id, "png"),
        sha256="00",
        at=T0,
    )


def decide(state: domain.AttachmentState, command: domain.Command) -> Any:
    """The one event ``command`` appends, or None when it changes nothing."""
    decision = domain.decide(command, state)
    assert len(decision.events) <= 1 and decision.result is None
    return decision.events[0] if decision.events else None


def store(state: domain.AttachmentState) -> AttachmentStored | None:
    return decide(state, domain.StoreAttachment(stored=stored()))


def delete(state: domain.AttachmentState) -> AttachmentDeleted | None:
    command = domain.Delete(
        workspace_id="ws_1",
        attachment_id="att_1",
        reason="message_deleted",
        message_id="msg_1",
        now=T0,
    )
    return decide(state, command)


def test_an_attachment_is_stored_once_and_deleted_once() -> None:
    state = domain.initial()
    assert delete(state) is None  # never stored: nothing to delete
    event = store(state)
    assert event == stored()
    state = domain.evolve(state, event)
    assert state.exists
    assert store(state) is None  # a retried ingest
    gone = delete(state)
    assert gone is not None and gone.message_id == "msg_1"
    state = domain.evolve(state, gone)
    assert not state.exists and delete(state) is None
    with pytest.raises(Conflict):
        store(state)
    # Folding an event twice changes nothing.
    assert domain.evolve(state, event) == state and domain.evolve(state, gone) == state


def attach(
    state: domain.AttachmentState,
    conversation_id: str = "conv_1",
    sender_id: str | None = "usr_1",
    message_id: str = "msg_1",
) -> AttachmentAttached | None:
    command = domain.Attach(
        conversation_id=conversation_id, sender_id=sender_id, message_id=message_id, now=T0
    )
    return decide(state, command)


def test_an_upload_is_attached_once_by_its_uploaders_message_in_its_conversation() -> None:
    assert attach(domain.initial()) is None  # never stored
    state = domain.evolve(domain.initial(), stored())
    assert attach(state, conversation_id="conv_2") is None
    assert attach(state, sender_id="usr_2") is None
    assert attach(state, sender_id=None) is None  # a system message claims nobody's upload
    event = attach(state)
    assert event is not None and (event.message_id, event.conversation_id) == ("msg_1", "conv_1")
    state = domain.evolve(state, event)
    assert state.attached == event and state.exists
    assert attach(state, message_id="msg_2") is None  # once
    assert domain.evolve(state, event) == state
    gone = delete(state)
    assert gone is not None
    assert attach(domain.evolve(domain.evolve(domain.initial(), stored()), gone)) is None


def expire(state: domain.AttachmentState, now: datetime, ttl: timedelta) -> Any:
    return decide(state, domain.Expire(now=now, ttl=ttl))


def test_only_an_unattached_upload_past_its_ttl_expires() -> None:
    ttl = timedelta(hours=1)
    state = domain.evolve(domain.initial(), stored())  # stored at T0
    assert expire(state, T0 + ttl, ttl) is None  # not older than ttl
    expired = expire(state, T0 + ttl + timedelta(seconds=1), ttl)
    assert isinstance(expired, AttachmentDeleted) and expired.reason == "upload_expired"
    assert expired.attachment_id == "att_1" and expired.message_id is None
    later = T0 + 2 * ttl
    attached = attach(state)
    assert attached is not None
    assert expire(domain.evolve(state, attached), later, ttl) is None
    deleted = domain.evolve(state, expired)
    assert expire(deleted, later, ttl) is None  # once
    assert expire(domain.initial(), later, ttl) is None


def test_a_command_of_another_decider_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        domain.decide("store", domain.initial())  # type: ignore[arg-type]


def test_only_reencoded_images_are_served_inline() -> None:
    assert domain.served_inline("image/png", reencoded=True)
    assert not domain.served_inline("image/png", reencoded=False)  # stored by an older build
    for mime in ("application/pdf", "text/plain", "video/mp4", "image/svg+xml"):
        assert not domain.served_inline(mime, reencoded=True)
    assert domain.served_type("text/plain") == "text/plain; charset=utf-8"
    assert domain.served_type("application/pdf") == "application/pdf"


def test_policies_default_and_per_workspace() -> None:
    default = Policy()
    assert default.max_bytes == 25 * 1024 * 1024
    assert all(default.allows(t) for t in ("image/png", "application/pdf", "text/plain"))
    assert not default.allows("application/x-msdownload")
    overrides = domain.parse_policies(
        '{"ws_small": {"max_bytes": 1000, "allowed_types": ["image/*"]}, "ws_big": '
        '{"max_bytes": 99999999}}',
        default,
    )
    small = domain.policy_for("ws_small", default, overrides)
    assert (small.max_bytes, small.allows("image/webp"), small.allows("application/pdf")) == (
        1000,
        True,
        False,
    )
    big = domain.policy_for("ws_big", default, overrides)
    assert big.max_bytes == 99999999 and big.allowed == default.allowed
    assert domain.policy_for("ws_other", default, overrides) is default
    assert domain.parse_types(" image/png, text/* ") == ("image/png", "text/*")
    assert domain.parse_types("") == domain.DEFAULT_ALLOWED
    for bad in ('{"ws": {"max_bytes": 0}}', '{"ws": {"nope": 1}}', "[1]", "{"):
        with pytest.raises(ValueError):
            domain.parse_policies(bad, default)


@pytest.mark.parametrize(
    ("raw", "kind", "kept"),
    [
        ("photo.png", PNG, "photo.png"),
        ("  holiday   photo .png ", PNG, "holiday photo .png"),
        ("Café.PNG", PNG, "Café.PNG"),
        ("report", PDF, "report.pdf"),
        ("notes.html", TEXT, "notes.html.txt"),  # never served under a misleading extension
        ("data.csv", TEXT, "data.csv"),
        ("what?.png", PNG, "what_.png"),
        (".env", TEXT, "env.txt"),
        (None, PDF, "file.pdf"),
        ("", PDF, "file.pdf"),
        ("é" * 300 + ".png", PNG, "é" * 125 + ".png"),
    ],
)
def test_filenames_are_kept_safe_for_display_and_download(
    raw: str | None, kind: domain.FileType, kept: str
) -> None:
    name = domain.sanitize_filename(raw, kind)
    assert name == kept
    assert len(name.encode()) <= 255


@pytest.mark.parametrize(
    "raw",
    [
        *("../x.png", "a/b.png", "C:\\x\\y.png", "a\x00.png", "bell\x07.png", "new\nline.png"),
        *("..", ".", "x\u202egnp.exe", "tab\t.png", "trailing\n"),
    ],
)
def test_names_with_paths_or_control_characters_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        domain.sanitize_filename(raw, PNG)
    assert set(err.value.details) == {"filename"}


def test_keys_and_disposition() -> None:
    assert domain.object_key("ws_1", "att_1", "png") == "workspaces/ws_1/attachments/att_1.png"
    thumb = domain.thumbnail_key("ws_1", "att_1", "jpg")
    assert thumb.startswith(domain.attachment_prefix("ws_1", "att_1"))
    assert not domain.object_key("ws_1", "att_10", "png").startswith(
        domain.attachment_prefix("ws_1", "att_1")
    )
    header = domain.content_disposition('Straße "1".pdf', inline=False)
    assert header.startswith('attachment; filename="Strae _1_.pdf"') or header.startswith(
        'attachment; filename="Strasse'
    )
    assert "filename*=UTF-8''Stra%C3%9Fe%20%221%22.pdf" in header
    assert domain.content_disposition("a.png", inline=True).startswith("inline;")
    assert domain.deletable(["a", "a", "", None, "b"]) == ["a", "b"]
