"""A small HTTP client for end-to-end tests: every call returns (status, JSON body)."""

from __future__ import annotations

from typing import Any

import aiohttp


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> None:
        self.http = http
        self.base = base
        self.headers = headers

    def as_(self, **headers: str) -> Api:
        return Api(self.http, self.base, headers)

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        async with self.http.request(
            method,
            self.base + path,
            json=json,
            data=data,
            params=params,
            headers={**self.headers, **(headers or {})},
        ) as response:
            text = await response.text()
            if response.status != 204:
                assert response.content_type == "application/json", (response.status, text)
            body = await response.json(content_type=None) if text else None
            if response.status >= 400:
                assert set(body) == {"error"}, body
                assert set(body["error"]) == {"code", "message", "details"}, body
            return response.status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)


async def new_workspace(admin: Api, name: str = "Acme") -> dict[str, Any]:
    status, body = await admin.post("/api/admin/workspaces", {"name": name})
    assert status == 201, body
    return dict(body)
