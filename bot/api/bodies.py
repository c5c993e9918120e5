"""Reading a request body the way a hostile client cannot abuse: chunk by chunk,
abandoned as soon as it passes its limit, and within a time limit (a body that trickles
in forever holds a connection forever otherwise)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

BODY_READ_TIMEOUT_SECONDS = 30.0


class BodyTooLarge(Exception):
    """The body passed its limit (413)."""


class BodyTooSlow(Exception):
    """The body did not arrive within the time limit (408)."""


async def read_limited(
    request: Request, limit: int, seconds: float = BODY_READ_TIMEOUT_SECONDS
) -> bytes:
    """The raw body, at most `limit` bytes, read within `seconds`."""
    declared = request.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and len(declared) < 12 and int(declared) > limit:
        raise BodyTooLarge(f"body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(seconds):
            return await _read(request, limit)
    except TimeoutError:
        raise BodyTooSlow(f"the body did not arrive within {seconds:g} s") from None


async def _read(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body is larger than {limit} bytes")
    return bytes(body)
