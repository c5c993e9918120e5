"""What conveyor asks Linear: post a comment, read an issue, list a team's changed
issues. Queries name only the fields the port's Ticket needs (Linear's rate limits
count complexity, so asking for less is cheaper)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from integrations.trackers.base import Gone, Notice, Ticket, TicketRef, TrackerError
from integrations.trackers.linear import issues
from integrations.trackers.linear.graphql import EntityNotFound, LinearGraphQL
from integrations.trackers.vocabulary import Vocabulary

PAGE_SIZE = 100
MAX_COMMENT_PAGES = 50

TICKET_FIELDS = """
fragment ConveyorTicket on Issue {
  id
  identifier
  title
  description
  url
  updatedAt
  state { id name type }
  team { key }
  labels { nodes { name } }
}
"""

COMMENT = """
mutation ConveyorComment($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id } }
}
"""

COMMENTS = """
query ConveyorComments($id: String!, $first: Int!, $after: String) {
  issue(id: $id) {
    comments(first: $first, after: $after) {
      nodes { body }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

READ = (
    """
query ConveyorIssue($id: String!) {
  issue(id: $id) { ...ConveyorTicket }
}
"""
    + TICKET_FIELDS
)

CHANGED = (
    """
query ConveyorChangedIssues(
  $team: String!, $since: DateTimeOrDuration!, $first: Int!, $after: String
) {
  issues(
    filter: {team: {key: {eq: $team}}, updatedAt: {gte: $since}}
    orderBy: updatedAt
    first: $first
    after: $after
  ) {
    nodes { ...ConveyorTicket }
    pageInfo { hasNextPage endCursor }
  }
}
"""
    + TICKET_FIELDS
)


class LinearApi:
    """The port's API side for Linear, over one GraphQL endpoint."""

    def __init__(self, graphql: LinearGraphQL, vocabulary: Vocabulary) -> None:
        self.graphql = graphql
        self.vocabulary = vocabulary

    async def comment(self, ref: TicketRef, notice: Notice) -> None:
        variables = {"input": {"issueId": ref.issue_id, "body": comment_markdown(notice)}}
        data = await self.graphql.execute("ConveyorComment", COMMENT, variables)
        result = data.get("commentCreate")
        if not isinstance(result, dict) or result.get("success") is not True:
            raise TrackerError(f"linear commentCreate on {ref.key} did not succeed")

    async def has_comment(self, ref: TicketRef, marker: str) -> bool:
        """Whether a comment on the issue carries ``marker``, following the cursor of
        ``issue.comments`` (``first``/``after``, ``pageInfo``)."""
        variables: dict[str, Any] = {"id": ref.issue_id, "first": PAGE_SIZE, "after": None}
        for _ in range(MAX_COMMENT_PAGES):
            data = await self.graphql.execute("ConveyorComments", COMMENTS, variables)
            issue = data.get("issue")
            if not isinstance(issue, dict):
                raise TrackerError(f"linear comments of {ref.key}: the answer has no issue")
            nodes, cursor = _connection(issue.get("comments"), f"comments of {ref.key}")
            if any(isinstance(n, dict) and marker in str(n.get("body") or "") for n in nodes):
                return True
            if cursor is None:
                return False
            if cursor == variables["after"]:
                raise TrackerError(f"linear comments of {ref.key}: the cursor did not advance")
            variables["after"] = cursor
        raise TrackerError(f"linear: {ref.key} has more than {MAX_COMMENT_PAGES} pages of comments")

    async def read(self, ref: TicketRef) -> Ticket | Gone:
        try:
            data = await self.graphql.execute("ConveyorIssue", READ, {"id": ref.issue_id})
        except EntityNotFound:
            return Gone(404)
        node = data.get("issue")
        if node is None:
            return Gone(404)
        return self._ticket(node, ref.project)

    async def changed_since(self, team: str, since: datetime) -> list[Ticket]:
        """Every issue of the team updated at or after ``since``, oldest first."""
        variables: dict[str, Any] = {
            "team": team,
            "since": _iso(since),
            "first": PAGE_SIZE,
            "after": None,
        }
        tickets: list[Ticket] = []
        while True:
            data = await self.graphql.execute("ConveyorChangedIssues", CHANGED, variables)
            nodes, cursor = _page(data)
            tickets += [self._ticket(node, team) for node in nodes]
            if cursor is None:
                break
            if cursor == variables["after"]:
                raise TrackerError(f"linear issues for team {team}: the cursor did not advance")
            variables["after"] = cursor
        return sorted(tickets, key=lambda t: t.updated_at or since)

    def _ticket(self, node: Any, team: str) -> Ticket:
        if not isinstance(node, dict):
            raise TrackerError("linear answered an issue that is not an object")
        return issues.ticket_of(node, vocabulary=self.vocabulary, fail=_answer_error, team=team)


def comment_markdown(notice: Notice) -> str:
    """A Notice as the Markdown of a Linear comment. Linear stores a comment as its own
    document and writes ``body`` back from it, so an HTML comment is not sure to survive:
    the marker is a last line of inline code, which any Markdown round trip keeps."""
    text = dataclasses.replace(notice, marker="").as_markdown()
    return f"{text}\n\n`{notice.marker}`" if notice.marker else text


def _page(data: dict[str, Any]) -> tuple[list[Any], str | None]:
    """The page's nodes and the cursor of the next page (None on the last)."""
    return _connection(data.get("issues"), "issues")


def _connection(connection: Any, what: str) -> tuple[list[Any], str | None]:
    """A GraphQL connection's nodes and the cursor of its next page (None on the last)."""
    if not isinstance(connection, dict) or not isinstance(connection.get("nodes"), list):
        raise TrackerError(f"linear {what}: the answer has no nodes")
    info = connection.get("pageInfo")
    info = info if isinstance(info, dict) else {}
    if info.get("hasNextPage") is not True:
        return connection["nodes"], None
    cursor = info.get("endCursor")
    if not isinstance(cursor, str) or not cursor:
        raise TrackerError(f"linear {what}: hasNextPage without an endCursor")
    return connection["nodes"], cursor


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("since must be an aware datetime")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _answer_error(message: str) -> Exception:
    return TrackerError(f"linear answered an issue conveyor cannot read: {message}")
