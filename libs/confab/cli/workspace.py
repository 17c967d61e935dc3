"""``confab workspace create NAME [--owner-email EMAIL]`` and ``confab workspace list``.

With ``--owner-email`` the new workspace gets its first owner, a staff member with a
generated password printed once (they sign in to ``/dashboard`` and invite the rest).
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from confab.cli.context import add_target_options, print_json, print_table, run_with_rpc
from confab.cli.demo import new_password
from confab.contracts.identity import (
    CreateOwner,
    CreateWorkspace,
    ListWorkspaces,
    OwnerInput,
    StaffMember,
    Workspace,
    WorkspaceInput,
    WorkspaceWithSecrets,
)
from confab.errors import InvalidRequest
from confab.rpc import RpcClient


def add_parser(commands: Any) -> None:
    p = commands.add_parser("workspace", help="create and list workspaces (tenants)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a workspace and show its keys (once)")
    create.add_argument("name")
    create.add_argument(
        "--owner-email", help="make this person the first owner (prints their dashboard login)"
    )
    create.add_argument("--owner-name", default="Owner", help="the first owner's name")
    add_target_options(create)
    create.set_defaults(run=create_workspace)
    listing = sub.add_parser("list", help="list workspaces, oldest first")
    add_target_options(listing)
    listing.set_defaults(run=list_workspaces)


def create_workspace(args: argparse.Namespace) -> int:
    try:
        name = msgspec.convert({"name": args.name}, WorkspaceInput)
    except msgspec.ValidationError:
        raise SystemExit("confab: a workspace name has 1 to 100 characters") from None
    password = new_password()
    owner = None
    if args.owner_email:
        try:
            owner = msgspec.convert(
                {"email": args.owner_email, "name": args.owner_name, "password": password},
                OwnerInput,
            )
        except msgspec.ValidationError:
            raise SystemExit(
                "confab: --owner-email needs an email address, --owner-name 1 to 200 characters"
            ) from None

    async def create(rpc: RpcClient) -> tuple[WorkspaceWithSecrets, StaffMember | None]:
        reply: WorkspaceWithSecrets = await rpc.call(
            CreateWorkspace(input=name, actor="confab workspace create")
        )
        member = None
        if owner is not None:
            member = await rpc.call(CreateOwner(workspace_id=reply.id, input=owner))
        return reply, member

    created, member = run_with_rpc(args, create)
    if args.json:
        out = msgspec.to_builtins(created)
        if member is not None:
            out["owner"] = {**msgspec.to_builtins(member), "password": password}
        print_json(out)
        return 0
    print(f"Created workspace {created.name} ({created.id}).")
    print("These secrets are shown only now; keep them somewhere safe:")
    print(f"  API key     {created.api_key}")
    print(f"  app key     {created.app_key}")
    print(f"  app secret  {created.app_secret}")
    if member is not None:
        print(f"First owner {member.name} <{member.email}>; dashboard login:")
        print(f"  workspace   {created.id}")
        print(f"  email       {member.email}")
        print(f"  password    {password}")
    return 0


def list_workspaces(args: argparse.Namespace) -> int:
    async def everything(rpc: RpcClient) -> list[Workspace]:
        found: list[Workspace] = []
        after = None
        while True:
            page = await rpc.call(ListWorkspaces(limit=100, after=after))
            found += page.data
            if not page.has_more:
                return found
            after = page.next_cursor
            if after is None:
                raise InvalidRequest("the workspace list did not give a cursor")

    workspaces = run_with_rpc(args, everything)
    rows = [msgspec.to_builtins(w) for w in workspaces]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ("id", "name", "app_key", "created_at"))
    return 0
