import json

import pytest

from confab.logging import configure, get_logger


def test_secrets_are_redacted_and_lines_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure("testsvc", "info", "json")
    get_logger().info("issued", api_key="sk_live_secret", session_token="tok", user_id="u1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["service"] == "testsvc"
    assert record["user_id"] == "u1"
    assert "sk_live_secret" not in line and 'tok"' not in line
    assert record["api_key"] == record["session_token"] == "[redacted]"
