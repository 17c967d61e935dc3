"""Presence deduplication, cluster view, local channel registry, rate limiter (pure)."""

from __future__ import annotations

from confab_fanout.channels import ChannelRegistry
from confab_fanout.limits import TokenBucket
from confab_fanout.presence import (
    MEMBER_ADDED,
    MEMBER_REMOVED,
    OCCUPIED,
    VACATED,
    Change,
    ClusterView,
    count_key,
    diff,
    member_key,
    node_key,
)
from confab_fanout.protocol import Kind

A, B = "100", "200"
INFO = b'{"name":"A"}'


class FakeSocket:
    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.kind, c.user_id) for c in changes]


# -- local registry --------------------------------------------------------------------------


def test_local_members_are_deduplicated_across_tabs() -> None:
    registry = ChannelRegistry()
    tab1, tab2, other = FakeSocket("1.1"), FakeSocket("1.2"), FakeSocket("1.3")
    first = registry.join("app", "presence-r", Kind.PRESENCE, tab1, "u1", INFO)
    assert first is not None and first.first_socket and first.first_of_user
    second = registry.join("app", "presence-r", Kind.PRESENCE, tab2, "u1", INFO)
    assert second is not None and not second.first_socket and not second.first_of_user
    assert registry.join("app", "presence-r", Kind.PRESENCE, tab2, "u1", INFO) is None
    third = registry.join("app", "presence-r", Kind.PRESENCE, other, "u2", b"null")
    assert third is not None and third.first_of_user

    left = registry.leave("app", "presence-r", tab1)
    assert left is not None and not left.last_of_user and not left.last_socket
    left = registry.leave("app", "presence-r", tab2)
    assert left is not None and left.last_of_user and left.user_id == "u1"
    assert registry.leave("app", "presence-r", tab2) is None
    left = registry.leave("app", "presence-r", other)
    assert left is not None and left.last_socket and left.last_of_user
    assert registry.get("app", "presence-r") is None and registry.apps == {}


def test_delivery_skips_the_excluded_socket_and_same_user() -> None:
    registry = ChannelRegistry()
    s1, s2, s3 = FakeSocket("1.1"), FakeSocket("1.2"), FakeSocket("2.1")
    for sock, user in ((s1, "a"), (s2, "a"), (s3, "b")):
        registry.join("app", "presence-r", Kind.PRESENCE, sock, user)
    channel = registry.get("app", "presence-r")
    assert channel is not None
    assert channel.send_all(b"x") == 3
    assert channel.send_all(b"y", exclude="1.2") == 2
    assert channel.send_others(b"z", "a") == 1
    assert [s.frames for s in (s1, s2, s3)] == [[b"x", b"y"], [b"x"], [b"x", b"y", b"z"]]


# -- the cluster view --------------------------------------------------------------------------


def test_member_added_and_removed_only_on_first_and_last_connection_cluster_wide() -> None:
    view = ClusterView()
    assert view.apply(node_key(A), b"{}") == []
    assert view.apply(node_key(B), b"{}") == []
    added = view.apply(member_key("app", "presence-r", "u1", A), INFO)
    assert kinds(added) == [(MEMBER_ADDED, "u1")] and added[0].node == A
    assert added[0].user_info == INFO
    # The same user on another node: nobody is told.
    assert view.apply(member_key("app", "presence-r", "u1", B), INFO) == []
    assert view.user_count("app", "presence-r") == 1
    # A put repeated (a refresh) changes nothing.
    assert view.apply(member_key("app", "presence-r", "u1", B), INFO) == []
    assert view.apply(member_key("app", "presence-r", "u1", A), None) == []
    removed = view.apply(member_key("app", "presence-r", "u1", B), None)
    assert kinds(removed) == [(MEMBER_REMOVED, "u1")] and removed[0].node == B
    assert view.user_count("app", "presence-r") == 0
    assert view.presence == {}
    # Deleting what is not there is nothing.
    assert view.apply(member_key("app", "presence-r", "u1", B), None) == []


