"""Schema-driven fuzzing of every endpoint with real credentials: no 5xx, answers as documented."""

from __future__ import annotations

import json
import urllib.request
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
from tests.stack import RunningStack


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
def credentials(stack: RunningStack) -> dict[str, dict[str, str]]:
    base = stack.gateway
    workspace = _post(base + "/api/admin/workspaces", {"name": "Fuzzed"}, stack.admin_headers)
    key = {"X-API-Key": workspace["api_key"]}
    user = _post(base + "/api/v1/users", {"external_id": "fuzz", "name": "Fuzz"}, key)
    session = _post(base + "/api/v1/sessions", {"user_id": user["id"]}, key)
    return {
        "/api/admin/": stack.admin_headers,
        "/api/v1/": key,
        "/api/widget/": {"Authorization": f"Bearer {session['token']}"},
    }


# The document the gateway serves is generated from code, so it is known at collection time;
# test_openapi_document_is_what_the_gateway_serves keeps the two the same.
schema = schemathesis.openapi.from_dict(openapi.document(endpoints()))


def test_openapi_document_is_what_the_gateway_serves(stack: RunningStack) -> None:
    with urllib.request.urlopen(stack.gateway + "/openapi.json", timeout=10) as response:
        served = json.loads(response.read())
    assert served == json.loads(json.dumps(openapi.document(endpoints())))
    assert len(served["paths"]) >= 20


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_server_errors_and_documented_answers(
    case: Any, credentials: dict[str, dict[str, str]], stack: RunningStack
) -> None:
    headers = next(h for prefix, h in credentials.items() if case.path.startswith(prefix))
    case.call_and_validate(
        base_url=stack.gateway,
        headers=headers,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
