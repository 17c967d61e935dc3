"""Who may do what on NATS: one user per service, one for operators, and the permission
table the NATS server enforces.

Every rule below is a short note and the subjects it allows; `server_config` turns the
table into nats-server's `authorization` block (each user's password, publish and
subscribe allow-lists; anything not allowed is refused). Adding a subject is one line
in `PERMISSIONS`. The same table generates the authorization files in `deploy/`
(`python -m confab_infra.nats_auth deploy`), and a test fails if they drift.

What the table must keep true (tests/test_nats_permissions.py checks it against a real
server):
- only the owner of a stream appends to it: the fanout and the gateway cannot publish
  `conv.evt.…`, `identity.evt.…` or `media.evt.…`, nor change a stream's configuration;
- only identity and messaging write users' data keys (`CONFAB_KEYS`, see
  `confab.personal`); the fanout and webhooks read them; the gateway and media cannot
  read them;
- replies are private: each user subscribes only to its own inbox prefix `_INBOX.<user>`
  (`confab.bus` connects with that prefix), and answers a request only on its reply
  subject (`allow_responses`: once, within two minutes);
- `admin` (the `confab` command line, tests, benchmarks) may do everything.

Credentials: `Credentials.load_or_create` keeps one generated password per user (and
one for the routes between clustered servers) in a JSON file readable only by its owner.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confab_infra.s3 import write_private

__all__ = [
    "ADMIN",
    "PERMISSIONS",
    "ROUTE_USER",
    "Credentials",
    "Rule",
    "allowed",
    "deploy_config",
    "grouped",
    "helm_values",
    "inbox_prefix",
    "password_variable",
    "secret_key",
    "server_config",
]

ADMIN = "admin"
ROUTE_USER = "route"  # what clustered servers authenticate to each other as
API = "$JS.API"


def inbox_prefix(user: str) -> str:
    """Where `user`'s replies arrive (`confab.bus.inbox_prefix` is the same rule)."""
    return f"_INBOX.{user}"


@dataclass(frozen=True)
class Rule:
    """Subjects one user may publish to and subscribe to, and why."""

    note: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


# -- building blocks: what a kind of use needs on the wire ------------------------------------


def publish(note: str, *subjects: str) -> Rule:
    return Rule(note, publish=subjects)


def subscribe(note: str, *subjects: str) -> Rule:
    return Rule(note, subscribe=subjects)


def serves(service: str) -> Rule:
    """Answers `<service>.cmd.*` and `<service>.q.*` (health included) in its queue group."""
    return subscribe(
        f"answers its commands and queries (and health) as queue group {service}",
        f"{service}.cmd.*",
        f"{service}.q.*",
    )


def queries(note: str, *services: str) -> Rule:
    """Asks other services' queries (`<service>.q.*`), which change nothing."""
    return publish(note, *(f"{s}.q.*" for s in services))


def requests(note: str, *services: str) -> Rule:
    """Sends other services' commands and queries."""
    return publish(note, *(f"{s}.{kind}.*" for s in services for kind in ("cmd", "q")))


def owns_stream(stream: str, subjects: str, note: str) -> Rule:
    """Declares the stream (create, update its configuration) and appends events to it."""
    return publish(
        note,
        f"{API}.STREAM.CREATE.{stream}",
        f"{API}.STREAM.UPDATE.{stream}",
        f"{API}.STREAM.INFO.{stream}",
        subjects,
    )


def declares_stream(stream: str, note: str) -> Rule:
    """Creates the stream if missing (a create never changes an existing stream)."""
    return publish(note, f"{API}.STREAM.CREATE.{stream}", f"{API}.STREAM.INFO.{stream}")


def reads_stream(stream: str, note: str) -> Rule:
    """Reads stored messages by sequence or subject: direct gets (batched or last-by-
    subject) and the leader's message get."""
    return publish(
        note,
        f"{API}.STREAM.INFO.{stream}",
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"{API}.STREAM.MSG.GET.{stream}",
    )


