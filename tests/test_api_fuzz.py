"""Schema-driven fuzzing of every endpoint with real credentials: no 5xx, answers as documented.

schemathesis generates valid and invalid requests (bodies, query strings, headers,
path parameters) from the ``/openapi.json`` the gateway serves, sends them with
real credentials and checks each answer: no server error, a documented status, a
documented content type, a body of the documented schema.

``make test`` runs 10 cases per operation (about 200 operations must fit in CI's 20
minutes); ``make fuzz`` runs ``CONFAB_FUZZ_CASES`` per operation (several thousand in
all) and writes what it ran to ``CONFAB_FUZZ_REPORT``: cases and statuses per operation. Given
``CONFAB_FUZZ_STACK`` (the data dir of a running ``confab up``, e.g. ``.confab``
of ``make run``), it fuzzes that stack instead of starting its own.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from confab_gateway import openapi
from confab_gateway.app import endpoints

CASES = int(os.environ.get("CONFAB_FUZZ_CASES", "10"))
REPORT = os.environ.get("CONFAB_FUZZ_REPORT", "")
EXTERNAL = os.environ.get("CONFAB_FUZZ_STACK", "")

# operation -> status -> count, over the whole module (its cases include other methods on
# the operation's path, which must be 405)
statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)


def _post(url: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """The gateway's URL and the admin headers: the running stack named, or the session's."""
    if EXTERNAL:
        info = json.loads((Path(EXTERNAL) / "stack.json").read_text())
        return str(info["gateway_url"]), {"Authorization": f"Bearer {info['admin_token']}"}
    stack = request.getfixturevalue("stack")
    return stack.gateway, stack.admin_headers


@pytest.fixture(scope="module")
def credentials(target: tuple[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    base, admin = target
    workspace = _post(base + "/api/admin/workspaces", {"name": "Fuzzed"}, admin)
    key = {"X-API-Key": workspace["api_key"]}
    user = _post(base + "/api/v1/users", {"external_id": "fuzz", "name": "Fuzz"}, key)
    session = _post(base + "/api/v1/sessions", {"user_id": user["id"]}, key)
    return {
        "/api/admin/": admin,
        "/api/v1/": key,
        "/api/widget/": {"Authorization": f"Bearer {session['token']}"},
        "/api/notifications/": {},  # the unsubscribe link: its signed token is the credential
    }


@pytest.fixture(scope="module", autouse=True)
def report(pytestconfig: pytest.Config) -> Iterator[None]:
    """At the end: one line of figures on the terminal, and the whole report if asked."""
    yield
    if not REPORT or not statuses:
        return
    operations = {name: dict(sorted(seen.items())) for name, seen in sorted(statuses.items())}
    every: Counter[int] = sum(statuses.values(), Counter())
    summary = {
        "cases_per_operation": CASES,
        "operations": len(operations),
        "cases": every.total(),
        "server_errors": sum(n for status, n in every.items() if status >= 500),
        "statuses": dict(sorted(every.items())),
        "by_operation": operations,
    }
    Path(REPORT).write_text(json.dumps(summary, indent=2) + "\n")
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if terminal is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(
                f"\nfuzz: {summary['cases']} cases over {summary['operations']} operations "
                f"({CASES} generated per operation), {summary['server_errors']} server errors; "
                f"statuses {summary['statuses']}; report: {REPORT}"
            )


# The document the gateway serves is generated from code, so it is known at collection time;
# test_openapi_document_is_what_the_gateway_serves keeps the two the same.
schema = schemathesis.openapi.from_dict(openapi.document(endpoints()))


def test_openapi_document_is_what_the_gateway_serves(target: tuple[str, dict[str, str]]) -> None:
    with urllib.request.urlopen(target[0] + "/openapi.json", timeout=10) as response:
        served = json.loads(response.read())
    assert served == json.loads(json.dumps(openapi.document(endpoints())))
    assert len(served["paths"]) >= 20


@schema.parametrize()
@settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_server_errors_and_documented_answers(
    case: Any, credentials: dict[str, dict[str, str]], target: tuple[str, dict[str, str]]
) -> None:
    headers = next(h for prefix, h in credentials.items() if case.path.startswith(prefix))
    response = case.call(base_url=target[0], headers=headers)
    statuses[case.operation.label][response.status_code] += 1
    case.validate_response(
        response,
        headers=headers,
        transport_kwargs={"base_url": target[0]},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
