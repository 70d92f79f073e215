"""The SQLite store's vectors held in memory (`caller_memory.stores.vectors.VectorCache`)
always answer as an exact scan of the file would.

The cache adds a write's row to its buffer instead of copying every vector, marks a rewritten
row as replaced instead of overwriting it, and compacts when most rows are replaced ones. After
any sequence of writes, rewrites, changed values and deletions, search by meaning must return
exactly the nearest current vectors read straight from the file, with their cosines; and a
search already holding the cache's previous state must see that state unchanged.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caller_memory.stores import vectors
from caller_memory.stores.base import CANDIDATES_PER_RESULT
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.types import MemoryDetails, MemoryKind, Statement

MODEL = "test-model"
LIMIT = 4
T0 = 1_767_603_600.0

# add a memory with a vector / give memory i a new vector / change its value (the vector
# goes until it is embedded again) / delete it / search by meaning
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 2**31)),
        st.tuples(st.just("revector"), st.integers(0, 50), st.integers(0, 2**31)),
        st.tuples(st.just("revalue"), st.integers(0, 50), st.integers(0, 2**31)),
        st.tuples(st.just("delete"), st.integers(0, 50), st.integers(0, 2**31)),
        st.tuples(st.just("search"), st.integers(0, 2**31)),
    ),
    min_size=1,
    max_size=40,
)


def unit(seed: int) -> tuple[float, ...]:
    v = np.random.default_rng(seed).standard_normal(vectors.DIMENSIONS).astype(np.float32)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def exact_scores(path: str, user: str, query: tuple[float, ...]) -> dict[str, float]:
    """The cosine with `query` of every current memory of `user`, read from the file."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT key, embedding FROM memories WHERE user_id = ? AND embedding_model = ? "
            "AND embedding IS NOT NULL AND superseded_at IS NULL",
            (user, MODEL),
        ).fetchall()
    q = np.asarray(query, dtype=np.float32)
    return {key: float(np.frombuffer(blob, dtype="<f4") @ q) for key, blob in rows}


async def nearest(store: SQLiteMemoryStore, user: str, query: tuple[float, ...]) -> list:
    candidates = await store.search_candidates(
        user, "", LIMIT, embedding=query, embedding_model=MODEL
    )
    return sorted(
        ((c.memory.key, c.dense) for c in candidates if c.dense is not None),
        key=lambda item: -item[1],
    )


async def write(store: SQLiteMemoryStore, user: str, key: str, value: str, seed: int) -> None:
    await store.upsert_memory(
        user,
        "INTEREST",
        key,
        value,
        kind=MemoryKind.UTTERANCE,
        captured_at=T0,
        session_started_at=T0,
        details=MemoryDetails(embedding=unit(seed), embedding_model=MODEL),
    )


async def check(store: SQLiteMemoryStore, user: str, query: tuple[float, ...]) -> None:
    """The search finds the nearest current memories (as many as the store gathers for a
    search of `LIMIT`), each with its own cosine (two memories with one vector may come in
    either order)."""
    found = await nearest(store, user, query)
    exact = exact_scores(str(store.path), user, query)
    best = sorted(exact.values(), reverse=True)[: LIMIT * CANDIDATES_PER_RESULT]
    assert [score for _, score in found] == pytest.approx(best, abs=1e-5)
    for key, score in found:
        assert score == pytest.approx(exact[key], abs=1e-5)


