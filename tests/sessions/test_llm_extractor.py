"""The LLM fact extractor: what it asks, what it accepts, and its batches through the real
capture writer on a real SQLite store (only the model is a fake)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from caller_memory import (
    CallerMemory,
    MemoryCategory,
    MemorySettings,
    MemoryStore,
    SettingsError,
    memory_manager,
    session_user,
)
from caller_memory.capture.llm_extractor import (
    Action,
    ExtractionFailed,
    LLMFactExtractor,
    parse_changes,
)
from caller_memory.testing import FakeScriptedLLM, chat_texts
from caller_memory.types import Memory
from tests.support import capture_writer

EXTRACTOR_LOG = "caller_memory.llm_extractor"

# -- a fake of the session's LLM that also answers extraction requests -----------------------

_KNOWN_LINE = re.compile(r'^- ([A-Z]+) ([a-z0-9_]+): (".*")$')
_CALLER_LINE = re.compile(r'caller: (".*")$')

Decide = Callable[[str, dict[str, str]], list[dict[str, Any]]]
"""A scripted model's reading of one caller message, given the known facts it was shown
(key -> value): the changes it answers (dicts as the record_changes tool takes them)."""


@dataclass
class Extraction:
    """One extraction request as the fake read it."""

    messages: list[str]
    known: dict[tuple[str, str], str]


class FakeMemoryModel(FakeScriptedLLM):
    """A test fake of the session's LLM. It replies to the conversation as `FakeScriptedLLM`
    does ("reply: <caller's text>", after `reply_delay` seconds), and answers a request that
    offers the `record_changes` tool by reading that request as a model would: the known facts
    and the numbered caller messages in its text, each message passed to `decide` with the
    facts shown. The first `fail_extractions` extraction requests fail (the model is down).
    `log` keeps, in order, when each reply request started and ended and when each extraction
    request started."""

    def __init__(
        self, decide: Decide | None = None, *, fail_extractions: int = 0, reply_delay: float = 0
    ) -> None:
        super().__init__()
        self.decide: Decide = decide or (lambda _text, _known: [])
        self.fail_extractions = fail_extractions
        self.reply_delay = reply_delay
        self.extractions: list[Extraction] = []
        self.log: list[tuple[str, str]] = []

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.requests.append(chat_ctx.copy())
        names = {getattr(getattr(t, "info", None), "name", None) for t in tools or []}
        extraction = "record_changes" in names
        if not extraction:
            self.log.append(("reply-start", (chat_texts(chat_ctx, "user") or [""])[-1]))
        return _Stream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            extract=extraction,
        )

    async def answer(self, chat_ctx: llm.ChatContext, extract: bool) -> list[llm.ChoiceDelta]:
        if not extract:
            await asyncio.sleep(self.reply_delay)
            deltas = self.respond(chat_ctx)
            self.log.append(("reply-end", (chat_texts(chat_ctx, "user") or [""])[-1]))
            return deltas
        request = read_request(chat_texts(chat_ctx, "user")[-1])
        self.extractions.append(request)
        self.log.append(("extract", " | ".join(request.messages)))
        if len(self.extractions) <= self.fail_extractions:
            raise RuntimeError("fake model is down")
        shown = {key: value for (_category, key), value in request.known.items()}
        changes = [
            {**change, "message": number}
            for number, text in enumerate(request.messages, start=1)
            for change in self.decide(text, shown)
        ]
        call = llm.FunctionToolCall(
            name="record_changes", arguments=json.dumps({"changes": changes}), call_id="c1"
        )
        return [llm.ChoiceDelta(role="assistant", tool_calls=[call])]


class _Stream(llm.LLMStream):
    def __init__(self, fake: FakeMemoryModel, *, extract: bool, **kwargs: Any) -> None:
        super().__init__(fake, **kwargs)
        self._extract = extract

    async def _run(self) -> None:
        fake = self._llm
        assert isinstance(fake, FakeMemoryModel)
        for delta in await fake.answer(self._chat_ctx, self._extract):
            self._event_ch.send_nowait(llm.ChatChunk(id="fake", delta=delta))


def read_request(text: str) -> Extraction:
    """The known facts and the caller's messages of an extraction request's text."""
    known: dict[tuple[str, str], str] = {}
    messages: list[str] = []
    for line in text.splitlines():
        if match := _KNOWN_LINE.match(line):
            known[(match[1], match[2])] = json.loads(match[3])
        elif match := _CALLER_LINE.search(line):
            messages.append(json.loads(match[1]))
    return Extraction(messages, known)


def change(action: str, category: str, key: str, value: str = "") -> dict[str, Any]:
    return {"action": action, "category": category, "key": key, "value": value}


async def facts_of(identity: str) -> dict[tuple[str, str], str]:
    with session_user(identity):
        return {
            (m.category, m.key): m.value for m in await memory_manager.alist() if not m.is_utterance
        }


# -- what the model's answer may do ----------------------------------------------------------


def known_fact(category: str, key: str, value: str) -> Memory:
    return Memory(category=category, key=key, value=value)


def test_changes_are_checked_and_land_in_the_slots_the_model_was_shown() -> None:
    known = [known_fact("FACT", "lives_in", "Porto"), known_fact("RELATIONSHIP", "dog_name", "Rex")]
    changes = parse_changes(
        json.dumps(
            {
                "changes": [
                    change("add", "PREFERENCE", "Favorite Color", " deep  red "),
                    change("add", "NOT_A_CATEGORY", "x", "y"),
                    change("add", "GOAL", "", "y"),
                    change("add", "GOAL", "utterance_1", "y"),
                    change("add", "GOAL", "marathon", ""),
                    change("explode", "GOAL", "marathon", "run one"),
                    # a known key named under another category still updates its own slot
                    {**change("add", "EXPERIENCE", "lives_in", "Lisbon"), "message": 2},
                    # only a slot the model was shown can be deleted
                    change("delete", "RELATIONSHIP", "cat_name"),
                    {**change("delete", "RELATIONSHIP", "dog_name", "whatever"), "message": 9},
                    {**change("update", "goal", "run-a-marathon", "run a marathon"), "message": 1},
                ]
            }
        ),
        messages=2,
        known=known,
    )
    assert [(c.action, c.category, c.key, c.value, c.message) for c in changes] == [
        (Action.ADD, MemoryCategory.PREFERENCE, "favorite_color", "deep red", 1),
        (Action.UPDATE, MemoryCategory.FACT, "lives_in", "Lisbon", 1),
        (Action.DELETE, MemoryCategory.RELATIONSHIP, "dog_name", "", 1),
        (Action.ADD, MemoryCategory.GOAL, "run_a_marathon", "run a marathon", 0),
    ]


def test_an_answer_without_a_list_of_changes_is_a_failure_not_an_empty_answer() -> None:
    for arguments in ("not json", json.dumps({"changes": "nope"}), json.dumps([1])):
        with pytest.raises(ExtractionFailed):
            parse_changes(arguments, messages=1, known=[])
    assert parse_changes(json.dumps({"changes": []}), messages=1, known=[]) == []


# -- batches through the real writer and store -----------------------------------------------


async def test_extracted_facts_are_written_by_the_background_writer_for_the_caller(
    memory: CallerMemory,
) -> None:
    def decide(text: str, _known: dict[str, str]) -> list[dict[str, Any]]:
        return [change("add", "GOAL", "marathon", "run a marathon")] if "marathon" in text else []

    model = FakeMemoryModel(decide)
    writer = capture_writer(memory, "runner@example.com", fact_extractor=LLMFactExtractor(model))
    writer.capture("This year I finally want to run a marathon in under four hours")
    assert await writer.aclose(timeout=5)
    assert [e.messages for e in model.extractions] == [
        ["This year I finally want to run a marathon in under four hours"]
    ]
    with session_user("runner@example.com"):
        assert await memory_manager.aretrieve("GOAL", "marathon") == "run a marathon"
    with session_user("someone-else@example.com"):
        assert await memory_manager.alist() == []


async def test_the_model_is_shown_the_callers_facts_and_updates_their_slot(
    memory: CallerMemory,
) -> None:
    with session_user("mover@example.com"):
        await memory_manager.astore("FACT", "lives_in", "Porto")
        await memory_manager.astore("FACT", "job", "baker")
    with session_user("someone-else@example.com"):
        await memory_manager.astore("FACT", "lives_in", "Oslo")

    def decide(text: str, known: dict[str, str]) -> list[dict[str, Any]]:
        # as a model following the prompt would: the known slot holding the old city
        slot = next((k for k, v in known.items() if v == "Porto"), "current_city")
        return [change("update", "FACT", slot, "Lisbon")] if "Lisbon" in text else []

    model = FakeMemoryModel(decide)
    writer = capture_writer(memory, "mover@example.com", fact_extractor=LLMFactExtractor(model))
    writer.capture("We packed everything up and moved to Lisbon last month")
    assert await writer.aclose(timeout=5)

    [request] = model.extractions
    assert request.known == {("FACT", "lives_in"): "Porto", ("FACT", "job"): "baker"}
    facts = await facts_of("mover@example.com")
    assert facts == {("FACT", "lives_in"): "Lisbon", ("FACT", "job"): "baker"}
    with session_user("mover@example.com") as user_id:
        history = await memory.store.list_history(user_id)
    assert [(h.key, h.value) for h in history] == [("lives_in", "Porto")]
    assert await facts_of("someone-else@example.com") == {("FACT", "lives_in"): "Oslo"}


async def test_messages_are_read_in_batches_each_once(memory: CallerMemory) -> None:
    model = FakeMemoryModel()
    writer = capture_writer(memory, "batch@example.com", fact_extractor=LLMFactExtractor(model))
    said = [f"I spent day {n} of the holiday walking by the river" for n in range(1, 11)]
    for n, text in enumerate(said):
        writer.capture(text, message_id=f"m{n}")
        writer.capture(text, message_id=f"m{n}")  # the same message captured twice
        await asyncio.sleep(0.01)
    await writer.flush()
    await asyncio.sleep(0.05)
    during_the_call = [e.messages for e in model.extractions]
    assert await writer.aclose(timeout=5)
    assert during_the_call == [said[0:4], said[4:8]]
    assert [e.messages for e in model.extractions] == [said[0:4], said[4:8], said[8:10]]


async def test_a_failed_batch_is_retried_once_then_left_to_the_rules(
    memory: CallerMemory, caplog: pytest.LogCaptureFixture
) -> None:
    def decide(text: str, _known: dict[str, str]) -> list[dict[str, Any]]:
        return [change("add", "INTEREST", "hobby", "pottery")] if "pottery" in text else []

    model = FakeMemoryModel(decide, fail_extractions=3)
    writer = capture_writer(memory, "retry@example.com", fact_extractor=LLMFactExtractor(model))
    first = ["my favourite colour is teal", "I do pottery on Sundays", "ok", "nice"]
    then = ["I like rainy days", "Tell me a story", "I slept well", "bye for now"]
    last = ["I also took up pottery again"]
    with caplog.at_level(logging.DEBUG, logger=EXTRACTOR_LOG):
        for text in first + then:
            writer.capture(text)
            await asyncio.sleep(0.01)
        await writer.flush()
        await asyncio.sleep(0.05)
        for text in last:
            writer.capture(text)
        assert await writer.aclose(timeout=5)

    # request 1 (first) fails; request 2 retries it with `then`, and fails: `first` has been
    # read twice and is given up; at the close `then` and `last` are read (request 3 fails:
    # `then` is given up), and `last` once more (request 4 succeeds)
    assert [e.messages for e in model.extractions] == [first, first + then, then + last, last]
    facts = await facts_of("retry@example.com")
    assert facts[("PREFERENCE", "favorite_color")] == "teal"  # the rules' fact, at once
    assert facts[("INTEREST", "hobby")] == "pottery"  # from `last`, the only one read
    warnings = [
        r for r in caplog.records if r.name == EXTRACTOR_LOG and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1 and "fake model is down" in warnings[0].getMessage()


async def test_a_failing_model_costs_only_the_extra_facts(memory: CallerMemory) -> None:
    model = FakeMemoryModel(fail_extractions=100)
    writer = capture_writer(
        memory, "x@example.com", fact_extractor=LLMFactExtractor(model, timeout_s=2)
    )
    writer.capture("my favourite colour is teal")
    assert await writer.aclose(timeout=5)  # every memory the rules found is stored
    assert len(model.extractions) == 2  # the last batch and its one retry
    with session_user("x@example.com"):
        stored = {(m.category, m.key) for m in await memory_manager.alist()}
    assert ("PREFERENCE", "favorite_color") in stored


# -- the setting -----------------------------------------------------------------------------


def test_llm_extraction_is_on_by_default_and_zero_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEMORY_LLM_EXTRACTOR", raising=False)
    monkeypatch.delenv("MEMORY_LLM_EXTRACTOR_EVERY", raising=False)
    default = MemorySettings.load()
    assert default.llm_extractor is True and default.llm_extractor_every == 4
    monkeypatch.setenv("MEMORY_LLM_EXTRACTOR", "0")
    monkeypatch.setenv("MEMORY_LLM_EXTRACTOR_EVERY", "6")
    chosen = MemorySettings.load()
    assert chosen.llm_extractor is False and chosen.llm_extractor_every == 6
    monkeypatch.setenv("MEMORY_LLM_EXTRACTOR", "sometimes")
    with pytest.raises(SettingsError) as refused:
        MemorySettings.load()
    assert "MEMORY_LLM_EXTRACTOR must be 0" in str(refused.value)
    assert "default, on" in str(refused.value)
    monkeypatch.setenv("MEMORY_LLM_EXTRACTOR", "1")
    monkeypatch.setenv("MEMORY_LLM_EXTRACTOR_EVERY", "0")
    with pytest.raises(SettingsError, match="MEMORY_LLM_EXTRACTOR_EVERY must be a whole number"):
        MemorySettings.load()


# -- on every backend: an update keeps history and retires the old words; a delete forgets ----


def life_changes(text: str, known: dict[str, str]) -> list[dict[str, Any]]:
    """A model reading where the caller lives and whether they have a dog."""
    if "Porto has been my home" in text:
        return [change("add", "FACT", "lives_in", "Porto")]
    if "moved to Lisbon" in text:
        slot = next((key for key, value in known.items() if value == "Porto"), "current_city")
        return [change("update", "FACT", slot, "Lisbon")]
    if "don't have a dog" in text and "dog_name" in known:
        return [change("delete", "RELATIONSHIP", "dog_name")]
    return []


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
def any_store(request: pytest.FixtureRequest) -> MemoryStore:
    backend: MemoryStore = request.getfixturevalue(f"{request.param}_store")
    return backend


async def test_updates_and_deletes_on_every_backend(any_store: MemoryStore) -> None:
    store = any_store
    memory = CallerMemory(store=store, settings=MemorySettings.load(llm_extractor=True))
    identity = "mover@example.com"
    for said in (
        ["Porto has been my home for years", "I have a dog called Rex"],
        ["We packed everything up and moved to Lisbon last month", "I don't have a dog any more"],
    ):
        model = FakeMemoryModel(life_changes)
        writer = capture_writer(memory, identity, fact_extractor=LLMFactExtractor(model))
        for text in said:
            writer.capture(text)
        assert await writer.aclose(timeout=10)

    with session_user(identity) as user_id:
        facts = {
            (m.category, m.key): m.value for m in await memory.manager.alist() if not m.is_utterance
        }
        history = await store.list_history(user_id)
        found = await memory.manager.asearch("Porto home", limit=10)
        rex = await memory.manager.asearch("dog Rex", limit=10)
    assert facts[("FACT", "lives_in")] == "Lisbon"
    assert ("FACT", "current_city") not in facts
    assert ("RELATIONSHIP", "dog_name") not in facts
    assert ("FACT", "lives_in", "Porto") in {(h.category, h.key, h.value) for h in history}
    # the words that said Porto are not recalled (they stated the fact that changed)
    assert not [m for m in found if "Porto" in m.value]
    assert not [m for m in rex if "Rex" in m.value]