def consumes_stream(stream: str, note: str) -> Rule:
    """Creates, reads through and removes its consumers on the stream (pull or push),
    and acknowledges what they deliver."""
    return publish(
        note,
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"{API}.CONSUMER.INFO.{stream}.*",
        f"{API}.CONSUMER.DELETE.{stream}.*",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


def follows_authority() -> tuple[Rule, ...]:
    """`confab.authority.Follower`: a push consumer of its own on IDENTITY, from its end."""
    note = "applies bans, erasures and revocations before identity replies"
    return (
        publish(
            f"{note}: where IDENTITY ends, found by subject",
            f"{API}.STREAM.INFO.IDENTITY",
            f"{API}.STREAM.NAMES",
        ),
        consumes_stream("IDENTITY", f"{note}: its consumer"),
    )


def key_value(bucket: str, note: str, *, write: bool) -> tuple[Rule, ...]:
    """A KV bucket: created if missing, read (gets, watchers, change notices); written
    (put, delete, purge) only with `write`."""
    stream = f"KV_{bucket}"
    rules = (
        declares_stream(stream, f"{note}: create the bucket if missing"),
        reads_stream(stream, f"{note}: read entries"),
        consumes_stream(stream, f"{note}: watch the bucket"),
        subscribe(f"{note}: follow changes", f"$KV.{bucket}.>"),
    )
    if write:
        rules += (
            publish(f"{note}: write entries", f"$KV.{bucket}.>"),
            publish(f"{note}: purge old entries", f"{API}.STREAM.PURGE.{stream}"),
        )
    return rules


def object_store(bucket: str, note: str) -> tuple[Rule, ...]:
    """An object store: created if missing, objects written, read and deleted."""
    stream = f"OBJ_{bucket}"
    return (
        declares_stream(stream, f"{note}: create the store if missing"),
        reads_stream(stream, f"{note}: read object metadata"),
        consumes_stream(stream, f"{note}: read objects' chunks"),
        publish(f"{note}: write chunks and metadata", f"$O.{bucket}.>"),
        publish(f"{note}: drop a deleted or half-written object", f"{API}.STREAM.PURGE.{stream}"),
    )


# -- the table ---------------------------------------------------------------------------------

KEYS = "CONFAB_KEYS"  # confab.personal.BUCKET
UPLOADS = "uploads"  # confab.contracts.media.UPLOADS_BUCKET
NODES = ("fanout.bcast.*", "fanout.terminate.*")  # confab_fanout.cluster

PERMISSIONS: dict[str, tuple[Rule, ...]] = {
    "identity": (
        serves("identity"),
        owns_stream("IDENTITY", "identity.evt.>", "writes workspaces, keys, users, sessions"),
        reads_stream("IDENTITY", "loads aggregates before deciding"),
        consumes_stream("IDENTITY", "feeds the identity read model"),
        publish("waits for every authority follower (fence)", f"{API}.CONSUMER.LIST.IDENTITY"),
        *key_value(KEYS, "seals users' personal fields; purges a key to erase a user", write=True),
    ),
    "messaging": (
        serves("messaging"),
        owns_stream("CONVERSATIONS", "conv.evt.>", "writes conversation events"),
        reads_stream("CONVERSATIONS", "loads conversations before deciding; the last sequence"),
        consumes_stream("CONVERSATIONS", "feeds the conversations read model"),
        publish(
            "waits for every copy's follower of the workspace settings (fence)",
            f"{API}.CONSUMER.LIST.CONVERSATIONS",
        ),
        reads_stream("IDENTITY", "waits for a user's last identity event"),
        consumes_stream("IDENTITY", "feeds the users read model"),
        *follows_authority(),
        *key_value(KEYS, "seals message content with the author's key", write=True),
        queries("attachments of messages", "media"),
        publish("hands a message's first link to media for its preview", "media.cmd.fetch_preview"),
        publish("typing signals for the fanout (not stored)", "ephemeral.*.*.typing"),
    ),
    "media": (
        serves("media"),
        owns_stream("MEDIA", "media.evt.>", "writes attachment events"),
        reads_stream("MEDIA", "loads attachments before deciding"),
        consumes_stream("MEDIA", "feeds the attachments read model"),
        declares_stream("CONVERSATIONS", "follows it, so creates it if it starts first"),
        consumes_stream("CONVERSATIONS", "links attachments to messages, deletes them with theirs"),
        reads_stream("CONVERSATIONS", "waits for the links up to a conversation's last event"),
        consumes_stream("IDENTITY", "deletes the files of erased users"),
        *object_store(UPLOADS, "takes uploads the gateway stored, deletes them when done"),
        publish("finds the uploads stream by subject (object reads)", f"{API}.STREAM.NAMES"),
        *key_value("media_ingests", "remembers ingests in flight", write=True),
        publish("attaches a fetched link preview to its message", "messaging.cmd.attach_preview"),
    ),
    "fanout": (
        serves("fanout"),
        subscribe("stored conversation events, re-published by the stream", "live.conv.evt.>"),
        subscribe("workspaces (app keys) and users (profiles)", "live.identity.evt.>"),
        subscribe("typing signals", "ephemeral.*.*.typing"),
        reads_stream("CONVERSATIONS", "views, gaps and resumes from the log (direct gets)"),
        *follows_authority(),
        queries("app credentials and users", "identity"),
        Rule("client events and terminations between nodes", NODES, NODES),
        *key_value("presence", "channel occupancy and members across nodes", write=True),
        publish("presence: does the server expire single keys? (account info)", f"{API}.INFO"),
        *key_value("webhooks", "each workspace's webhook configuration", write=True),
        *key_value(KEYS, "reveals users' names in events (never writes keys)", write=False),
    ),
    "webhooks": (
        serves("webhooks"),
        owns_stream("WEBHOOKS", "webhooks.evt.>", "writes tenants' webhook endpoints"),
        reads_stream("WEBHOOKS", "loads endpoints before deciding"),
        consumes_stream("WEBHOOKS", "feeds the endpoints read model"),
        *(
            rule
            for stream in ("CONVERSATIONS", "IDENTITY", "MEDIA", "NOTIFIER")
            for rule in (
                declares_stream(stream, "follows it, so creates it if it starts first"),
                consumes_stream(stream, "queues a delivery for each event an endpoint wants"),
                reads_stream(stream, "renders payloads from the log as it is when sent"),
            )
        ),
        subscribe("a user's profile changed: read it again", "live.identity.evt.*.user.*"),
        *follows_authority(),
        *key_value(KEYS, "reveals message text and profiles (never writes keys)", write=False),
    ),
    "notifier": (
        serves("notifier"),
        owns_stream("NOTIFIER", "notify.evt.>", "writes preferences, settings, decisions"),
        reads_stream("NOTIFIER", "the last event of a user's preferences before a change"),
        consumes_stream("NOTIFIER", "feeds the preferences and settings read model"),
        *(
            rule
            for stream in ("CONVERSATIONS", "IDENTITY")
            for rule in (
                declares_stream(stream, "follows it, so creates it if it starts first"),
                consumes_stream(stream, "folds members, messages, reads and users"),
                reads_stream(stream, "where the stream ends (waits for a new user)"),
            )
        ),
        *key_value("presence", "which users have a socket on a conversation", write=False),
        *key_value(
            KEYS, "reveals addresses, names and message text (never writes keys)", write=False
        ),
        *key_value("NOTIFIER", "the deployment's unsubscribe signing key", write=True),
    ),
    "gateway": (
        serves("gateway"),
        requests(
            "each API request goes to its service",
            "identity",
            "messaging",
            "media",
            "fanout",
            "webhooks",
            "notifier",
        ),
        *follows_authority(),
        *object_store(UPLOADS, "streams uploads into the temporary store"),
        *key_value("idempotency", "Idempotency-Key answers, shared by every copy", write=True),
    ),
    ADMIN: (Rule("operators: the confab command line, tests, benchmarks", (">",), (">",)),),
}


Groups = list[tuple[str, list[str]]]  # (note, subjects not allowed by an earlier rule)


def grouped(user: str) -> tuple[Groups, Groups]:
    """`user`'s publish and subscribe allow-lists, rule by rule, with its own inbox first."""
    rules = PERMISSIONS[user]
    if not any(">" in rule.subscribe for rule in rules):
        rules = (subscribe("its own replies", f"{inbox_prefix(user)}.>"), *rules)
    lists: tuple[Groups, Groups] = ([], [])
    for rule in rules:
        for groups, subjects in zip(lists, (rule.publish, rule.subscribe), strict=True):
            seen = {s for _, listed in groups for s in listed}
            fresh = [s for s in dict.fromkeys(subjects) if s not in seen]
            if fresh:
                groups.append((rule.note, fresh))
    return lists


def allowed(user: str) -> tuple[list[str], list[str]]:
    """`user`'s publish and subscribe allow-lists."""
    pub, sub = grouped(user)
    return [s for _, g in pub for s in g], [s for _, g in sub for s in g]


# -- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A password for every user of the table, and one for routes between servers."""

    passwords: Mapping[str, str]
    route_password: str = ""
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        """The credentials in `path` (`{"users": {user: password}, "route": password}`);
        ValueError with one plain line if it is missing or malformed."""
        try:
            saved = json.loads(path.read_text())
            passwords = {str(u): str(p) for u, p in dict(saved["users"]).items() if p}
            return cls(passwords, str(saved.get("route") or ""), path)
        except OSError as exc:
            raise ValueError(f"cannot read NATS credentials {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{path} is not a NATS credentials file") from None

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """The credentials kept in `path`, created readable only by us if missing; users
        added to the table since it was written get passwords."""
        found = cls.load(path) if path.exists() else cls({}, "", path)
        passwords = dict(found.passwords)
        missing = [user for user in PERMISSIONS if user not in passwords]
        for user in missing:
            passwords[user] = _secret()
        route = found.route_password or _secret()
        if missing or route != found.route_password:
            write_private(path, {"users": passwords, "route": route})
        return cls(passwords, route, path)

    def password(self, user: str) -> str:
        try:
            return self.passwords[user]
        except KeyError:
            where = f" in {self.path}" if self.path else ""
            raise ValueError(f"no NATS password for user {user!r}{where}") from None

    def environment(self, user: str) -> dict[str, str]:
        """The settings that make a service connect as `user` (`confab.settings`)."""
        return {"CONFAB_NATS_USER": user, "CONFAB_NATS_PASSWORD": self.password(user)}

    def url(self, url: str, user: str = ADMIN) -> str:
        """`url` (one or several, comma-separated) with `user`'s credentials in each,
        instead of any it had."""
        auth = f"{user}:{self.password(user)}@"
        out = []
        for part in (u.strip() for u in url.split(",") if u.strip()):
            scheme, _, rest = part.partition("://")
            host, slash, path = rest.partition("/")
            out.append(f"{scheme}://{auth}{host.rpartition('@')[2]}{slash}{path}")
        return ",".join(out)


def _secret() -> str:
    return secrets.token_urlsafe(24)  # URL- and config-safe: letters, digits, - and _


# -- nats-server configuration -----------------------------------------------------------------


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid nats-server config string


def _users(passwords: Mapping[str, str]) -> list[str]:
    lines = ["authorization {", "  users = ["]
    for user in PERMISSIONS:
        lines += ["    {", f"      user: {_quote(user)}", f"      password: {passwords[user]}"]
        lines.append("      permissions: {")
        for kind, groups in zip(("publish", "subscribe"), grouped(user), strict=True):
            lines.append(f"        {kind}: {{allow: [")
            for note, subjects in groups:
                lines.append(f"          # {note}")
                lines += [f"          {_quote(s)}" for s in subjects]
            lines.append("        ]}")
        if user != ADMIN:
            lines.append(
                "        # Answers a request on its reply subject: once, within 2 minutes."
            )
            lines.append("        allow_responses: true")
        lines += ["      }", "    }"]
    lines += ["  ]", "}"]
    return lines


def server_config(credentials: Credentials) -> str:
    """The `authorization` block of an embedded server, with the generated passwords."""
    passwords = {u: _quote(credentials.password(u)) for u in PERMISSIONS}
    return "\n".join(_users(passwords)) + "\n"


def password_variable(user: str) -> str:
    """The environment variable that holds `user`'s password in `deploy/`."""
    return f"CONFAB_NATS_{user.upper()}_PASSWORD"


def deploy_config() -> str:
    """`deploy/nats/auth.conf`: the same table, passwords read from the server's
    environment (`$CONFAB_NATS_<USER>_PASSWORD`), so nothing secret is in the repository."""
    passwords = {u: f"${password_variable(u)}" for u in PERMISSIONS}
    head = [
        "# Generated from infra/confab_infra/nats_auth.py by",
        "#   python -m confab_infra.nats_auth deploy > deploy/nats/auth.conf",
        "# Do not edit: change the table there. Each password comes from the server's",
        "# environment; see deploy/README.md (NATS security).",
    ]
    return "\n".join([*head, *_users(passwords)]) + "\n"


def secret_key(user: str) -> str:
    """The key of `user`'s password in the Kubernetes Secret `confab-secrets`."""
    return f"nats-{user}-password"


def helm_values() -> str:
    """`deploy/k8s/nats-auth-values.yaml`: values for the NATS Helm chart that include
    `deploy/nats/auth.conf` and give the servers every password from `confab-secrets`."""
    lines = [
        "# Generated from infra/confab_infra/nats_auth.py by",
        "#   python -m confab_infra.nats_auth helm > deploy/k8s/nats-auth-values.yaml",
        "# Do not edit. The second values file of the NATS release (deploy/README.md): every",
        "# client logs in as a user of deploy/nats/auth.conf, passwords from confab-secrets.",
        "config:",
        "  merge:",
        "    00$include: auth.conf",
        "configMap:",
        "  merge:",
        "    data:",
        "      auth.conf: |",
        *(f"        {line}" if line else "" for line in deploy_config().splitlines()),
        "container:",
        "  env:",
    ]
    for user in PERMISSIONS:
        ref = f"{{name: confab-secrets, key: {secret_key(user)}}}"
        lines += [f"    {password_variable(user)}:", f"      valueFrom: {{secretKeyRef: {ref}}}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["deploy"]:
        sys.stdout.write(deploy_config())
        return 0
    if argv == ["helm"]:
        sys.stdout.write(helm_values())
        return 0
    if argv == ["passwords"]:
        for user in (*PERMISSIONS, ROUTE_USER):
            print(f"{password_variable(user)}={_secret()}")
        return 0
    print(
        "usage: python -m confab_infra.nats_auth deploy      # deploy/nats/auth.conf\n"
        "       python -m confab_infra.nats_auth helm        # deploy/k8s/nats-auth-values.yaml\n"
        "       python -m confab_infra.nats_auth passwords   # fresh passwords, as an env file",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
