"""One contract for what a memory means, every store: what it answered and when is searched
but never returned, a replaced fact becomes history and its old words stop being found, words
in any script are found whole, and memories are found by meaning (their vectors).

Runs on SQLite, Postgres (the real migrations, with pgvector) and Supabase (the same database
through the fake PostgREST), exactly as `test_store_contract.py` does.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime

import pytest

from caller_memory.recall.query import build_search_query
from caller_memory.stores.base import MemoryStore
from caller_memory.stores.errors import StorageError
from caller_memory.types import MemoryDetails, MemoryKind, Statement, WriteOutcome

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("supabase", id="supabase", marks=pytest.mark.postgres),
]

ALICE = str(uuid.uuid5(uuid.NAMESPACE_DNS, "alice@example.com"))
BOB = str(uuid.uuid5(uuid.NAMESPACE_DNS, "bob@example.com"))
MODEL = "test-model"
DIMENSIONS = 384  # the width of the Postgres column
T0 = 1_780_000_000.0  # a fixed moment (2026), so the times are exact


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> MemoryStore:
    backend: MemoryStore = request.getfixturevalue(f"{request.param}_store")
    return backend


async def utter(
    store: MemoryStore,
    user: str,
    key: str,
    words: str,
    at: float,
    *,
    states: tuple[Statement, ...] = (),
    context: str | None = None,
    said_on: str | None = None,
) -> WriteOutcome:
    return await store.upsert_memory(
        user,
        "INTEREST",
        key,
        words,
        kind=MemoryKind.UTTERANCE,
        captured_at=at,
        session_started_at=T0,
        details=MemoryDetails(context=context, said_on=said_on, states=states),
    )


async def found(store: MemoryStore, user: str, text: str) -> list[str]:
    """The values a search for what the caller asked (`text`) finds, best first."""
    return [m.value for m in await store.search_memories(user, build_search_query(text), 10)]


# -- what a memory answered, and when ---------------------------------------------------------


async def test_the_line_it_answered_and_the_day_are_searched_but_never_returned(
    store: MemoryStore,
) -> None:
    await utter(
        store,
        ALICE,
        "utterance_1",
        "Yes, the red one",
        T0,
        context="Which bicycle should we order for the triathlon, the red or the blue?",
        said_on="Monday 2 March 2026 (2026-03-02)",
    )
    await utter(store, ALICE, "utterance_2", "I had pasta for lunch", T0 + 1)

    assert await found(store, ALICE, "which bicycle did I pick?") == ["Yes, the red one"]
    assert await found(store, ALICE, "what did I say in March?") == ["Yes, the red one"]
    assert await found(store, ALICE, "triathlon") == ["Yes, the red one"]
    # the context is what it answered, not what the caller said
    [memory] = [m for m in await store.list_memories(ALICE) if m.key == "utterance_1"]
    assert memory.value == "Yes, the red one"
    # and another caller's search never reaches it
    assert await found(store, BOB, "which bicycle did I pick?") == []


async def test_the_callers_own_words_outrank_the_same_word_in_the_line_they_answered(
    store: MemoryStore,
) -> None:
    """What the caller said weighs more than the agent's line it answered: the short answer
    to a question about sailing ranks below the caller's longer sentence about sailing, which
    a ranking that weighed every column alike (shorter memory first) would put the other way."""
    await utter(
        store,
        ALICE,
        "utterance_1",
        "Most weekends I go sailing with two old friends from school, out past the harbour",
        T0,
    )
    await utter(store, ALICE, "utterance_2", "Not really", T0 + 1, context="Do you like sailing?")

    assert await found(store, ALICE, "sailing") == [
        "Most weekends I go sailing with two old friends from school, out past the harbour",
        "Not really",
    ]


# -- facts that update ----------------------------------------------------------------------


BLUE = Statement("PREFERENCE", "favorite_color", "blue")


async def test_a_replaced_fact_is_kept_as_history_and_its_old_words_are_not_found(
    store: MemoryStore,
) -> None:
    await utter(store, ALICE, "utterance_1", "My favourite colour is blue", T0, states=(BLUE,))
    await store.upsert_memory(
        ALICE, "PREFERENCE", "favorite_color", "blue", captured_at=T0, session_started_at=T0
    )
    await utter(store, ALICE, "utterance_2", "My favourite colour is green now", T0 + 60)
    await store.upsert_memory(
        ALICE, "PREFERENCE", "favorite_color", "green", captured_at=T0 + 60, session_started_at=T0
    )

    hits = await found(store, ALICE, "what's my favourite colour?")
    assert "blue" not in " ".join(hits)
    assert set(hits) == {"green", "My favourite colour is green now"}
    assert await store.get_memory(ALICE, "PREFERENCE", "favorite_color") == "green"
    [change] = await store.list_history(ALICE)
    assert (change.category, change.key, change.value) == ("PREFERENCE", "favorite_color", "blue")
    assert change.valid_from == datetime.fromtimestamp(T0, UTC)
    assert change.valid_until == datetime.fromtimestamp(T0 + 60, UTC)
    # the same value again is no change: no history row
    await store.upsert_memory(
        ALICE, "PREFERENCE", "favorite_color", "green", captured_at=T0 + 90, session_started_at=T0
    )
    assert len(await store.list_history(ALICE)) == 1
    assert await store.list_history(BOB) == []


async def test_old_words_replayed_after_the_newer_fact_arrive_already_replaced(
    store: MemoryStore,
) -> None:
    """A spool replays an utterance of before the change after the change was stored: it is
    kept (the caller said it) but found no more than if it had arrived in order."""
    await store.upsert_memory(
        ALICE, "PREFERENCE", "favorite_color", "green", captured_at=T0 + 60, session_started_at=T0
    )
    outcome = await utter(
        store, ALICE, "utterance_1", "My favourite colour is blue", T0, states=(BLUE,)
    )
    assert outcome == WriteOutcome.STORED
    assert await found(store, ALICE, "what's my favourite colour?") == ["green"]
    assert "utterance_1" in {m.key for m in await store.list_memories(ALICE)}


async def test_words_still_true_stay_found_when_another_fact_changes(store: MemoryStore) -> None:
    await utter(
        store,
        ALICE,
        "utterance_1",
        "My favourite colour is blue and I live in Porto",
        T0,
        states=(BLUE, Statement("FACT", "lives_in", "Porto")),
    )
    await store.upsert_memory(
        ALICE, "FACT", "lives_in", "Porto", captured_at=T0, session_started_at=T0
    )
    await store.upsert_memory(
        ALICE, "FACT", "lives_in", "Lisbon", captured_at=T0 + 5, session_started_at=T0
    )
    # the sentence stated Porto, which is no longer true: it is not found, by any of its words
    assert await found(store, ALICE, "favourite colour") == []
    assert await found(store, ALICE, "where do I live?") == ["Lisbon"]


async def test_forgetting_a_fact_or_the_caller_forgets_its_history(store: MemoryStore) -> None:
    for at, colour in [(T0, "blue"), (T0 + 1, "green"), (T0 + 2, "red")]:
        await store.upsert_memory(
            ALICE, "PREFERENCE", "favorite_color", colour, captured_at=at, session_started_at=T0
        )
        await store.upsert_memory(
            BOB, "PREFERENCE", "favorite_color", colour, captured_at=at, session_started_at=T0
        )
    assert [h.value for h in await store.list_history(ALICE)] == ["blue", "green"]
    assert await store.delete_memory(ALICE, "PREFERENCE", "favorite_color")
    assert await store.list_history(ALICE) == []
    await store.delete_user(BOB)
    assert await store.list_history(BOB) == []


# -- any script --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "other", "question"),
    [
        # Hindi: vowel signs are part of the word ("पेशा", not "प" + "श")
        ("मेरा पेशा डॉक्टर है", "मार पीट की फ़िल्में पसंद नहीं", "मेरा पेशा क्या है?"),
        # Urdu
        ("میں لاہور میں رہتا ہوں", "مجھے چائے پسند ہے", "میں کہاں رہتا ہوں؟"),
        # Russian, in another case than asked
        ("Я живу в Москве", "Я люблю чай", "москве"),
        # Japanese: no spaces; found by character pairs
        ("私は東京に住んでいます。", "猫が好きです。", "東京はどこですか"),
        # Chinese
        ("我在上海工作", "我喜欢喝茶", "我在哪里工作？"),
    ],
)
async def test_a_question_in_any_script_finds_its_answer_first(
    store: MemoryStore, stored: str, other: str, question: str
) -> None:
    await utter(store, ALICE, "utterance_1", other, T0)
    await utter(store, ALICE, "utterance_2", stored, T0 + 1)
    await utter(store, ALICE, "utterance_3", "I like dogs", T0 + 2)
    hits = await found(store, ALICE, question)
    assert hits and hits[0] == stored, hits


# -- by meaning --------------------------------------------------------------------------------


def axis(*weights: float) -> tuple[float, ...]:
    """A unit vector leaning on the first axes by `weights` (the rest zero)."""
    padded = [*weights, *([0.0] * (DIMENSIONS - len(weights)))]
    norm = math.sqrt(sum(w * w for w in padded))
    return tuple(w / norm for w in padded)


async def test_memories_are_found_by_the_meaning_their_vectors_carry(store: MemoryStore) -> None:
    assert await store.has_vectors()
    vectors = {
        "utterance_1": ("I'm terrified of spiders", axis(1.0, 0.1)),
        "utterance_2": ("My sister lives in Lisbon", axis(0.0, 1.0)),
        "utterance_3": ("I work at the hospital", axis(0.0, 0.2, 1.0)),
    }
    for n, (key, (words, _)) in enumerate(vectors.items()):
        await utter(store, ALICE, key, words, T0 + n)
    waiting = {(u.user_id, u.key) for u in await store.unembedded(MODEL, 100)}
    assert waiting == {(ALICE, key) for key in vectors}
    for key, (words, vector) in vectors.items():
        assert await store.set_embedding(ALICE, "INTEREST", key, words, vector, MODEL)
    assert await store.unembedded(MODEL, 100) == []
    # Bob's memory sits right where Alice's question points: never hers to find
    await utter(store, BOB, "utterance_1", "I fear snakes", T0)
    assert await store.set_embedding(
        BOB, "INTEREST", "utterance_1", "I fear snakes", axis(1.0), MODEL
    )

    # "what scares me?" shares no word with the spiders: only its meaning finds them
    candidates = await store.search_candidates(
        ALICE, build_search_query("what scares me?"), 3, embedding=axis(1.0), embedding_model=MODEL
    )
    by_meaning = sorted(
        (c for c in candidates if c.dense is not None), key=lambda c: -(c.dense or 0.0)
    )
    assert [c.memory.value for c in by_meaning][:1] == ["I'm terrified of spiders"]
    assert by_meaning[0].dense == pytest.approx(1.0 / math.sqrt(1.01), abs=1e-4)
    assert all(c.lexical is None for c in candidates)
    assert "I fear snakes" not in [c.memory.value for c in candidates]
    # vectors of another model are not compared with this one's
    other = await store.search_candidates(
        ALICE, "", 3, embedding=axis(1.0), embedding_model="another-model"
    )
    assert [c for c in other if c.dense is not None] == []


async def test_the_search_by_words_does_not_wait_for_the_query_vector(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn embeds its question while the store already searches its words: the vector
    given as an awaitable arrives only once the search by words has finished, and both scores
    still come back (a store that waited for the vector first would never get it)."""
    await utter(store, ALICE, "utterance_1", "My sister lives in Lisbon", T0)
    assert await store.set_embedding(
        ALICE, "INTEREST", "utterance_1", "My sister lives in Lisbon", axis(1.0), MODEL
    )
    words_searched = asyncio.Event()
    by_words = store._lexical  # type: ignore[attr-defined]

    async def lexical(*args: object) -> object:
        found = await by_words(*args)
        words_searched.set()
        return found

    monkeypatch.setattr(store, "_lexical", lexical)

    async def query_vector() -> tuple[float, ...]:
        await asyncio.wait_for(words_searched.wait(), 10)
        return axis(1.0)

    [candidate] = await store.search_candidates(
        ALICE, "sister", 3, embedding=query_vector(), embedding_model=MODEL
    )
    assert candidate.memory.value == "My sister lives in Lisbon"
    assert candidate.lexical is not None
    assert candidate.dense == pytest.approx(1.0, abs=1e-4)


