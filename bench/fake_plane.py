"""A stand-in for Plane's REST API on a loopback port, for the reconciliation benchmark:
work items in memory, listed newest change first and paged the way Plane's own
`BasePaginator` pages (cursor `"<per_page>:<page>:<is_prev>"`, `next_page_results`), one
read per work item (404 when deleted), comments, states and the project. Every request
is counted by kind, so the benchmark can say what one pass cost.

It runs as its own process (`python -m bench.fake_plane --port P`: in a thread of the
benchmark it waited on the benchmark's GIL, ~40 ms a request); the benchmark drives it
through `/_bench/*` (`Control`), which is not counted.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.common import HOST, IDENTIFIER, PROJECT, STATES, Server, child_env, free_port, issue_id

PREFIX = "/api/v1/workspaces/{workspace}/projects/{project}"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


class FakePlane:
    """The work items of one project, and what was asked of them."""

    def __init__(self, project: str, identifier: str) -> None:
        self.project, self.identifier = project, identifier
        self.items: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.counts: collections.Counter[str] = collections.Counter()
        self.comments: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    # -- driving it ----------------------------------------------------------------------

    def put(self, ticket: int, state: str, updated: float) -> None:
        """Create or move ticket `ticket` (no webhook is sent)."""
        state_id, group = STATES[state]
        item = {
            "id": issue_id(ticket),
            "name": f"Bench ticket {ticket}",
            "sequence_id": ticket,
            "project": self.project,
            "state": {"id": state_id, "name": state, "color": "#60646c", "group": group},
            "labels": [],
            "assignees": [],
            "description_html": "<p></p>",
            "priority": "none",
            "created_at": iso(updated),
            "updated_at": iso(updated),
            "deleted_at": None,
        }
        with self._lock:
            self.items[item["id"]] = item

    # -- the API -------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    async def list_items(self, request: Request) -> Response:
        self._count("list")
        per_page = int(request.query_params.get("per_page", "100"))
        _, page_text, _ = request.query_params.get("cursor", f"{per_page}:0:0").split(":")
        page = int(page_text)
        with self._lock:
            ordered = sorted(self.items.values(), key=lambda i: i["updated_at"], reverse=True)
        results = ordered[page * per_page : (page + 1) * per_page]
        return JSONResponse(
            {
                "grouped_by": None,
                "sub_grouped_by": None,
                "total_count": len(ordered),
                "next_cursor": f"{per_page}:{page + 1}:0",
                "prev_cursor": f"{per_page}:{page - 1}:1",
                "next_page_results": (page + 1) * per_page < len(ordered),
                "prev_page_results": page > 0,
                "count": len(results),
                "total_pages": -(-len(ordered) // per_page),
                "total_results": len(ordered),
                "extra_stats": None,
                "results": results,
            }
        )

    async def read_item(self, request: Request) -> Response:
        self._count("read")
        item = self.items.get(request.path_params["item"])
        if item is None or item["id"] in self.deleted:
            return JSONResponse({"error": "Work item not found"}, status_code=404)
        return JSONResponse(item)

    async def comment(self, request: Request) -> Response:
        self._count("comment")
        await request.body()
        with self._lock:
            self.comments[request.path_params["item"]] += 1
        return JSONResponse({"id": f"c-{time.time_ns()}"}, status_code=201)

    async def states(self, request: Request) -> Response:
        self._count("states")
        results = [{"id": i, "name": n, "group": g} for n, (i, g) in STATES.items()]
        return JSONResponse({"results": results, "next_page_results": False})

    async def project_doc(self, request: Request) -> Response:
        self._count("project")
        return JSONResponse({"id": self.project, "identifier": self.identifier})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"{PREFIX}/work-items/", self.list_items),
                Route(f"{PREFIX}/work-items/{{item}}/", self.read_item),
                Route(f"{PREFIX}/work-items/{{item}}/comments/", self.comment, methods=["POST"]),
                Route(f"{PREFIX}/states/", self.states),
                Route(f"{PREFIX}/", self.project_doc),
            ]
        )

    async def control_put(self, request: Request) -> Response:
        for change in await request.json():
            self.put(int(change["ticket"]), str(change["state"]), float(change["updated"]))
        return JSONResponse({"ok": True})

    async def control_counts(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse({"counts": dict(self.counts), "comments": dict(self.comments)})

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", lambda request: JSONResponse({"ok": True})),
            Route("/_bench/put", self.control_put, methods=["POST"]),
            Route("/_bench/counts", self.control_counts),
        ]


class Control:
    """The benchmark's handle on a running fake: move tickets, read the counts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)

    def put(self, tickets: Iterable[int], state: str, updated: float) -> None:
        changes = [
            {"ticket": t, "state": state, "updated": updated + n * 1e-3}
            for n, t in enumerate(tickets)
        ]
        self.http.post("/_bench/put", json=changes).raise_for_status()

    def counts(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.http.get("/_bench/counts").json()
        return doc

    def requests(self) -> int:
        return sum(self.counts()["counts"].values())

    def comments(self, issue: str) -> int:
        return int(self.counts()["comments"].get(issue, 0))

    def close(self) -> None:
        self.http.close()


def fake_plane_server(root: Path, token: str) -> Server:
    """The fake as a subprocess on a free loopback port (a `bench.common.Server`)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.fake_plane", "--port", str(port)]
    return Server(argv, child_env(token), root, port, root / "fake-plane.log")


def main() -> None:
    parser = argparse.ArgumentParser(description="a fake Plane API for the benchmarks")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    plane = FakePlane(PROJECT, IDENTIFIER)
    app = Starlette(routes=[*plane.routes(), *plane.app().routes])
    uvicorn.run(app, host=HOST, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
