"""The worker process that renders tenants' templates (``templates.Renderer``).

One request at a time on stdin, one answer on stdout, each a 4-byte big-endian length and
a JSON body: ``{"template": {subject, text, html}, "context": {…}}`` in,
``{"subject", "text", "html"}`` or ``{"error": "…"}`` out. The process limits its own
address space first, so a template that allocates without end fails here (MemoryError,
answered as an error) or kills only this process.
"""

from __future__ import annotations

import json
import resource
import struct
import sys

RENDER_MEMORY = 512 * 1024 * 1024


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (RENDER_MEMORY, RENDER_MEMORY))
    from confab.contracts.events.notifier import Template
    from confab.errors import ConfabError
    from confab_notifier.templates import render

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        request = json.loads(stdin.read(struct.unpack(">I", head)[0]))
        try:
            done = render(Template(**request["template"]), request["context"])
            answer: dict[str, str] = {"subject": done.subject, "text": done.text, "html": done.html}
        except MemoryError:
            answer = {"error": "The template needs too much memory."}
        except ConfabError as exc:
            answer = {"error": exc.message}
        body = json.dumps(answer).encode()
        stdout.write(struct.pack(">I", len(body)) + body)
        stdout.flush()


if __name__ == "__main__":
    main()
