"""Schema-driven fuzzing of every endpoint with real credentials: no 5xx, answers as documented.

schemathesis generates valid and invalid requests (bodies, query strings, headers,
path parameters) from the ``/openapi.json`` the gateway serves, sends them with
real credentials and checks each answer: no server error, a documented status, a
documented content type, a body of the documented schema.

``make test`` runs 25 cases per operation; ``make fuzz`` runs
``CONFAB_FUZZ_CASES`` per operation (several thousand in all) and writes what it
ran to ``CONFAB_FUZZ_REPORT``: cases and statuses per operation. Given
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

CASES = int(os.environ.get("CONFAB_FUZZ_CASES", "25"))
REPORT = os.environ.get("CONFAB_FUZZ_REPORT", "")
EXTERNAL = os.environ.get("CONFAB_FUZZ_STACK", "")

# operation -> status -> count, over the whole module
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
    }


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if REPORT and statuses:
        operations = {name: dict(sorted(seen.items())) for name, seen in sorted(statuses.items())}
        total = sum(sum(seen.values()) for seen in statuses.values())
        server_errors = sum(n for seen in statuses.values() for s, n in seen.items() if s >= 500)
        summary = {
            "cases_per_operation": CASES,
            "operations": len(operations),
            "cases": total,
            "server_errors": server_errors,
            "statuses": dict(sorted(sum(statuses.values(), Counter()).items())),
            "by_operation": operations,
        }
        Path(REPORT).write_text(json.dumps(summary, indent=2) + "\n")


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
    statuses[f"{case.method} {case.path}"][response.status_code] += 1
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
