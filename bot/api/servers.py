"""`GET /servers`: the servers sharing this database, who is up and what each still owes;
`POST /servers/{server}/retire` (admin token): a server that will never come back (its
machine is gone) is retired, and the reset steps it owed are abandoned, on the record."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.http import error, services
from bot.api.stop import authorise
from state import hosts
from state.queue import iso

NO_SUCH_SERVER = "no server has the id '{server}' (GET /servers lists them)"
STILL_UP = (
    "server {server} on {host} is up (seen {ago:.0f} s ago); stop it first: a running "
    "server does what it owes itself"
)


async def list_servers(request: Request) -> Response:
    svc = services(request)
    doc = await svc.store.run_read(servers_doc, svc.clock.now())
    return JSONResponse({"servers": doc})


def servers_doc(conn: Connection, now: float) -> list[dict[str, Any]]:
    pending = hosts.pending_summary(conn, now, hosts.SILENT_AFTER_SECONDS)
    found = []
    for server in hosts.list_servers(conn):
        found.append(
            {
                "server": server["id"],
                "host": server["host"],
                "data_dir": server["data_dir"],
                "started_at": iso(server["started_at"]),
                "seen_at": iso(server["seen_at"]),
                "stopped_at": iso(server["stopped_at"]),
                "retired_at": iso(server["retired_at"]),
                "gone": hosts.owner_absent(conn, server["id"], now, hosts.SILENT_AFTER_SECONDS),
                "owes": sum(1 for p in pending if p["server"] == server["id"]),
            }
        )
    return found


async def retire(request: Request) -> Response:
    """Retire a gone server: 200 with how many of its steps were abandoned; 404; 409 while
    it is up."""
    if (refused := authorise(request)) is not None:
        return refused
    svc = services(request)
    server_id = request.path_params["server"]
    now = svc.clock.now()
    found = await svc.store.run_read(hosts.get_server, server_id)
    if found is None:
        return error(404, NO_SUCH_SERVER.format(server=server_id[:64]))
    if not await svc.store.run_read(hosts.owner_absent, server_id, now, hosts.SILENT_AFTER_SECONDS):
        ago = now - found["seen_at"]
        return error(409, STILL_UP.format(server=server_id, host=found["host"], ago=ago))
    abandoned = await svc.store.run(hosts.retire_server, server_id, now)
    return JSONResponse({"server": server_id, "host": found["host"], "abandoned": abandoned})


routes = [
    Route("/servers", list_servers, methods=["GET"]),
    Route("/servers/{server}/retire", retire, methods=["POST"]),
]
