"""One contract, every store: the same calls must give the same exact results on each backend.

The suite runs once per entry of `BACKENDS`. A backend joins by adding a param there and a
fixture named `<param>_store` that yields a fresh, empty store (see `sqlite_store` in
conftest.py and `postgres_store` in postgres_fixtures.py). Tests that need real concurrent
connections run over `CONCURRENT_BACKENDS` the same way.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from caller_memory.stores.base import MemoryStore
from caller_memory.sync_bridge import run_sync
from caller_memory.types import CATEGORY_PRIORITY, Memory, WriteOutcome

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("supabase", id="supabase", marks=pytest.mark.postgres),
]
CONCURRENT_BACKENDS = [
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("supabase", id="supabase", marks=pytest.mark.postgres),
]

ALICE = str(uuid.uuid5(uuid.NAMESPACE_DNS, "alice@example.com"))
BOB = str(uuid.uuid5(uuid.NAMESPACE_DNS, "bob@example.com"))
CAROL = str(uuid.uuid5(uuid.NAMESPACE_DNS, "user-abc-123"))
NOBODY = str(uuid.uuid5(uuid.NAMESPACE_DNS, "nobody@example.com"))

# Text a caller might say that is query syntax somewhere: FTS5, tsquery, LIKE, SQL quoting.
OPERATOR_QUERIES = [
    "%",
    "_",
    "%%",
    '"',
    '"unterminated',
    "*",
    "NEAR",
    "NEAR(x y)",
    "OR",
    "color OR",
    "AND NOT",
    "'",
    "it's",
    "\\",
    "\\'; DROP TABLE memories; --",
    "&",
    "|",
    "!",
    ":",
    "color:*",
    "& | ! :",
    "(",
    ")",
    "-color",
    "^color",
    "color*",
    "{color}",
    "?",
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> MemoryStore:
    """A fresh, empty store of each backend in turn."""
    backend: MemoryStore = request.getfixturevalue(f"{request.param}_store")
    return backend


@pytest.fixture(params=CONCURRENT_BACKENDS)
def concurrent_store(request: pytest.FixtureRequest) -> MemoryStore:
    """A fresh store with enough connections for 50 truly simultaneous calls."""
    backend: MemoryStore = request.getfixturevalue(f"wide_{request.param}_store")
    return backend


@pytest.fixture
async def wide_postgres_store(
    make_postgres_store: Callable[..., MemoryStore],
) -> AsyncIterator[MemoryStore]:
    yield make_postgres_store(min_size=0, max_size=50)


def triples(memories: list[Memory]) -> list[tuple[str, str, str]]:
    return [(m.category, m.key, m.value) for m in memories]


async def tick() -> None:
    """Let the clock move, so consecutive writes get distinct `updated_at` values."""
    await asyncio.sleep(0.005)


# -- profiles ---------------------------------------------------------------------------------


async def test_ensure_profile_creates_once_and_is_idempotent(store: MemoryStore) -> None:
    profile, created = await store.ensure_profile(ALICE, "alice@example.com")
    assert created is True
    assert profile.id == ALICE
    assert profile.original_identity == "alice@example.com"
    assert profile.is_first_login is True
    assert profile.created_at is not None

    again, created_again = await store.ensure_profile(ALICE, "alice@example.com")
    assert created_again is False
    assert again.id == ALICE
    assert again.original_identity == "alice@example.com"
    assert again.is_first_login is True
    assert again.created_at == profile.created_at

    assert await store.get_profile(ALICE) == again
    assert await store.get_profile(NOBODY) is None


async def test_ensure_profile_fills_a_missing_identity_once(store: MemoryStore) -> None:
    profile, created = await store.ensure_profile(BOB, None)
    assert (created, profile.original_identity) == (True, None)

    profile, created = await store.ensure_profile(BOB, "bob@example.com")
    assert (created, profile.original_identity) == (False, "bob@example.com")

    profile, created = await store.ensure_profile(BOB, "someone-else")
    assert (created, profile.original_identity) == (False, "bob@example.com")
    stored = await store.get_profile(BOB)
    assert stored is not None and stored.original_identity == "bob@example.com"


async def test_complete_first_login_flips_exactly_once(store: MemoryStore) -> None:
    assert await store.complete_first_login(NOBODY) is False
    await store.ensure_profile(ALICE, "alice@example.com")

    assert await store.complete_first_login(ALICE) is True
    assert await store.complete_first_login(ALICE) is False
    profile = await store.get_profile(ALICE)
    assert profile is not None and profile.is_first_login is False

    _, created = await store.ensure_profile(ALICE, "alice@example.com")
    assert created is False
    profile = await store.get_profile(ALICE)
    assert profile is not None and profile.is_first_login is False


# -- memories ---------------------------------------------------------------------------------


async def test_upsert_replaces_the_value_of_a_key(store: MemoryStore) -> None:
    await store.upsert_memory(ALICE, "PREFERENCE", "favorite_color", "blue")
    [first] = await store.list_memories(ALICE)
    await tick()
    await store.upsert_memory(ALICE, "PREFERENCE", "favorite_color", "red")

    assert await store.get_memory(ALICE, "PREFERENCE", "favorite_color") == "red"
    [only] = await store.list_memories(ALICE)
    assert (only.category, only.key, only.value) == ("PREFERENCE", "favorite_color", "red")
    assert only.created_at == first.created_at
    assert only.updated_at is not None and first.updated_at is not None
    assert only.updated_at > first.updated_at


async def test_same_key_in_another_category_or_user_is_another_memory(
    store: MemoryStore,
) -> None:
    await store.upsert_memory(ALICE, "PREFERENCE", "color", "blue")
    await store.upsert_memory(ALICE, "OPINION", "color", "overrated")
    await store.upsert_memory(BOB, "PREFERENCE", "color", "green")

    assert await store.get_memory(ALICE, "PREFERENCE", "color") == "blue"
    assert await store.get_memory(ALICE, "OPINION", "color") == "overrated"
    assert await store.get_memory(BOB, "PREFERENCE", "color") == "green"
    assert await store.get_memory(BOB, "OPINION", "color") is None
    assert await store.get_memory(ALICE, "FACT", "color") is None
    assert await store.get_memory(NOBODY, "PREFERENCE", "color") is None


async def test_upsert_creates_a_missing_profile(store: MemoryStore) -> None:
    await store.upsert_memory(CAROL, "FACT", "job", "nurse", identity="user-abc-123")
    profile = await store.get_profile(CAROL)
    assert profile is not None
    assert (profile.id, profile.original_identity, profile.is_first_login) == (
        CAROL,
        "user-abc-123",
        True,
    )

    await store.upsert_memory(BOB, "FACT", "job", "pilot")
    profile = await store.get_profile(BOB)
    assert profile is not None and profile.original_identity is None

    # The profile a write created is an existing profile from then on.
    _, created = await store.ensure_profile(CAROL, "user-abc-123")
    assert created is False


async def test_delete_memory(store: MemoryStore) -> None:
    await store.upsert_memory(ALICE, "FACT", "job", "nurse")
    await store.upsert_memory(ALICE, "FACT", "pet", "a cat")

    assert await store.delete_memory(ALICE, "FACT", "job") is True
    assert await store.delete_memory(ALICE, "FACT", "job") is False
    assert await store.delete_memory(BOB, "FACT", "pet") is False
    assert await store.get_memory(ALICE, "FACT", "job") is None
    assert triples(await store.list_memories(ALICE)) == [("FACT", "pet", "a cat")]


async def test_delete_user_removes_only_that_user(store: MemoryStore) -> None:
    await store.ensure_profile(ALICE, "alice@example.com")
    await store.upsert_memory(ALICE, "FACT", "job", "nurse")
    await store.upsert_memory(ALICE, "PREFERENCE", "favorite_color", "blue")
    await store.upsert_memory(ALICE, "LORE", "dragon", "the dragon sleeps")
    await store.ensure_profile(BOB, "bob@example.com")
    await store.upsert_memory(BOB, "FACT", "job", "pilot")
    await store.upsert_memory(BOB, "PREFERENCE", "favorite_color", "purple")

    assert await store.delete_user(ALICE) == 3

    assert await store.get_profile(ALICE) is None
    assert await store.list_memories(ALICE) == []
    assert await store.get_memory(ALICE, "FACT", "job") is None
    assert await store.search_memories(ALICE, "", 10) == []
    bob = await store.get_profile(BOB)
    assert bob is not None and bob.original_identity == "bob@example.com"
    assert triples(await store.list_memories(BOB)) == [
        ("FACT", "job", "pilot"),
        ("PREFERENCE", "favorite_color", "purple"),
    ]
    assert await store.delete_user(ALICE) == 0
    assert await store.delete_user(NOBODY) == 0

    # Deleting the profile alone (no memories) works too.
    await store.ensure_profile(CAROL, "user-abc-123")
    assert await store.delete_user(CAROL) == 0
    assert await store.get_profile(CAROL) is None


async def test_list_orders_by_category_priority_then_key(store: MemoryStore) -> None:
    for category, key in [
        ("LORE", "b"),
        ("FACT", "b"),
        ("FACT", "a"),
        ("FACT", "B"),
        ("FACT", "ab"),
        ("FACT", "a_b"),
        ("PRESENTATION", "zz"),
        ("OPINION", "a"),
    ]:
        await store.upsert_memory(ALICE, category, key, f"{category}-{key}")
    await store.upsert_memory(BOB, "FACT", "a", "not alice's")

    listed = [(m.category, m.key) for m in await store.list_memories(ALICE)]
    # Keys in byte (code point) order: uppercase before lowercase, "_" before letters.
    assert listed == [
        ("PRESENTATION", "zz"),
        ("FACT", "B"),
        ("FACT", "a"),
        ("FACT", "a_b"),
        ("FACT", "ab"),
        ("FACT", "b"),
        ("OPINION", "a"),
        ("LORE", "b"),
    ]
    assert listed == sorted(
        listed,
        key=lambda ck: (CATEGORY_PRIORITY[ck[0]], ck[1]),  # type: ignore[index]
    )
    assert await store.list_memories(NOBODY) == []


async def test_unicode_and_emoji_round_trip(store: MemoryStore) -> None:
    value = "Zoë loves 🎉 fêtes — 日本語, «quotes» 'single' \"double\" \\ % _ \u200d👩‍💻"
    key = "motto_🎉_ñ"
    await store.upsert_memory(ALICE, "PRESENTATION", key, value, identity="Zoë 🎉")

    assert await store.get_memory(ALICE, "PRESENTATION", key) == value
    assert triples(await store.list_memories(ALICE)) == [("PRESENTATION", key, value)]
    profile = await store.get_profile(ALICE)
    assert profile is not None and profile.original_identity == "Zoë 🎉"
    found = await store.search_memories(ALICE, "Zoë", 5)
    assert triples(found) == [("PRESENTATION", key, value)]
    assert await store.delete_memory(ALICE, "PRESENTATION", key) is True


# -- search -----------------------------------------------------------------------------------


async def _seed_alice_and_bob(store: MemoryStore) -> None:
    for category, key, value in [
        ("FACT", "job", "I work as a nurse at the city hospital"),
        ("PREFERENCE", "favorite_color", "blue"),
        ("RELATIONSHIP", "wife_name", "My wife is called Sara"),
        ("INTEREST", "hobby", "painting landscapes on weekends"),
        ("LORE", "dragon", "the dragon of the north sleeps under the mountain"),
    ]:
        await store.upsert_memory(ALICE, category, key, value)
        await tick()
    await store.upsert_memory(BOB, "PREFERENCE", "favorite_color", "purple")
    await store.upsert_memory(BOB, "FACT", "job", "pilot flying to the hospital island")


async def test_search_ranks_relevant_memories_first(store: MemoryStore) -> None:
    await _seed_alice_and_bob(store)

    found = await store.search_memories(ALICE, "favorite color", 5)
    assert found[0].key == "favorite_color" and found[0].value == "blue"
    assert all(m.key != "favorite_color" or m.value == "blue" for m in found)

    found = await store.search_memories(ALICE, "hospital nurse", 5)
    assert triples(found) == [("FACT", "job", "I work as a nurse at the city hospital")]
    assert found[0].score > 0

    found = await store.search_memories(ALICE, "wife", 5)
    assert [m.key for m in found] == ["wife_name"]

    # Stemming: "paints" and "landscape" find "painting landscapes".
    found = await store.search_memories(ALICE, "paints landscape", 5)
    assert [m.key for m in found] == ["hobby"]

    # Words are OR-ed: one matching word is enough, and more matching words rank higher.
    found = await store.search_memories(ALICE, "dragon wife sara", 5)
    assert [m.key for m in found] == ["wife_name", "dragon"]

    assert await store.search_memories(ALICE, "submarine", 5) == []


async def test_search_is_per_user(store: MemoryStore) -> None:
    await _seed_alice_and_bob(store)
    alice_values = {m.value for m in await store.list_memories(ALICE)}
    bob_values = {m.value for m in await store.list_memories(BOB)}

    for query in ["purple", "pilot island", "favorite color purple", "hospital", ""]:
        found = await store.search_memories(ALICE, query, 10)
        assert {m.value for m in found} <= alice_values, query
    assert await store.search_memories(ALICE, "purple pilot island", 10) == []

    found = await store.search_memories(BOB, "favorite color", 10)
    assert triples(found)[0] == ("PREFERENCE", "favorite_color", "purple")
    assert {m.value for m in found} <= bob_values
    found = await store.search_memories(BOB, "nurse hospital", 10)
    assert triples(found) == [("FACT", "job", "pilot flying to the hospital island")]
    assert await store.search_memories(NOBODY, "favorite color", 10) == []
    assert await store.search_memories(NOBODY, "", 10) == []


async def test_search_ties_break_by_category_priority_then_recency(store: MemoryStore) -> None:
    # Same text shape, so the same relevance: the order comes from priority, then recency.
    await store.upsert_memory(ALICE, "LORE", "note_kilo", "sunflower")
    await tick()
    await store.upsert_memory(ALICE, "PLAN", "note_lima", "sunflower")
    await tick()
    await store.upsert_memory(ALICE, "PLAN", "note_mike", "sunflower")
    await tick()
    await store.upsert_memory(ALICE, "FACT", "note_oscar", "sunflower")

    found = await store.search_memories(ALICE, "sunflower", 10)
    assert [(m.category, m.key) for m in found] == [
        ("FACT", "note_oscar"),
        ("PLAN", "note_mike"),
        ("PLAN", "note_lima"),
        ("LORE", "note_kilo"),
    ]
    assert len({m.score for m in found}) == 1

    # Rewriting an older memory makes it the more recent one.
    await tick()
    await store.upsert_memory(ALICE, "PLAN", "note_lima", "sunflower")
    found = await store.search_memories(ALICE, "sunflower", 10)
    assert [m.key for m in found] == ["note_oscar", "note_lima", "note_mike", "note_kilo"]
    assert [m.key for m in await store.search_memories(ALICE, "sunflower", 2)] == [
        "note_oscar",
        "note_lima",
    ]


@pytest.mark.parametrize("query", OPERATOR_QUERIES)
async def test_search_treats_operator_characters_as_text(store: MemoryStore, query: str) -> None:
    await _seed_alice_and_bob(store)
    alice_values = {m.value for m in await store.list_memories(ALICE)}

    found = await store.search_memories(ALICE, query, 10)
    assert {m.value for m in found} <= alice_values

    # The same characters wrapped around a real word: the word is still found, first.
    wrapped = await store.search_memories(ALICE, f"{query} color {query}", 10)
    assert wrapped and wrapped[0].key == "favorite_color" and wrapped[0].value == "blue"
    assert {m.value for m in wrapped} <= alice_values

    # And nothing was damaged.
    assert await store.get_memory(ALICE, "PREFERENCE", "favorite_color") == "blue"
    assert len(await store.list_memories(ALICE)) == 5


async def test_empty_query_returns_most_important_then_recent(store: MemoryStore) -> None:
    await store.upsert_memory(ALICE, "LORE", "dragon", "the dragon sleeps")
    await tick()
    await store.upsert_memory(ALICE, "FACT", "utterance_1", "I said something", kind="utterance")
    await tick()
    await store.upsert_memory(ALICE, "INTEREST", "hobby", "painting")
    await tick()
    await store.upsert_memory(ALICE, "FACT", "job", "nurse")
    await tick()
    await store.upsert_memory(ALICE, "FACT", "pet", "a cat")
    await tick()
    await store.upsert_memory(ALICE, "PRESENTATION", "name", "Alice")
    await store.upsert_memory(BOB, "PRESENTATION", "name", "Bob")

    expected = ["name", "pet", "job", "hobby", "dragon", "utterance_1"]
    for query in ["", "   ", "?!", "🎉"]:
        found = await store.search_memories(ALICE, query, 10)
        assert [m.key for m in found] == expected, query
    assert [m.key for m in await store.search_memories(ALICE, "", 3)] == expected[:3]


# -- concurrency and event loops --------------------------------------------------------------


async def test_concurrent_ensure_profile_creates_exactly_one(
    concurrent_store: MemoryStore, pg_dsn: str
) -> None:
    results = await asyncio.gather(
        *(concurrent_store.ensure_profile(ALICE, f"alice-{i}") for i in range(50))
    )
    created = [profile for profile, was_created in results if was_created]
    assert len(created) == 1
    assert {profile.id for profile, _ in results} == {ALICE}
    # Whoever won set the identity; every caller saw the same row.
    assert len({profile.original_identity for profile, _ in results}) == 1
    assert {profile.created_at for profile, _ in results} == {created[0].created_at}

    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM public.profiles WHERE id = $1", ALICE)
    finally:
        await conn.close()
    assert rows == 1


async def test_concurrent_complete_first_login_flips_once(concurrent_store: MemoryStore) -> None:
    await concurrent_store.ensure_profile(ALICE, "alice@example.com")
    results = await asyncio.gather(
        *(concurrent_store.complete_first_login(ALICE) for _ in range(50))
    )
    assert results.count(True) == 1
    assert results.count(False) == 49


async def test_concurrent_upserts_of_one_key_leave_one_row(concurrent_store: MemoryStore) -> None:
    await asyncio.gather(
        *(
            concurrent_store.upsert_memory(BOB, "PREFERENCE", "favorite_color", f"color-{i}")
            for i in range(50)
        )
    )
    listed = await concurrent_store.list_memories(BOB)
    assert len(listed) == 1 and listed[0].value.startswith("color-")
    profile = await concurrent_store.get_profile(BOB)
    assert profile is not None


# -- the write rule: erasures stick, the last capture wins -------------------------------------

T0 = 1_800_000_000.0  # a fixed point in time (2027), in seconds since the epoch


async def test_an_erasure_refuses_every_write_from_before_it(store: MemoryStore) -> None:
    """What was known before a caller's erasure never comes back: a write whose session began
    at or before the erasure is refused, whenever it arrives (a spool replay, a session still
    running); a session that began after it writes normally."""
    await store.upsert_memory(ALICE, "FACT", "job", "nurse", captured_at=T0)
    await store.upsert_memory(BOB, "FACT", "job", "pilot", captured_at=T0)
    assert await store.delete_user(ALICE, erased_at=T0 + 10) == 1

    for captured, started in [(T0 + 5, T0), (T0 + 20, T0 + 1), (T0 + 20, T0 + 10)]:
        outcome = await store.upsert_memory(
            ALICE,
            "FACT",
            "job",
            "nurse again",
            "alice@example.com",
            captured_at=captured,
            session_started_at=started,
        )
        assert outcome is WriteOutcome.ERASED, (captured, started)
    assert await store.list_memories(ALICE) == []
    assert await store.get_profile(ALICE) is None  # a refused write recreates nothing

    later = await store.upsert_memory(
        ALICE, "FACT", "job", "teacher", captured_at=T0 + 30, session_started_at=T0 + 11
    )
    assert later is WriteOutcome.STORED
    assert await store.get_memory(ALICE, "FACT", "job") == "teacher"
    assert await store.get_memory(BOB, "FACT", "job") == "pilot"  # others untouched


async def test_an_earlier_erasure_never_moves_the_erasure_back(store: MemoryStore) -> None:
    await store.delete_user(ALICE, erased_at=T0 + 10)
    await store.delete_user(ALICE, erased_at=T0 + 5)  # e.g. an operator's delayed request
    outcome = await store.upsert_memory(
        ALICE, "FACT", "job", "nurse", captured_at=T0 + 8, session_started_at=T0 + 8
    )
    assert outcome is WriteOutcome.ERASED


async def test_the_last_capture_wins_whatever_the_order_of_the_writes(
    store: MemoryStore,
) -> None:
    """ "blue" captured before "red" but written after it (replayed from a spool) is refused."""
    red = await store.upsert_memory(ALICE, "PREFERENCE", "favorite_color", "red", captured_at=T0)
    blue = await store.upsert_memory(
        ALICE, "PREFERENCE", "favorite_color", "blue", captured_at=T0 - 60
    )
    assert (red, blue) == (WriteOutcome.STORED, WriteOutcome.STALE)
    assert await store.get_memory(ALICE, "PREFERENCE", "favorite_color") == "red"
    green = await store.upsert_memory(
        ALICE, "PREFERENCE", "favorite_color", "green", captured_at=T0 + 1
    )
    assert green is WriteOutcome.STORED
    assert await store.get_memory(ALICE, "PREFERENCE", "favorite_color") == "green"
    assert len(await store.list_memories(ALICE)) == 1


async def test_the_utterance_cap_drops_the_oldest_and_keeps_every_fact(
    store: MemoryStore,
) -> None:
    for n in range(6):
        await store.upsert_memory(ALICE, "FACT", f"fact_{n}", f"fact {n}", captured_at=T0 + n)
    # Written out of order: the oldest by capture time go, not the first written.
    for n in [3, 0, 5, 1, 4, 2, 6]:
        await store.upsert_memory(
            ALICE,
            "EXPERIENCE",
            f"utterance_{n}",
            f"I said {n}",
            kind="utterance",
            captured_at=T0 + n,
            max_utterances=4,
        )
    await store.upsert_memory(BOB, "EXPERIENCE", "utterance_b", "bob", kind="utterance")
    listed = await store.list_memories(ALICE)
    assert sorted(m.key for m in listed if m.is_utterance) == [
        "utterance_3",
        "utterance_4",
        "utterance_5",
        "utterance_6",
    ]
    assert sorted(m.key for m in listed if not m.is_utterance) == [f"fact_{n}" for n in range(6)]
    assert len(await store.list_memories(BOB)) == 1


async def test_writes_racing_an_erasure_never_land_after_it(
    concurrent_store: MemoryStore,
) -> None:
    """Fifty writes of a session that began before the erasure, run at the same moment as
    the erasure: each either landed before it (and was deleted by it) or was refused."""
    started = T0
    await concurrent_store.upsert_memory(ALICE, "FACT", "seed", "x", captured_at=started)

    async def write(n: int) -> WriteOutcome:
        return await concurrent_store.upsert_memory(
            ALICE,
            "EXPERIENCE",
            f"utterance_{n}",
            f"said {n}",
            kind="utterance",
            captured_at=started + 1 + n / 1000,
            session_started_at=started,
        )

    erase = concurrent_store.delete_user(ALICE, erased_at=started + 5)
    results = await asyncio.gather(
        *(write(n) for n in range(25)), erase, *(write(n) for n in range(25, 50))
    )
    outcomes = [r for r in results if isinstance(r, WriteOutcome)]
    assert len(outcomes) == 50
    assert await concurrent_store.list_memories(ALICE) == []
    assert await concurrent_store.get_profile(ALICE) is None


@pytest.mark.postgres
async def test_postgres_store_serves_several_event_loops(postgres_store: MemoryStore) -> None:
    """Worker threads with their own loops, the sync bridge and this loop share one store."""
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        async def work() -> None:
            user = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"thread-{index}"))
            for n in range(5):
                await postgres_store.upsert_memory(user, "FACT", f"k{n}", f"thread {index}")
            found = await postgres_store.search_memories(user, "thread", 10)
            assert len(found) == 5 and {m.value for m in found} == {f"thread {index}"}
            await postgres_store.close_loop_pool()  # type: ignore[attr-defined]

        try:
            asyncio.run(work())
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    await postgres_store.upsert_memory(ALICE, "FACT", "job", "nurse")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join(30)

    await asyncio.to_thread(join_all)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    # The process-wide sync bridge has its own long-lived loop (and so its own pool).
    value = await asyncio.to_thread(
        run_sync, postgres_store.get_memory(ALICE, "FACT", "job"), api_name="retrieve"
    )
    assert value == "nurse"
    for index in range(4):
        user = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"thread-{index}"))
        assert len(await postgres_store.list_memories(user)) == 5
