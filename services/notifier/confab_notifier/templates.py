"""Email templates: the defaults in every language the widget has, a workspace's own, and
rendering them safely.

Templates are Jinja in its sandbox (``jinja2.sandbox``: no attribute access to Python
internals, no imports, no file system); the HTML part is autoescaped, so a sender's name
or a message's text can never become markup. The subject and plain-text part are not
HTML and are rendered without escaping; a subject is one line.

A tenant's template is code the tenant wrote, so it is rendered in a process of its own
(``Renderer``): the sandbox keeps it from Python's internals, but not from looping or
allocating without end (``{% for a in x %}{% for b in x %}…``, ``"x" * 10**9``,
``|center(10**9)``); the worker has a memory limit and each rendering a time limit, and a
worker past either is killed and replaced, and the rendering refused. The defaults are
this module's own and are rendered in process.

What a template sees (all plain values): ``recipient`` (the user's name), ``sender_name``
(the workspace's), ``conversation`` (its title, or ""), ``count`` (unread messages),
``messages`` (the latest few: each ``author`` and ``text``), ``mentioned``, ``link``
(back into the conversation, or ""), ``unsubscribe_url``.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from dataclasses import dataclass
from typing import Any

import msgspec
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from confab.contracts.events.notifier import Template
from confab.errors import InvalidRequest

MAX_SUBJECT = 500
MAX_BODY = 50_000
LANGUAGES = ("en", "de", "fr", "es", "pt", "ar")

_HTML_FRAME = """<!doctype html>
<html lang="{lang}" dir="{dir}"><body style="font-family:sans-serif;line-height:1.4">
<p>{greeting}</p>
<p>{intro}</p>
{{% for m in messages %}}<blockquote><b>{{{{ m.author }}}}</b>: {{{{ m.text }}}}</blockquote>
{{% endfor %}}{{% if link %}}<p><a href="{{{{ link }}}}">{open}</a></p>{{% endif %}}
<p style="font-size:small;color:#666">{{{{ sender_name }}}} ·
<a href="{{{{ unsubscribe_url }}}}">{unsubscribe}</a></p>
</body></html>
"""

_TEXT_FRAME = """{greeting}

{intro}

{{% for m in messages %}}{{{{ m.author }}}}: {{{{ m.text }}}}
{{% endfor %}}{{% if link %}}
{open}: {{{{ link }}}}
{{% endif %}}
--
{{{{ sender_name }}}}
{unsubscribe}: {{{{ unsubscribe_url }}}}
"""

# One line each; {{ … }} are filled in when the mail is written.
_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "{% if count == 1 %}New message{% else %}{{ count }} new messages{% endif %}"
        "{% if conversation %} in {{ conversation }}{% endif %}",
        "greeting": "Hello {{ recipient }},",
        "intro": "{% if count == 1 %}You have a new message{% else %}You have {{ count }} new "
        "messages{% endif %}{% if conversation %} in {{ conversation }}{% endif %}.",
        "open": "Open the conversation",
        "unsubscribe": "Unsubscribe from these emails",
    },
    "de": {
        "subject": "{% if count == 1 %}Neue Nachricht{% else %}{{ count }} neue Nachrichten"
        "{% endif %}{% if conversation %} in {{ conversation }}{% endif %}",
        "greeting": "Hallo {{ recipient }},",
        "intro": "{% if count == 1 %}Sie haben eine neue Nachricht{% else %}Sie haben "
        "{{ count }} neue Nachrichten{% endif %}{% if conversation %} in {{ conversation }}"
        "{% endif %}.",
        "open": "Unterhaltung öffnen",
        "unsubscribe": "Diese E-Mails abbestellen",
    },
    "fr": {
        "subject": "{% if count == 1 %}Nouveau message{% else %}{{ count }} nouveaux messages"
        "{% endif %}{% if conversation %} dans {{ conversation }}{% endif %}",
        "greeting": "Bonjour {{ recipient }},",
        "intro": "{% if count == 1 %}Vous avez un nouveau message{% else %}Vous avez "
        "{{ count }} nouveaux messages{% endif %}{% if conversation %} dans {{ conversation }}"
        "{% endif %}.",
        "open": "Ouvrir la conversation",
        "unsubscribe": "Se désabonner de ces e-mails",
    },
    "es": {
        "subject": "{% if count == 1 %}Nuevo mensaje{% else %}{{ count }} mensajes nuevos"
        "{% endif %}{% if conversation %} en {{ conversation }}{% endif %}",
        "greeting": "Hola {{ recipient }}:",
        "intro": "{% if count == 1 %}Tienes un mensaje nuevo{% else %}Tienes {{ count }} "
        "mensajes nuevos{% endif %}{% if conversation %} en {{ conversation }}{% endif %}.",
        "open": "Abrir la conversación",
        "unsubscribe": "Darse de baja de estos correos",
    },
    "pt": {
        "subject": "{% if count == 1 %}Nova mensagem{% else %}{{ count }} novas mensagens"
        "{% endif %}{% if conversation %} em {{ conversation }}{% endif %}",
        "greeting": "Olá {{ recipient }},",
        "intro": "{% if count == 1 %}Você tem uma nova mensagem{% else %}Você tem {{ count }} "
        "novas mensagens{% endif %}{% if conversation %} em {{ conversation }}{% endif %}.",
        "open": "Abrir a conversa",
        "unsubscribe": "Cancelar a inscrição nestes e-mails",
    },
    "ar": {
        "subject": "{% if count == 1 %}رسالة جديدة{% else %}{{ count }} رسائل جديدة{% endif %}"
        "{% if conversation %} في {{ conversation }}{% endif %}",
        "greeting": "مرحبًا {{ recipient }}،",
        "intro": "{% if count == 1 %}لديك رسالة جديدة{% else %}لديك {{ count }} رسائل جديدة"
        "{% endif %}{% if conversation %} في {{ conversation }}{% endif %}.",
        "open": "فتح المحادثة",
        "unsubscribe": "إلغاء الاشتراك في هذه الرسائل",
    },
}


def default_template(language: str) -> Template:
    s = _STRINGS.get(language) or _STRINGS["en"]
    lang = language if language in _STRINGS else "en"
    direction = "rtl" if lang == "ar" else "ltr"
    parts = {k: s[k] for k in ("greeting", "intro", "open", "unsubscribe")}
    return Template(
        subject=s["subject"],
        text=_TEXT_FRAME.format(**parts),
        html=_HTML_FRAME.format(lang=lang, dir=direction, **parts),
    )


DEFAULTS = {lang: default_template(lang) for lang in LANGUAGES}


def language_of(wanted: str | None, fallback: str) -> str:
    """The template language for a user: theirs if known ("pt-BR" → "pt"), else the
    workspace's, else English."""
    for candidate in (wanted, fallback):
        if candidate:
            base = candidate.split("-")[0].split("_")[0].lower()
            if base in _STRINGS:
                return base
    return "en"


