"""The optional LLM fact extractor: parsing, and its path through the background writer."""

from __future__ import annotations

import json

from livekit.agents import llm

from caller_memory import CallerMemory, MemoryCategory, memory_manager, session_user
from caller_memory.capture.llm_extractor import LLMFactExtractor, parse_facts
from caller_memory.testing import FakeLLM, user_texts
from tests.support import capture_writer


class FakeFactLLM(FakeLLM):
    """Answers every request with one `record_facts` call carrying `facts` (a test fake)."""

    def __init__(self, facts: list[dict[str, str]] | None = None, *, fail: bool = False) -> None:
        super().__init__()
        self.facts = facts or []
        self.fail = fail

    @property
    def seen_texts(self) -> list[str]:
        """The text each request asked about (the last user message of each)."""
        return [user_texts(chat_ctx)[-1] for chat_ctx in self.requests]

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        if self.fail:
            raise RuntimeError("fake model is down")
        call = llm.FunctionToolCall(
            name="record_facts", arguments=json.dumps({"facts": self.facts}), call_id="c1"
        )
        return [llm.ChoiceDelta(role="assistant", tool_calls=[call])]


def test_parse_facts_keeps_valid_facts_and_files_known_keys_in_their_category() -> None:
    facts = parse_facts(
        json.dumps(
            {
                "facts": [
                    {"category": "FACT", "key": "Favorite Color", "value": " deep  red "},
                    {"category": "NOT_A_CATEGORY", "key": "x", "value": "y"},
                    {"category": "GOAL", "key": "", "value": "y"},
                    {"category": "GOAL", "key": "utterance_1", "value": "y"},
                    {"category": "goal", "key": "run-a-marathon", "value": "run a marathon"},
                ]
            }
        )
    )
    assert [(f.category, f.key, f.value) for f in facts] == [
        (MemoryCategory.PREFERENCE, "favorite_color", "deep red"),
        (MemoryCategory.GOAL, "run_a_marathon", "run a marathon"),
    ]
    assert parse_facts("not json") == []
    assert parse_facts(json.dumps({"facts": "nope"})) == []


async def test_extracted_facts_are_written_by_the_background_writer_for_the_caller(
    memory: CallerMemory,
) -> None:
    model = FakeFactLLM([{"category": "GOAL", "key": "marathon", "value": "run a marathon"}])
    writer = capture_writer(memory, "runner@example.com", fact_extractor=LLMFactExtractor(model))
    writer.capture("This year I finally want to run a marathon in under four hours")
    assert await writer.aclose(timeout=5)
    assert model.seen_texts == ["This year I finally want to run a marathon in under four hours"]
    with session_user("runner@example.com"):
        assert await memory_manager.aretrieve("GOAL", "marathon") == "run a marathon"
    with session_user("someone-else@example.com"):
        assert await memory_manager.alist() == []


async def test_a_failing_model_costs_only_the_extra_facts(memory: CallerMemory) -> None:
    writer = capture_writer(
        memory,
        "x@example.com",
        fact_extractor=LLMFactExtractor(FakeFactLLM(fail=True), timeout_s=2),
    )
    writer.capture("my favourite colour is teal")
    assert await writer.aclose(timeout=5)
    with session_user("x@example.com"):
        stored = {(m.category, m.key) for m in await memory_manager.alist()}
    assert ("PREFERENCE", "favorite_color") in stored