@pytest.mark.parametrize("capacity", [1, 256])
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS)
async def test_search_by_meaning_equals_an_exact_scan_of_the_file(
    sqlite_store: SQLiteMemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    capacity: int,
    operations: list[tuple],
) -> None:
    # room for 1 more: the buffer grows often; for 256 more: writes land in the room left
    monkeypatch.setattr(vectors, "MIN_CAPACITY", capacity)
    user = str(uuid.uuid4())  # the store is shared by the examples: a caller of its own
    keys: list[str] = []
    for n, operation in enumerate(operations):
        kind, *args = operation
        if kind == "add":
            key = f"utterance_{n}"
            await write(sqlite_store, user, key, f"said {n}", args[0])
            keys.append(key)
        elif kind == "search":
            await check(sqlite_store, user, unit(args[0]))
        elif keys:
            key = keys[args[0] % len(keys)]
            if kind == "revector":
                value = await sqlite_store.get_memory(user, "INTEREST", key)
                assert value is not None
                await sqlite_store.set_embedding(user, "INTEREST", key, value, unit(args[1]), MODEL)
            elif kind == "revalue":
                await sqlite_store.upsert_memory(
                    user,
                    "INTEREST",
                    key,
                    f"now {args[1]}",
                    kind=MemoryKind.UTTERANCE,
                    captured_at=T0 + n,
                    session_started_at=T0,
                )
            else:
                await sqlite_store.delete_memory(user, "INTEREST", key)
                keys.remove(key)
    await check(sqlite_store, user, unit(0))


async def test_a_search_holding_the_previous_vectors_sees_them_unchanged(
    sqlite_store: SQLiteMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectors, "MIN_CAPACITY", 8)  # room for the writes below
    user = str(uuid.uuid4())
    for n in range(4):
        await write(sqlite_store, user, f"utterance_{n}", f"said {n}", n)
    cache = vectors.VectorCache()
    query = np.asarray(unit(99), dtype=np.float32)
    with sqlite3.connect(sqlite_store.path) as conn:
        before = cache._entry(conn, user, MODEL)  # what a search in progress holds
        assert before is not None
        scores = before.scores(query).copy()
        # a new memory lands in the same buffer, right after the rows `before` uses, and a
        # rewritten one is marked replaced in a new entry
        await write(sqlite_store, user, "utterance_new", "said later", 50)
        await sqlite_store.set_embedding(user, "INTEREST", "utterance_1", "said 1", unit(7), MODEL)
        cache.changed(user, before.ids[1].item())
        after = cache._entry(conn, user, MODEL)
    assert after is not None and after.matrix is before.matrix  # no copy of the vectors
    assert (after.size, after.live) == (6, 5)
    np.testing.assert_array_equal(before.scores(query), scores)
    assert before.size == 4 and not before.replaced.any()


async def test_searches_during_writes_of_many_callers_end_exact(
    sqlite_store: SQLiteMemoryStore,
) -> None:
    """Writes and searches of 8 callers interleaved on the store's threads; then every
    caller's search equals the exact scan."""
    users = [str(uuid.uuid4()) for _ in range(8)]

    async def caller(i: int, user: str) -> None:
        for n in range(30):
            await write(sqlite_store, user, f"utterance_{n % 12}", f"said {n}", 1000 * i + n)
            await nearest(sqlite_store, user, unit(n))

    await asyncio.gather(*(caller(i, user) for i, user in enumerate(users)))
    for user in users:
        await check(sqlite_store, user, unit(5))