_TEXT = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_HTML = SandboxedEnvironment(autoescape=True, keep_trailing_newline=True)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


def check_template(template: Template) -> Template:
    """InvalidRequest naming the part that is too long or does not compile."""
    for name, env, limit in (
        ("subject", _TEXT, MAX_SUBJECT),
        ("text", _TEXT, MAX_BODY),
        ("html", _HTML, MAX_BODY),
    ):
        source = getattr(template, name)
        if len(source) > limit:
            raise InvalidRequest(f"The {name} template is too long.", {name: f"at most {limit}"})
        try:
            env.from_string(source)
        except TemplateError as exc:
            raise InvalidRequest(
                f"The {name} template does not compile: {exc.message or exc}", {name: "syntax"}
            ) from None
    return template


def render(template: Template, context: dict[str, Any]) -> Rendered:
    """The three parts; a template that fails while rendering (sandbox refusals too)
    raises InvalidRequest."""
    try:
        subject = _TEXT.from_string(template.subject).render(context)
        text = _TEXT.from_string(template.text).render(context)
        html = _HTML.from_string(template.html).render(context)
    except TemplateError as exc:
        raise InvalidRequest(f"The template failed: {exc.message or exc}", {}) from None
    subject = " ".join(subject.split())[:MAX_SUBJECT]
    return Rendered(subject, text, html)


# -- tenants' templates, in a process of their own ----------------------------------------

RENDER_SECONDS = 2.0


class Renderer:
    """Renders tenants' templates in a worker process (``renderworker``), bounded in time
    and memory; a worker past either is killed and a new one started."""

    def __init__(self, seconds: float = RENDER_SECONDS) -> None:
        self.seconds = seconds
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the worker now: a first rendering should not wait for it."""
        async with self._lock:
            await self._worker()

    async def _worker(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "confab_notifier.renderworker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        return self._proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()

    async def render(self, template: Template, context: dict[str, Any]) -> Rendered:
        """The three parts; InvalidRequest if the template fails, takes longer than
        ``seconds`` or more memory than the worker may have."""
        request = json.dumps(
            {"template": msgspec.to_builtins(template), "context": context}
        ).encode()
        async with self._lock:  # one rendering at a time: the worker is one process
            proc = await self._worker()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(struct.pack(">I", len(request)) + request)
                await proc.stdin.drain()
                async with asyncio.timeout(self.seconds):
                    size = struct.unpack(">I", await proc.stdout.readexactly(4))[0]
                    answer = json.loads(await proc.stdout.readexactly(size))
            except TimeoutError:
                self._kill()
                raise InvalidRequest(
                    f"The template took longer than {self.seconds:g} s to render.", {}
                ) from None
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                self._kill()
                raise InvalidRequest("The template needs too much memory.", {}) from None
        if "error" in answer:
            raise InvalidRequest(str(answer["error"]), {})
        return Rendered(answer["subject"], answer["text"], answer["html"])

    async def close(self) -> None:
        proc = self._proc
        self._kill()
        if proc is not None:
            await proc.wait()
