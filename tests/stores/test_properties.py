"""Properties over generated identities and memory text (hypothesis).

- The identity mapping is `uuid5(NAMESPACE_DNS, identity)` for every usable identity, exactly
  as given, and no two different identities share a uuid; unusable ones raise `ValueError`.
- Whatever key and value text a caller's memory holds (any script, emoji, quotes, `%`, `_`,
  `*`, control characters; never NUL or lone surrogates, which are refused), storing it and
  reading it back gives exactly the same text, for that caller only: on SQLite, and with
  fewer examples on Postgres.
- Search never raises, whatever the text, and only ever returns the current caller's memories.
"""

from __future__ import annotations

import unicodedata
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caller_memory import MemoryCategory, MemoryManager, livekit_identity_to_uuid, session_user
from caller_memory.identity import MAX_IDENTITY_LENGTH
from caller_memory.profiles import aensure_profile_exists, aget_profile
from caller_memory.recall.query import build_search_query
from caller_memory.stores.base import MemoryStore
from caller_memory.stores.sqlite import SQLiteMemoryStore, fts_match_expression
from caller_memory.validation import MAX_KEY_LENGTH, MAX_VALUE_LENGTH

# Function-scoped fixtures (the store, the environment) are shared by a test's examples on
# purpose: every example uses its own caller or key, so they cannot disturb each other.
COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "derandomize": False,
}

# Characters that are syntax somewhere (SQL, LIKE, FTS5, tsquery, JSON, the memory block).
SPECIAL = [
    *"%_*\"'\\:^()-+<>{}[];,.!?&|~@#$/=`",
    "NEAR",
    "OR",
    "AND",
    "NOT",
    "</caller_memories>",
    "\n",
    "\r\n",
    "\t",
    "\u202e",
    "\u200d",
    "\ufeff",
    "\uffff",
]
# Every code point except NUL and the surrogates: what the stores must keep exactly.
STORABLE_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
STORABLE_TEXT = st.lists(
    st.one_of(STORABLE_CHAR, st.sampled_from(SPECIAL), st.sampled_from(["é", "🎉", "日本", "ß"])),
    max_size=60,
).map("".join)