async def test_a_query_vector_that_never_came_leaves_the_search_by_words(
    store: MemoryStore,
) -> None:
    """The embedder failed (the awaitable gives None): the words are still searched."""
    await utter(store, ALICE, "utterance_1", "My sister lives in Lisbon", T0)
    assert await store.set_embedding(
        ALICE, "INTEREST", "utterance_1", "My sister lives in Lisbon", axis(1.0), MODEL
    )

    async def failed_vector() -> None:
        return None

    [candidate] = await store.search_candidates(
        ALICE, "sister", 3, embedding=failed_vector(), embedding_model=MODEL
    )
    assert candidate.lexical is not None and candidate.dense is None


async def test_a_failed_search_by_words_stops_waiting_for_the_query_vector(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's error comes back at once, and the search by meaning still waiting for its
    vector is cancelled, not left running for a turn that has moved on."""
    stopped = asyncio.Event()

    async def failing(*args: object) -> object:
        raise StorageError("the words index is gone")

    monkeypatch.setattr(store, "_lexical", failing)

    async def query_vector() -> tuple[float, ...]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return axis(1.0)

    with pytest.raises(StorageError, match="the words index is gone"):
        await asyncio.wait_for(
            store.search_candidates(
                ALICE, "sister", 3, embedding=query_vector(), embedding_model=MODEL
            ),
            5,
        )
    await asyncio.wait_for(stopped.wait(), 5)


async def test_a_changed_value_drops_its_vector_and_waits_for_a_new_one(
    store: MemoryStore,
) -> None:
    await store.upsert_memory(ALICE, "FACT", "job", "nurse", captured_at=T0, session_started_at=T0)
    assert await store.set_embedding(ALICE, "FACT", "job", "nurse", axis(1.0), MODEL)
    # a vector for a value the memory no longer holds is refused
    assert not await store.set_embedding(ALICE, "FACT", "job", "teacher", axis(0.0, 1.0), MODEL)
    assert await store.unembedded(MODEL, 10) == []
    await store.upsert_memory(
        ALICE, "FACT", "job", "teacher", captured_at=T0 + 1, session_started_at=T0
    )
    assert [(u.key, u.value) for u in await store.unembedded(MODEL, 10)] == [("job", "teacher")]
    candidates = await store.search_candidates(
        ALICE, "", 5, embedding=axis(1.0), embedding_model=MODEL
    )
    assert [c for c in candidates if c.dense is not None] == []


async def test_a_deleted_fact_takes_its_words_out_of_search_and_forgetting_finds_them(
    store: MemoryStore,
) -> None:
    dog = Statement("RELATIONSHIP", "dog_name", "Biscuit")
    await utter(store, ALICE, "utterance_1", "Our dog Biscuit loves the beach", T0, states=(dog,))
    await store.upsert_memory(
        ALICE, "RELATIONSHIP", "dog_name", "Biscuit", captured_at=T0, session_started_at=T0
    )
    await utter(store, ALICE, "utterance_2", "The beach was cold today", T0 + 1)
    assert "Our dog Biscuit loves the beach" in await found(store, ALICE, "beach")

    # "we don't have a dog any more": the fact goes, and so do the words that stated it
    assert await store.delete_memory(ALICE, "RELATIONSHIP", "dog_name")
    assert await found(store, ALICE, "beach") == ["The beach was cold today"]
    # still the caller's (kept until they ask to forget them), and found for forgetting
    stating = await store.list_stating(ALICE, "RELATIONSHIP", "dog_name")
    assert [m.value for m in stating] == ["Our dog Biscuit loves the beach"]
    assert await store.list_stating(BOB, "RELATIONSHIP", "dog_name") == []
    assert await store.delete_memory(ALICE, "INTEREST", "utterance_1")
    assert await store.list_stating(ALICE, "RELATIONSHIP", "dog_name") == []
