"""The signature and content-type checks every forge's webhook goes through
(integrations/trackers/signing.py and labels/delivery.py): what is accepted and what is
refused, and that a refusal is never an exception of another kind (a 500)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from integrations.trackers.base import BadPayload, BadSignature
from integrations.trackers.labels.delivery import (
    check_signature,
    delivery_id,
    header,
    load_object,
    refuse_form_encoded,
)
from integrations.trackers.signing import hmac_sha256_hex, signature_matches

SECRET = "s3cret-webhook-key-0123"
BODY = b'{"action": "labeled", "number": 12}'
HEX = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
SETTING = "[trackers.gitea] webhook_secret"
HEX_HEADERS = ("X-Gitea-Signature", "X-Forgejo-Signature")


def test_the_digest_is_lowercase_hex_hmac_sha256_of_the_raw_body() -> None:
    assert hmac_sha256_hex(SECRET, BODY) == HEX
    assert (
        hmac_sha256_hex("ключ-секрет-0123456789", b"x")
        == hmac.new("ключ-секрет-0123456789".encode(), b"x", hashlib.sha256).hexdigest()
    )


@pytest.mark.parametrize(
    "given",
    [HEX, HEX.upper(), f"  {HEX}\t", f"{HEX}\n"],
)
def test_a_matching_signature_matches_whatever_its_case_and_padding(given: str) -> None:
    assert signature_matches(SECRET, BODY, given)


@pytest.mark.parametrize(
    "given",
    [f"sha256={HEX}", f"SHA256={HEX.upper()}", f" sha256={HEX} ", f"Sha256={HEX}"],
)
def test_a_prefixed_signature_matches(given: str) -> None:
    assert signature_matches(SECRET, BODY, given, prefix="sha256=")
    assert signature_matches(SECRET, BODY, given, prefix="SHA256=")


@pytest.mark.parametrize(
    ("secret", "body", "given", "prefix"),
    [
        ("", BODY, hmac_sha256_hex("", BODY), ""),  # unconfigured never matches
        (SECRET, BODY, None, ""),
        (SECRET, BODY, "", ""),
        (SECRET, BODY, "   ", ""),
        (SECRET, BODY + b" ", HEX, ""),  # the raw body, byte for byte
        ("another-secret-0123", BODY, HEX, ""),
        (SECRET, BODY, HEX[:-1], ""),
        (SECRET, BODY, HEX + "0", ""),
        (SECRET, BODY, HEX, "sha256="),  # the prefix is required when named
        (SECRET, BODY, f"sha1={HEX}", "sha256="),
        (SECRET, BODY, f"sha256={HEX}", ""),
        (SECRET, BODY, f"sha256=={HEX}", "sha256="),
        (SECRET, BODY, "sha256=", "sha256="),
        (SECRET, BODY, f"{HEX[:-1]}\udc80", ""),  # not ASCII: no match, no exception
        (SECRET, BODY, f"{HEX[:-1]}é", ""),
    ],
)
def test_what_does_not_match(secret: str, body: bytes, given: str | None, prefix: str) -> None:
    assert not signature_matches(secret, body, given, prefix=prefix)


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # says nothing about its type
        "",
        "application/json",
        "Application/JSON",
        " application/json ",
        "application/json; charset=utf-8",
        "application/json ;charset=UTF-8",
        "application/vnd.github+json",
        "application/merge-patch+JSON; x=1",
    ],
)
def test_json_or_no_content_type_is_accepted(content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    refuse_form_encoded(headers, "Gitea")
    assert load_object(headers, BODY, "Gitea") == {"action": "labeled", "number": 12}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "APPLICATION/X-WWW-FORM-URLENCODED",
        " application/x-www-form-urlencoded ; charset=utf-8",
    ],
)
def test_a_form_content_type_is_told_to_use_json(content_type: str) -> None:
    with pytest.raises(BadPayload, match=r"form-encoded \(application/x-www-form-urlencoded\)"):
        refuse_form_encoded({"Content-Type": content_type}, "Gitea")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/jsonx", "json", "text/json+xml", "multipart/form-data"],
)
def test_another_content_type_is_refused(content_type: str) -> None:
    with pytest.raises(BadPayload, match="not application/json") as refused:
        refuse_form_encoded({"Content-Type": content_type}, "Gitea")
    assert "in the Gitea webhook settings" in refused.value.message


def test_the_refused_content_type_is_quoted_bounded() -> None:
    long = "text/" + "x" * 200
    with pytest.raises(BadPayload) as refused:
        refuse_form_encoded({"Content-Type": long}, "GitHub")
    assert repr(long[:80]) in refused.value.message
    assert repr(long[:81]) not in refused.value.message


@pytest.mark.parametrize("body", [b"payload=%7B%7D", b"  \npayload=%7B%7D", b"payload={}"])
def test_a_form_body_is_told_to_use_json_whatever_its_content_type(body: bytes) -> None:
    with pytest.raises(BadPayload, match="form-encoded"):
        load_object({"Content-Type": "application/json"}, body, "Gitea")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "body is not JSON"),
        (b"\xff\xfe{", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "(nested too deeply|not JSON)"),
        (b" " * 70 + b"payload=1", "body is not JSON"),  # past the first 64 bytes
    ],
)
def test_a_body_that_is_no_json_object_is_refused(body: bytes, why: str) -> None:
    with pytest.raises(BadPayload, match=why):
        load_object({}, body, "Gitea")


def test_headers_are_found_whatever_their_case_even_empty() -> None:
    headers = {"X-Gitea-Delivery": "", "x-forgejo-delivery": "abc"}
    assert header(headers, "x-gitea-delivery") == ""
    assert header(headers, "X-Missing", "X-FORGEJO-DELIVERY") == "abc"
    assert header(headers, "X-Missing") is None
    assert delivery_id(headers, "X-Forgejo-Delivery", "X-Gitea-Delivery") == "abc"
    # The first header present decides, even empty: no falling through to the next.
    with pytest.raises(BadPayload, match="missing header: X-Gitea-Delivery"):
        delivery_id(headers, "X-Gitea-Delivery", "X-Forgejo-Delivery")
    assert delivery_id({"X-Gitea-Delivery": " d-1 "}, "X-Gitea-Delivery") == "d-1"
    with pytest.raises(BadPayload, match="missing header: X-Gitea-Delivery"):
        delivery_id({"X-Gitea-Delivery": "  "}, "X-Gitea-Delivery")


def check(headers: dict[str, str], secret: str = SECRET) -> None:
    check_signature(headers, BODY, secret=secret, hex_headers=HEX_HEADERS, setting=SETTING)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Gitea-Signature": HEX},
        {"x-forgejo-signature": HEX.upper()},
        {"X-Gitea-Signature": "", "X-Forgejo-Signature": HEX},  # empty counts as missing
        {"X-Gitea-Signature": "  ", "X-Hub-Signature-256": f"sha256={HEX}"},
        {"X-Hub-Signature-256": f"SHA256={HEX}"},
    ],
)
def test_a_matching_header_is_accepted(headers: dict[str, str]) -> None:
    check(headers)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"X-Gitea-Signature": "0" * 64}, "X-Gitea-Signature does not match"),
        # The first hex header given decides: a wrong one is not rescued by another.
        (
            {"X-Gitea-Signature": "0" * 64, "X-Forgejo-Signature": HEX},
            "X-Gitea-Signature does not match",
        ),
        ({"X-Forgejo-Signature": f"sha256={HEX}"}, "X-Forgejo-Signature does not match"),
        ({"X-Hub-Signature-256": HEX}, "X-Hub-Signature-256 does not match"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "X-Hub-Signature-256 does not match"),
        ({"X-Hub-Signature-256": "sha256="}, "no signature"),
        ({"X-Hub-Signature-256": " SHA256= "}, "no signature"),
        ({"X-Hub-Signature-256": " "}, "no signature"),
        ({}, "no signature"),
    ],
)
def test_a_missing_or_wrong_signature_is_refused(headers: dict[str, str], why: str) -> None:
    with pytest.raises(BadSignature, match=why) as refused:
        check(headers)
    assert SETTING in refused.value.message


def test_the_missing_signature_names_every_header_looked_for() -> None:
    with pytest.raises(BadSignature) as refused:
        check({})
    assert (
        "(X-Gitea-Signature, X-Forgejo-Signature, X-Hub-Signature-256 missing or empty)"
        in refused.value.message
    )


def test_no_secret_refuses_even_a_signature_made_with_none() -> None:
    with pytest.raises(BadSignature, match="no webhook secret is configured"):
        check({"X-Gitea-Signature": hmac_sha256_hex("", BODY)}, secret="")