def _repeat_to(piece: str, length: int) -> str:
    return (piece * (length // len(piece) + 1))[:length]


IDENTITIES = STORABLE_TEXT.filter(lambda s: s.strip() != "" and len(s) <= MAX_IDENTITY_LENGTH)
KEYS = STORABLE_TEXT.filter(lambda s: s.strip() != "" and len(s) <= MAX_KEY_LENGTH)
NONBLANK_TEXT = STORABLE_TEXT.filter(lambda s: s.strip() != "")
# Values at the length limit are a generated piece repeated up to a generated length: drawing
# 8,000 independent characters would exceed hypothesis's per-example data budget, and the
# stores treat a long value as one string whatever it repeats.
LONG_VALUES = st.tuples(NONBLANK_TEXT, st.integers(MAX_VALUE_LENGTH - 5, MAX_VALUE_LENGTH)).map(
    lambda piece_and_length: _repeat_to(*piece_and_length)
)
VALUES = st.one_of(NONBLANK_TEXT, LONG_VALUES)
CATEGORIES = st.sampled_from(list(MemoryCategory))

# Anything at all a caller might send as a search, including NUL and lone surrogates.
ANY_CHAR = st.characters(exclude_categories=())
WORDS = ["color", "blue", "nurse", "hospital", "sale", "pilot", "purple", "coupon", "bob", "only"]
QUERIES = st.lists(
    st.one_of(
        st.sampled_from(WORDS),
        st.sampled_from(SPECIAL),
        st.text(ANY_CHAR, max_size=8),
    ),
    max_size=12,
).map(" ".join)


def uuid5(identity: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, identity))


# -- the identity mapping -----------------------------------------------------------------------


@settings(max_examples=200, **COMMON)
@given(identity=IDENTITIES)
def test_identity_maps_to_uuid5_of_itself_unchanged(identity: str) -> None:
    assert livekit_identity_to_uuid(identity) == uuid5(identity)


@settings(max_examples=150, **COMMON)
@given(identities=st.lists(IDENTITIES, min_size=2, max_size=30, unique=True))
def test_identity_mapping_is_injective(identities: list[str]) -> None:
    uuids = {livekit_identity_to_uuid(identity) for identity in identities}
    assert len(uuids) == len(identities)


@settings(max_examples=150, **COMMON)
@given(
    identity=st.one_of(
        st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2003\u3000"), max_size=20),
        st.tuples(st.text(max_size=20), st.text(max_size=20)).map(lambda t: f"{t[0]}\x00{t[1]}"),
        st.text(min_size=MAX_IDENTITY_LENGTH + 1, max_size=MAX_IDENTITY_LENGTH + 50),
        st.tuples(st.text(max_size=5), st.characters(categories=("Cs",))).map("".join),
    )
)
def test_unusable_identities_raise_value_error(identity: str) -> None:
    with pytest.raises(ValueError, match="LiveKit identity must"):
        livekit_identity_to_uuid(identity)


# -- the store round trip -----------------------------------------------------------------------


async def _round_trip(
    store: MemoryStore, identity: str, category: MemoryCategory, key: str, value: str
) -> None:
    manager = MemoryManager(store)
    with session_user(identity) as user_uuid:
        assert user_uuid == uuid5(identity)
        await aensure_profile_exists(store=store)
        await manager.astore(category, key, value)
        assert await manager.aretrieve(category, key) == value
        listed = {(m.category, m.key): m.value for m in await manager.alist()}
        assert listed[(category.value, key.strip())] == value
        profile = await aget_profile(store=store)
        assert profile is not None and profile.original_identity == identity
    # Another caller never sees it.
    with session_user(identity + "\u2060other"):
        assert await manager.aretrieve(category, key) is None
    with session_user(identity):
        assert await manager.aforget(category, key) is True
        assert await manager.aretrieve(category, key) is None


@settings(max_examples=150, **COMMON)
@given(identity=IDENTITIES, category=CATEGORIES, key=KEYS, value=VALUES)
async def test_sqlite_round_trip_is_exact(
    sqlite_store: SQLiteMemoryStore, identity: str, category: MemoryCategory, key: str, value: str
) -> None:
    await _round_trip(sqlite_store, identity, category, key, value)


@pytest.mark.postgres
@settings(max_examples=40, **COMMON)
@given(identity=IDENTITIES, category=CATEGORIES, key=KEYS, value=VALUES)
async def test_postgres_round_trip_is_exact(
    postgres_store: MemoryStore, identity: str, category: MemoryCategory, key: str, value: str
) -> None:
    await _round_trip(postgres_store, identity, category, key, value)


# -- search ---------------------------------------------------------------------------------------

ALICE = "alice@example.com"
BOB = "bob@example.com"
ALICE_MEMORIES = [
    ("FACT", "job", "nurse at the city hospital"),
    ("PREFERENCE", "favorite_color", "blue"),
    ("FACT", "coupon", "50% off_sale at the bakery"),
]
BOB_MEMORIES = [
    ("FACT", "job", "bob only: pilot, nurse, hospital, sale, coupon"),
    ("PREFERENCE", "favorite_color", "bob only: purple color"),
    ("LORE", "syntax", "bob only % _ * NEAR OR AND NOT ' \\ : ^ ( ) - \" </caller_memories>"),
]


async def _seed(store: MemoryStore) -> MemoryManager:
    manager = MemoryManager(store)
    for identity, memories in ((ALICE, ALICE_MEMORIES), (BOB, BOB_MEMORIES)):
        with session_user(identity):
            if not await manager.alist():
                for category, key, value in memories:
                    await manager.astore(category, key, value)
    return manager


async def _search_stays_with_the_caller(store: MemoryStore, query: str, limit: int) -> None:
    manager = await _seed(store)
    with session_user(ALICE):
        found = await manager.asearch(query, limit=limit)
    assert len(found) <= limit
    assert {(m.category, m.key, m.value) for m in found} <= set(ALICE_MEMORIES)
    with session_user(BOB):
        found = await manager.asearch(query, limit=limit)
    assert {(m.category, m.key, m.value) for m in found} <= set(BOB_MEMORIES)


@settings(max_examples=200, **COMMON)
@given(query=st.one_of(QUERIES, st.text(ANY_CHAR)), limit=st.integers(1, 100))
async def test_sqlite_search_never_raises_and_stays_with_the_caller(
    sqlite_store: SQLiteMemoryStore, query: str, limit: int
) -> None:
    await _search_stays_with_the_caller(sqlite_store, query, limit)
    # The store itself, given the raw text: still safe (no FTS5 syntax error, one user).
    found = await sqlite_store.search_memories(uuid5(ALICE), query, limit)
    assert {(m.category, m.key, m.value) for m in found} <= set(ALICE_MEMORIES)


@pytest.mark.postgres
@settings(max_examples=50, **COMMON)
@given(query=st.one_of(QUERIES, st.text(ANY_CHAR)), limit=st.integers(1, 100))
async def test_postgres_search_never_raises_and_stays_with_the_caller(
    postgres_store: MemoryStore, query: str, limit: int
) -> None:
    await _search_stays_with_the_caller(postgres_store, query, limit)


@settings(max_examples=200, **COMMON)
@given(user=st.uuids(), query=st.text(ANY_CHAR))
def test_fts_expression_names_only_its_user_and_quotes_every_word(
    user: uuid.UUID, query: str
) -> None:
    expression = fts_match_expression(str(user), query)
    if expression is None:
        return
    prefix = f'user_tok:"u{user.hex}" AND ('
    assert expression.startswith(prefix) and expression.endswith(")")
    terms = expression[len(prefix) : -1].split(" OR ")
    for term in terms:
        assert term.startswith('"') and term.endswith('"') and is_plain_word(term[1:-1]), term


def is_plain_word(term: str) -> bool:
    """Letters, digits and combining marks (a Hindi word keeps its vowel signs), with an
    inner apostrophe at most: nothing any store could read as query syntax."""
    return (
        bool(term)
        and term[0].isalnum()
        and all(c.isalnum() or unicodedata.category(c)[0] == "M" or c == "'" for c in term)
    )


@settings(max_examples=200, **COMMON)
@given(query=st.one_of(QUERIES, st.text(ANY_CHAR, max_size=300)))
def test_search_query_is_plain_words(query: str) -> None:
    terms = build_search_query(query)
    for term in terms.split(" ") if terms else []:
        assert is_plain_word(term), term
        term.encode("utf-8")  # never a lone surrogate
