from datetime import UTC, datetime, timedelta

import pytest
from agent_grid_contracts.public_run_tokens import InvalidRunToken, mint_run_token, verify_run_token

SECRET = b"0123456789abcdef-shared"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_a_minted_token_verifies_to_its_run_until_it_expires() -> None:
    token = mint_run_token(SECRET, "run-abc123", NOW + timedelta(hours=1))

    verified = verify_run_token(SECRET, token, now=NOW)

    assert verified.run_id == "run-abc123"
    assert verified.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(InvalidRunToken, match="expired"):
        verify_run_token(SECRET, token, now=NOW + timedelta(hours=1))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token.replace("run-abc123", "run-other1"),
        lambda token: token.rsplit(".", 2)[0] + ".9999999999." + token.rsplit(".", 1)[1],
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        lambda _token: "garbage",
        lambda token: token + ".extra",
    ],
)
def test_a_tampered_or_malformed_token_is_refused(tamper: object) -> None:
    token = mint_run_token(SECRET, "run-abc123", NOW + timedelta(hours=1))

    with pytest.raises(InvalidRunToken):
        verify_run_token(SECRET, tamper(token), now=NOW)  # type: ignore[operator]


def test_another_secret_does_not_verify() -> None:
    token = mint_run_token(SECRET, "run-abc123", NOW + timedelta(hours=1))

    with pytest.raises(InvalidRunToken, match="signature"):
        verify_run_token(b"another-secret-of-16+bytes", token, now=NOW)


def test_minting_refuses_a_short_secret_and_an_unsafe_run_id() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        mint_run_token(b"short", "run-1", NOW)
    with pytest.raises(ValueError, match="cannot be carried"):
        mint_run_token(SECRET, "run.1", NOW)
