"""Headers, body and signature of a forge's webhook delivery."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from integrations.trackers.base import BadPayload, BadSignature, Headers
from integrations.trackers.labels.fields import bounded_id
from integrations.trackers.signing import signature_matches

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_FORM_REFUSED = (
    "the body is form-encoded ({content_type}): set the webhook's content type to "
    "application/json in the {tracker} webhook settings"
)
_NOT_JSON_TYPE = (
    "Content-Type is {content_type!r}, not application/json: set the webhook's content "
    "type to application/json in the {tracker} webhook settings"
)


def header(headers: Headers, *names: str) -> str | None:
    """The first of ``names`` present (case-insensitively), even when empty."""
    lowered = {key.lower(): value for key, value in headers.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def refuse_form_encoded(headers: Headers, tracker: str) -> None:
    """Raise BadPayload unless the delivery is JSON (or says nothing about its type).

    Gitea signs the JSON inside a form delivery, not the form itself, so a form delivery
    can never verify: say what to change instead of calling the signature wrong.
    """
    content_type = (header(headers, "Content-Type") or "").strip()
    media = content_type.split(";", 1)[0].strip().lower()
    if media == FORM_CONTENT_TYPE:
        raise BadPayload(_FORM_REFUSED.format(content_type=media, tracker=tracker))
    if media and media != "application/json" and not media.endswith("+json"):
        raise BadPayload(_NOT_JSON_TYPE.format(content_type=content_type[:80], tracker=tracker))


def load_object(headers: Headers, body: bytes, tracker: str) -> dict[str, Any]:
    """The body as a JSON object, or BadPayload saying why not."""
    refuse_form_encoded(headers, tracker)
    if body[:64].lstrip().startswith(b"payload="):
        raise BadPayload(_FORM_REFUSED.format(content_type=FORM_CONTENT_TYPE, tracker=tracker))
    try:
        doc = json.loads(body)
    except RecursionError:
        raise BadPayload("body is nested too deeply to be a webhook") from None
    except (ValueError, UnicodeDecodeError):
        raise BadPayload("body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadPayload("body is not a JSON object")
    return doc


def delivery_id(headers: Headers, *names: str) -> str:
    """The delivery id header (the first of ``names`` that is set), bounded."""
    value = header(headers, *names)
    if value is None or not value.strip():
        raise BadPayload(f"missing header: {names[0]}")
    return bounded_id(value.strip(), names[0])


def check_signature(
    headers: Headers, body: bytes, *, secret: str, hex_headers: Iterable[str], setting: str
) -> None:
    """Raise BadSignature unless a signature header matches the body.

    ``hex_headers`` carry the bare hex digest; ``X-Hub-Signature-256`` (``sha256=<hex>``)
    is the fallback. ``setting`` names where the secret is configured, for the message.
    """
    if not secret:
        raise BadSignature(f"no webhook secret is configured: set {setting}")
    for name in hex_headers:
        given = header(headers, name)
        if given and given.strip():
            if signature_matches(secret, body, given):
                return
            raise BadSignature(
                f"{name} does not match the body: is {setting} the webhook's secret?"
            )
    given = header(headers, "X-Hub-Signature-256")
    if given and given.strip() and given.strip().lower() != "sha256=":
        if signature_matches(secret, body, given, prefix="sha256="):
            return
        raise BadSignature(
            f"X-Hub-Signature-256 does not match the body: is {setting} the webhook's secret?"
        )
    names = ", ".join([*hex_headers, "X-Hub-Signature-256"])
    raise BadSignature(
        f"no signature ({names} missing or empty): give the webhook a secret, the same as {setting}"
    )