def test_occupied_and_vacated_cluster_wide() -> None:
    view = ClusterView()
    view.apply(node_key(A), b"{}")
    view.apply(node_key(B), b"{}")
    assert [c.kind for c in view.apply(count_key("app", "ch;1", A), b"2")] == [OCCUPIED]
    assert view.apply(count_key("app", "ch;1", B), b"3") == []
    assert view.apply(count_key("app", "ch;1", A), b"1") == []
    assert view.subscription_count("app", "ch;1") == 4
    assert view.apply(count_key("app", "ch;1", A), None) == []
    vacated = view.apply(count_key("app", "ch;1", B), None)
    assert [(c.kind, c.node) for c in vacated] == [(VACATED, B)]
    assert view.channels("app") == {}


def test_a_dead_nodes_members_vanish_and_a_late_heartbeat_brings_them_back() -> None:
    view = ClusterView()
    for node in (A, B):
        view.apply(node_key(node), b"{}")
    view.apply(member_key("app", "presence-r", "u1", A), INFO)
    view.apply(member_key("app", "presence-r", "u2", B), b"null")
    view.apply(member_key("app", "presence-r", "u3", A), b"null")
    view.apply(member_key("app", "presence-r", "u3", B), b"null")
    view.apply(count_key("app", "presence-r", B), b"2")
    view.apply(count_key("app", "presence-r", A), b"2")
    assert view.leader() == A

    gone = view.apply(node_key(A), None)  # A's heartbeat expired
    assert sorted(kinds(gone)) == [(MEMBER_REMOVED, "u1")]
    assert all(c.node == "" for c in gone)
    assert set(view.members("app", "presence-r")) == {"u2", "u3"}
    assert view.subscription_count("app", "presence-r") == 2
    assert view.leader() == B

    # Entries written by a node without heartbeat do not count ...
    assert view.apply(member_key("app", "presence-r", "u9", A), b"null") == []
    assert view.dead_nodes() == {A}
    # ... until its heartbeat comes back.
    back = view.apply(node_key(A), b"{}")
    assert kinds(back) == [(MEMBER_ADDED, "u9")]
    assert view.dead_nodes() == set()


def test_entries_loaded_before_their_heartbeat_count_once_it_arrives() -> None:
    view = ClusterView()
    assert view.apply(member_key("app", "presence-r", "u1", A), INFO) == []
    assert view.apply(count_key("app", "presence-r", A), b"1") == []
    assert view.user_count("app", "presence-r") == 0
    up = view.apply(node_key(A), b"{}")
    assert sorted(c.kind for c in up) == sorted([MEMBER_ADDED, OCCUPIED])


def test_user_ids_and_channels_with_any_characters_round_trip() -> None:
    view = ClusterView()
    view.apply(node_key(A), b"{}")
    user, channel = "ann@example.com/é.x", "presence-a;b=c@d,e.f"
    changes = view.apply(member_key("app", channel, user, A), b"{}")
    assert [(c.channel, c.user_id) for c in changes] == [(channel, user)]
    assert view.apply("m.not.a.valid.key.at.all", b"x") == []
    assert view.apply("c.app.%%%.1", b"x") == []


def test_diff_after_a_reload() -> None:
    old, new = ClusterView(), ClusterView()
    for view in (old, new):
        view.apply(node_key(A), b"{}")
    old.apply(member_key("app", "presence-r", "gone", A), b"null")
    old.apply(member_key("app", "presence-r", "kept", A), b"null")
    new.apply(member_key("app", "presence-r", "kept", A), b"null")
    new.apply(member_key("app", "presence-r", "new", A), b"null")
    new.apply(count_key("app", "presence-r", A), b"1")
    changes = diff(old, new)
    assert sorted((c.kind, c.user_id) for c in changes) == [
        (OCCUPIED, ""),
        (MEMBER_ADDED, "new"),
        (MEMBER_REMOVED, "gone"),
    ]


# -- client event rate limit -----------------------------------------------------------------


def test_token_bucket_allows_ten_per_second() -> None:
    bucket = TokenBucket(10.0, now=100.0)
    assert [bucket.take(100.0) for _ in range(11)] == [True] * 10 + [False]
    assert not bucket.take(100.0625)  # 0.625 of a token back
    assert bucket.take(100.25)  # 2.5 tokens back after 0.25 s
    assert bucket.take(100.25)
    assert not bucket.take(100.25)
    assert sum(bucket.take(102.0) for _ in range(20)) == 10  # never more than the burst
