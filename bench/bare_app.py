"""The floor of webhook intake: a bare Starlette endpoint that reads the body and answers
202, served by uvicorn with the settings `bot.serve.serve` uses for conveyor.

    python -m bench.bare_app --port 8099
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.common import HOST


async def accept(request: Request) -> Response:
    await request.body()  # conveyor must read the body too: the floor does the same
    return JSONResponse({"outcome": "ignored", "task": None, "reason": "bare"}, status_code=202)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_bare_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/webhooks/plane", accept, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def uvicorn_config(app: Starlette, port: int) -> uvicorn.Config:
    """What `bot.serve.serve` passes for conveyor: loopback, no access log, no log
    config, lifespan on; loop and HTTP parser left to uvicorn's auto choice."""
    return uvicorn.Config(
        app, host=HOST, port=port, log_config=None, access_log=False, lifespan="on"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.Server(uvicorn_config(create_bare_app(), args.port)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
