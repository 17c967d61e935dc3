import asyncio
import json

import pytest

from confab.logging import bound, configure, get_logger


def test_secrets_are_redacted_and_lines_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure("testsvc", "info", "json")
    get_logger().info("issued", api_key="sk_live_secret", session_token="tok", user_id="u1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["service"] == "testsvc"
    assert record["user_id"] == "u1"
    assert "sk_live_secret" not in line and 'tok"' not in line
    assert record["api_key"] == record["session_token"] == "[redacted]"


async def test_bound_keys_reach_log_lines_and_are_restored_after(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``bound`` as the request and RPC paths use it: the keys are in every line logged
    inside, the outer values come back after (nested, and in a task of its own)."""
    configure("testsvc", "info", "json")
    log = get_logger()

    def last() -> dict[str, object]:
        record: dict[str, object] = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        return record

    with bound(correlation_id="outer"):
        with bound(correlation_id="inner", rpc="messaging.post"):
            log.info("inside")
            inside = last()
            assert (inside["correlation_id"], inside["rpc"]) == ("inner", "messaging.post")
        log.info("between")
        between = last()
        assert between["correlation_id"] == "outer" and "rpc" not in between

        async def other() -> None:
            with bound(correlation_id="task"):
                log.info("in a task")

        await asyncio.create_task(other())
        assert last()["correlation_id"] == "task"
        log.info("after the task")
        assert last()["correlation_id"] == "outer"
    log.info("outside")
    assert "correlation_id" not in last()
