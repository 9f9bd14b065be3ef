"""Signed client of the ticket backend's read and admin API (tests, bench, demo)."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from ivr.events.signing import request_target, signed_headers
from ivr.ticketsink.errors import SinkError


class SinkClient:
    def __init__(self, base_url: str, secret: bytes, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def __aenter__(self) -> SinkClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, body: bytes = b"") -> Any:
        url = URL(self.base_url + path)
        headers = signed_headers(self.secret, method, request_target(url), body)
        async with self._session.request(method, url, data=body or None,
                                         headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise SinkError(f"{method} {path}: HTTP {resp.status}: {text[:200]}")
            return json.loads(text)

    async def tickets(self, events: bool = True) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = (
            await self._call("GET", "/tickets" + ("" if events else "?events=0")))["tickets"]
        return out

    async def ticket(self, ident: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._call("GET", f"/tickets/{ident}")
        return out

    async def health(self) -> dict[str, Any]:
        async with self._session.get(self.base_url + "/health") as resp:
            out: dict[str, Any] = await resp.json()
            return out

    async def set_faults(self, **faults: float) -> dict[str, Any]:
        out: dict[str, Any] = await self._call(
            "POST", "/admin/faults", json.dumps(faults).encode())
        return out
