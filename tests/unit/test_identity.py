"""The identity -> uuid mapping: uuid5 in the DNS namespace, exact, deterministic, strict."""

from __future__ import annotations

import unicodedata
import uuid

import pytest

import caller_memory.identity as identity
from caller_memory import set_default_memory
from caller_memory.identity import MAX_IDENTITY_LENGTH, livekit_identity_to_uuid, validate_identity

# The design summary's example values: no namespace or spelling of these identities produces
# them (uuid5 with the namespace its own code names, NAMESPACE_DNS, gives COMPUTED_VALUES).
SUMMARY_WRONG_VALUES = {
    "alice@example.com": "c112f154-a0fc-53b7-9c57-a741e6ee091c",
    "bob@example.com": "abb63e2b-1182-58fb-b239-0b403dc4344f",
    "user-abc-123": "facff94b-d495-5ddf-aba2-d729157f0090",
}
# uuid5(NAMESPACE_DNS, identity), written out (README's "Verify" step shows them) and also
# recomputed by the test with the uuid module.
COMPUTED_VALUES = {
    "alice@example.com": "edabafbb-61ad-51d6-9fd8-e976c892a731",
    "bob@example.com": "1bbc064c-d74a-56e6-a2b9-009139975e85",
    "user-abc-123": "6f840c3a-5446-51bc-99b0-e0d11d172cef",
}


@pytest.mark.parametrize(
    "who",
    [
        "alice@example.com",
        "bob@example.com",
        "user-abc-123",
        "PA_abc123def456",
        "sip_+15551234567",
        "Ünïcødé 名前 🎧",
        " padded ",
        "x" * MAX_IDENTITY_LENGTH,
    ],
)
def test_equals_uuid5_in_the_dns_namespace(who: str) -> None:
    expected = str(uuid.uuid5(uuid.NAMESPACE_DNS, who))
    got = livekit_identity_to_uuid(who)
    assert got == expected
    parsed = uuid.UUID(got)
    assert parsed.version == 5
    assert str(parsed) == got  # canonical lower-case, hyphenated


def test_dns_namespace_is_the_summarys_constant() -> None:
    assert uuid.NAMESPACE_DNS == uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    assert identity.identity_namespace() == uuid.NAMESPACE_DNS


@pytest.mark.parametrize("who", sorted(COMPUTED_VALUES))
def test_the_real_values_and_not_the_summarys(who: str) -> None:
    computed = str(uuid.uuid5(uuid.NAMESPACE_DNS, who))
    got = livekit_identity_to_uuid(who)
    assert got == computed
    assert got == COMPUTED_VALUES[who]
    assert got != SUMMARY_WRONG_VALUES[who]
    assert not got.startswith(SUMMARY_WRONG_VALUES[who][:8])


def test_deterministic_and_distinct() -> None:
    identities = [f"caller-{i}@example.com" for i in range(200)]
    first = [livekit_identity_to_uuid(x) for x in identities]
    second = [livekit_identity_to_uuid(x) for x in reversed(identities)][::-1]
    assert first == second
    assert len(set(first)) == len(identities)


def test_identity_namespace_changes_the_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process's namespace is read from the environment once (with the default settings);
    # `set_default_memory(None)` makes the next use read the environment again.
    who = "alice@example.com"
    default = livekit_identity_to_uuid(who)
    custom = uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100")
    monkeypatch.setenv("IDENTITY_NAMESPACE", str(custom))
    set_default_memory(None)
    assert identity.identity_namespace() == custom
    got = livekit_identity_to_uuid(who)
    assert got == str(uuid.uuid5(custom, who))
    assert got != default
    # An explicit namespace wins over the process's.
    assert livekit_identity_to_uuid(who, uuid.NAMESPACE_DNS) == default
    monkeypatch.setenv("IDENTITY_NAMESPACE", "  ")  # blank means the default
    set_default_memory(None)
    assert livekit_identity_to_uuid(who) == default
    monkeypatch.delenv("IDENTITY_NAMESPACE")
    set_default_memory(None)
    assert livekit_identity_to_uuid(who) == default


@pytest.mark.parametrize("bad", ["not-a-uuid", "6ba7b810-9dad-11d1-80b4", "zzzz"])
def test_malformed_namespace_raises_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("IDENTITY_NAMESPACE", bad)
    set_default_memory(None)
    with pytest.raises(ValueError, match=r"IDENTITY_NAMESPACE must be a UUID") as info:
        livekit_identity_to_uuid("alice@example.com")
    assert "unset it to use the default namespace" in str(info.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "must not be empty or only whitespace"),
        ("   ", "must not be empty or only whitespace"),
        ("\t\n\r ", "must not be empty or only whitespace"),
        (None, "must be a string, got NoneType"),
        (42, "must be a string, got int"),
        (b"alice@example.com", "must be a string, got bytes"),
        ("x" * (MAX_IDENTITY_LENGTH + 1), f"at most {MAX_IDENTITY_LENGTH} characters"),
        ("alice\x00@example.com", "must not contain NUL"),
        ("\x00", "must not contain NUL"),
        ("lone surrogate \ud800", "valid Unicode"),
    ],
)
def test_invalid_identities_raise(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        livekit_identity_to_uuid(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        validate_identity(bad)


def test_length_limit_is_inclusive() -> None:
    at_limit = "a" * MAX_IDENTITY_LENGTH
    assert validate_identity(at_limit) is at_limit
    assert livekit_identity_to_uuid(at_limit) == str(uuid.uuid5(uuid.NAMESPACE_DNS, at_limit))


def test_case_whitespace_and_normalisation_are_kept() -> None:
    nfc = unicodedata.normalize("NFC", "josé@example.com")
    nfd = unicodedata.normalize("NFD", "josé@example.com")
    assert nfc != nfd  # precomposed "é" vs "e" + combining accent
    variants = [
        "alice@example.com",
        "Alice@example.com",
        "ALICE@EXAMPLE.COM",
        " alice@example.com",
        "alice@example.com ",
        nfc,
        nfd,
    ]
    uuids = [livekit_identity_to_uuid(v) for v in variants]
    assert len(set(uuids)) == len(variants)
    for variant, got in zip(variants, uuids, strict=True):
        assert got == str(uuid.uuid5(uuid.NAMESPACE_DNS, variant))
