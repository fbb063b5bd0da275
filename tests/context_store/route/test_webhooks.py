"""Standard Webhooks signing and verification on the published test vector and its failure modes."""

from __future__ import annotations

import base64

import pytest

from context_store.errors import ConfigError, WebhookRejected
from context_store.route.webhooks import decode_secret, generate_secret, sign, sign_headers, verify

# The Standard Webhooks reference vector (standard-webhooks/standard-webhooks test suites).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(sig: str = EXPECTED, ts: int = TS, msg_id: str = MSG_ID) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_reference_vector_signs_and_verifies() -> None:
    assert sign(SECRET, MSG_ID, TS, BODY) == EXPECTED
    assert sign(SECRET.removeprefix("whsec_"), MSG_ID, TS, BODY) == EXPECTED  # prefix optional
    assert verify([SECRET], headers(), BODY, now=TS) == (MSG_ID, TS)


def test_several_signatures_and_rotated_secrets() -> None:
    other = generate_secret()
    # the header may carry unknown schemes and several signatures; one match is enough
    assert verify([SECRET], headers(f"v1a,xyz v1,{base64.b64encode(b'x' * 32).decode()} {EXPECTED}"), BODY, now=TS)
    # a receiver holding the old and the new secret accepts both during rotation
    assert verify([other, SECRET], headers(), BODY, now=TS)
    new_sig = sign(other, MSG_ID, TS, BODY)
    assert verify([other, SECRET], headers(new_sig), BODY, now=TS)
    signed = sign_headers([SECRET, other], BODY, webhook_id=MSG_ID, timestamp=TS)
    assert signed.signature == f"{EXPECTED} {new_sig}"
    assert verify([other], signed.as_dict(), BODY, now=TS)


@pytest.mark.parametrize(
    ("hdrs", "body", "now", "reason", "status"),
    [
        (headers(), BODY + b" ", TS, "bad_signature", 401),  # one byte of the body changed
        (headers(msg_id="msg_other"), BODY, TS, "bad_signature", 401),
        (headers(sig="v1,not base64!!"), BODY, TS, "bad_signature", 401),
        (headers(sig="v2," + EXPECTED[3:]), BODY, TS, "bad_signature", 401),
        (headers(), BODY, TS + 301, "timestamp_too_old", 401),
        (headers(), BODY, TS - 301, "timestamp_in_future", 401),
        (headers(ts="soon"), BODY, TS, "bad_timestamp", 400),  # type: ignore[arg-type]
        ({"webhook-id": MSG_ID, "webhook-timestamp": str(TS)}, BODY, TS, "missing_headers", 400),
    ],
)
def test_rejections(hdrs: dict[str, str], body: bytes, now: int, reason: str, status: int) -> None:
    with pytest.raises(WebhookRejected) as info:
        verify([SECRET], hdrs, body, now=now)
    assert info.value.reason == reason and info.value.status == status


def test_tolerance_edges_and_wrong_secret() -> None:
    assert verify([SECRET], headers(), BODY, now=TS + 300)
    assert verify([SECRET], headers(), BODY, now=TS - 300)
    with pytest.raises(WebhookRejected, match="bad_signature"):
        verify([generate_secret()], headers(), BODY, now=TS)
    with pytest.raises(WebhookRejected) as info:
        verify([], headers(), BODY, now=TS)
    assert info.value.status == 503


def test_bad_secrets_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        decode_secret("whsec_%%%")
    with pytest.raises(ConfigError):
        decode_secret("whsec_" + base64.b64encode(b"short").decode())
    assert len(decode_secret(generate_secret())) == 24