async def test_words_and_meaning_are_looked_up_at_the_same_time(
    sqlite_store: SQLiteMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text search waits (up to 5 s) for the scan by meaning to be running: one after the
    other, it would wait in vain."""
    user = str(uuid.uuid4())
    await write(sqlite_store, user, "utterance_1", "my sister lives in Lisbon", 1)
    scanning = threading.Event()
    nearest_by_meaning = vectors.VectorCache.nearest

    def scan(self: vectors.VectorCache, *args: object, **kwargs: object) -> list:
        scanning.set()
        return nearest_by_meaning(self, *args, **kwargs)  # type: ignore[arg-type]

    by_words = sqlite_store._lexical
    overlapped: list[bool] = []

    async def lexical(*args: object) -> list:
        overlapped.append(await asyncio.to_thread(scanning.wait, 5.0))
        return await by_words(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(vectors.VectorCache, "nearest", scan)
    monkeypatch.setattr(sqlite_store, "_lexical", lexical)
    found = await sqlite_store.search_candidates(
        user, "sister", LIMIT, embedding=unit(1), embedding_model=MODEL
    )
    assert overlapped == [True]
    [candidate] = found
    assert candidate.lexical is not None and candidate.dense is not None


async def test_words_superseded_since_they_were_cached_are_skipped_then_dropped(
    sqlite_store: SQLiteMemoryStore,
) -> None:
    """A fact that changes marks the utterances that stated it superseded without rewriting
    them, so the cache still holds their vectors: a search skips them and still returns as
    many as it asks for, and the next one no longer holds them."""
    user = str(uuid.uuid4())
    blue = Statement("PREFERENCE", "favorite_color", "blue")
    await sqlite_store.upsert_memory(
        user,
        "INTEREST",
        "utterance_0",
        "my favourite colour is blue",
        kind=MemoryKind.UTTERANCE,
        captured_at=T0,
        session_started_at=T0,
        details=MemoryDetails(embedding=unit(1), embedding_model=MODEL, states=(blue,)),
    )
    for n in range(1, 5):
        await write(sqlite_store, user, f"utterance_{n}", f"said {n}", 10 + n)
    for value, at in (("blue", T0), ("green", T0 + 10)):
        await sqlite_store.upsert_memory(
            user, "PREFERENCE", "favorite_color", value, kind=MemoryKind.FACT,
            captured_at=at, session_started_at=T0,
        )  # fmt: skip
        if value == "blue":  # cached while it was true: the nearest to the question
            first = await sqlite_store.search_candidates(
                user, "", 1, embedding=unit(1), embedding_model=MODEL
            )
            assert first[0].memory.key == "utterance_0"
    wanted = 1 * CANDIDATES_PER_RESULT  # 4 of the 4 utterances still true
    for _ in range(2):
        found = await sqlite_store.search_candidates(
            user, "", 1, embedding=unit(1), embedding_model=MODEL
        )
        assert sorted(c.memory.key for c in found) == [f"utterance_{n}" for n in range(1, 5)]
        assert len(found) == wanted
    assert sqlite_store._vectors._entries[(user, MODEL)].live == 4


async def test_vectors_due_for_a_reread_are_read_in_the_background(
    sqlite_store: SQLiteMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker process rewrote a vector: this process sees it at the periodic re-read,
    which runs on a store thread while searches go on with the vectors held (at 100,000
    memories the re-read is 150 MB: a search that waited for it would miss its budget)."""
    user = str(uuid.uuid4())
    for n in range(4):
        await write(sqlite_store, user, f"utterance_{n}", f"said {n}", n)
    query = unit(99)
    before = dict(await nearest(sqlite_store, user, query))
    other_worker = SQLiteMemoryStore(sqlite_store.path)
    try:
        assert await other_worker.set_embedding(
            user, "INTEREST", "utterance_1", "said 1", query, MODEL
        )
    finally:
        await other_worker.aclose()

    reread_may_finish = threading.Event()
    reread = vectors.VectorCache._refresh

    def held_reread(self: vectors.VectorCache, *args: object) -> None:
        assert reread_may_finish.wait(10)
        reread(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(vectors.VectorCache, "_refresh", held_reread)
    monkeypatch.setattr(vectors, "REFRESH_S", 0.05)
    await asyncio.sleep(0.1)  # the vectors held are now due for a re-read
    during = dict(await asyncio.wait_for(nearest(sqlite_store, user, query), 5))
    assert during == before  # served from the vectors held, the re-read still running
    reread_may_finish.set()
    for _ in range(200):
        found = dict(await nearest(sqlite_store, user, query))
        if found.get("utterance_1") == pytest.approx(1.0, abs=1e-5):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the rewritten vector was never read again")
    await check(sqlite_store, user, query)


async def test_a_write_landing_during_a_background_reread_is_not_lost(
    sqlite_store: SQLiteMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-read's snapshot misses a vector set just after it was read, and a search
    applied that write to the old vectors meanwhile: the vectors put in place still get it."""
    user = str(uuid.uuid4())
    for n in range(4):
        await write(sqlite_store, user, f"utterance_{n}", f"said {n}", n)
    query = unit(99)
    jobs: list = []
    cache = vectors.VectorCache(in_background=jobs.append)
    monkeypatch.setattr(sqlite_store, "_vectors", cache)
    await nearest(sqlite_store, user, query)  # read once
    monkeypatch.setattr(vectors, "REFRESH_S", 0.0)
    await nearest(sqlite_store, user, query)  # due: a re-read is queued, not run
    [job] = jobs
    monkeypatch.setattr(vectors, "REFRESH_S", 3600.0)  # no other re-read from here on
    load = vectors.VectorCache._load
    landed: list[int] = []

    def load_then_a_write_lands(conn: sqlite3.Connection, *args: object, **kwargs: object):
        snapshot = load(conn, *args, **kwargs)  # type: ignore[arg-type]
        if landed:  # the search's own reads below
            return snapshot
        with sqlite3.connect(sqlite_store.path) as writer:
            writer.execute(
                "UPDATE memories SET embedding = ? WHERE user_id = ? AND key = 'utterance_2'",
                (vectors.encode_vector(query), user),
            )
            [(row_id,)] = writer.execute(
                "SELECT id FROM memories WHERE user_id = ? AND key = 'utterance_2'", (user,)
            ).fetchall()
        landed.append(row_id)
        cache.changed(user, row_id)  # as the store does after its write
        cache.nearest(conn, user, MODEL, query, LIMIT)  # a search applies it to the old entry
        return snapshot

    monkeypatch.setattr(vectors.VectorCache, "_load", staticmethod(load_then_a_write_lands))
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.row_factory = sqlite3.Row  # as the store's connections
        job(conn)
    monkeypatch.setattr(vectors.VectorCache, "_load", staticmethod(load))
    assert landed
    found = dict(await nearest(sqlite_store, user, query))
    assert found["utterance_2"] == pytest.approx(1.0, abs=1e-5)
    await check(sqlite_store, user, query)


def _large_scan() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((vectors.SHARED_SCAN_ROWS + 1001, vectors.DIMENSIONS))
    return matrix.astype(np.float32), rng.standard_normal(vectors.DIMENSIONS).astype(np.float32)


def test_a_large_scan_shared_with_the_helper_equals_one_scan() -> None:
    matrix, query = _large_scan()
    np.testing.assert_allclose(vectors._scan(matrix, query), matrix @ query, rtol=1e-5, atol=1e-4)


def test_a_large_scan_does_not_wait_for_a_busy_helper() -> None:
    """Another caller's scan holds the helper thread: this one scans its second half itself
    (correctly) instead of queueing behind it."""
    matrix, query = _large_scan()
    release = threading.Event()
    busy = vectors._helper().submit(release.wait, 30)
    try:
        done: list[np.ndarray] = []
        scanning = threading.Thread(target=lambda: done.append(vectors._scan(matrix, query)))
        scanning.start()
        scanning.join(timeout=10)
        assert done, "the scan waited for the busy helper"
        np.testing.assert_allclose(done[0], matrix @ query, rtol=1e-5, atol=1e-4)
    finally:
        release.set()
        busy.result()


def _helper_in_a_forked_child() -> tuple[bool, int]:
    fresh = vectors._scan_helper is None
    return fresh, vectors._helper().submit(int, "7").result(timeout=10)


def test_a_forked_process_gets_a_scan_helper_of_its_own() -> None:
    """A worker forked after a large scan (its parent's helper thread does not exist in the
    child) scans with a helper that runs, instead of queueing halves nobody takes."""
    vectors._helper().submit(int, "1").result()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_helper_in_a_forked_child) == (True, 7)
