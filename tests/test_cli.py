"""The operator's command line against a running platform."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.stack import CONFAB, RunningStack


def confab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONFAB, *args], capture_output=True, text=True, timeout=60)


def test_workspace_create_then_list(stack: RunningStack) -> None:
    target = ["--data-dir", str(stack.data_dir)]
    created = confab("workspace", "create", "Operators Inc", *target, "--json")
    assert created.returncode == 0, created.stderr
    workspace = json.loads(created.stdout)
    assert workspace["name"] == "Operators Inc" and workspace["api_key"].startswith("sk_")

    human = confab("workspace", "create", "Second", *target)
    assert human.returncode == 0 and "shown only now" in human.stdout

    listed = confab("workspace", "list", *target, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    mine = [w for w in rows if w["id"] == workspace["id"]]
    assert mine and set(mine[0]) == {"id", "name", "app_key", "created_at"}
    table = confab("workspace", "list", *target)
    assert "Operators Inc" in table.stdout and "NAME" in table.stdout
    assert workspace["api_key"] not in table.stdout + listed.stdout


def test_clear_errors(stack: RunningStack, tmp_path: Path) -> None:
    missing = confab("workspace", "list", "--data-dir", str(tmp_path))
    assert missing.returncode != 0 and "stack.json" in missing.stderr
    assert "Traceback" not in missing.stderr
    too_long = confab("workspace", "create", "x" * 101, "--data-dir", str(stack.data_dir))
    assert too_long.returncode != 0 and "1 to 100 characters" in too_long.stderr


def test_workspace_create_can_make_the_first_owner(stack: RunningStack) -> None:
    target = ["--data-dir", str(stack.data_dir)]
    made = confab(
        "workspace", "create", "Team Inc", "--owner-email", "Boss@Example.com", *target, "--json"
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    owner = created["owner"]
    assert owner["role"] == "owner" and owner["email"] == "boss@example.com"
    assert len(owner["password"]) >= 16
    human = confab("workspace", "create", "Team Two", "--owner-email", "x@example.com", *target)
    assert human.returncode == 0 and "dashboard login" in human.stdout
    assert "password" in human.stdout
    bad = confab("workspace", "create", "Team Three", "--owner-email", "nope", *target)
    assert bad.returncode != 0 and "--owner-email" in bad.stderr
    # The demo workspace has its owner too, printed by confab up.
    assert any(line.strip().startswith("dashboard login") for line in stack.lines)
