"""Facts from the session's own LLM, across real calls.

Callers are started as the reference worker starts them (`memory.attach`, then
`session.start` with its `Companion`), in livekit-agents' real `AgentSession`, on a real
SQLite store; only the LLM is a fake (`FakeMemoryModel`: it replies to the conversation, and
answers extraction requests by reading them). What is asserted is what the store holds
afterwards and what the next call's LLM requests carry, not what the fake said.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from livekit.agents import AgentSession

from caller_memory import CallerSession, livekit_identity_to_uuid, memory_manager, session_user
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import chat_texts
from tests.session_harness import start_in_own_task, text_session
from tests.sessions.test_llm_extractor import EXTRACTOR_LOG, FakeMemoryModel, change, facts_of
from tests.support import install_memory

CALLER = "caller@example.com"
OTHER = "other@example.com"


async def call(
    model: FakeMemoryModel,
    identity: str,
    said: list[str],
    *,
    session: AgentSession[Any] | None = None,
) -> CallerSession:
    """One call: `identity` types each of `said`, waiting for each reply, then hangs up."""
    session = session or text_session(model)
    caller = await start_in_own_task(session, identity)
    for text in said:
        await session.run(user_input=text)
    assert await caller.aclose() is True
    await session.aclose()
    return caller


def call_requests(model: FakeMemoryModel, since: int) -> str:
    """Everything the LLM was sent since request number `since`."""
    return "\n".join(t for request in model.requests[since:] for t in chat_texts(request))


def reply_requests_for(model: FakeMemoryModel, text: str, since: int = 0) -> list[str]:
    found = [
        "\n".join(chat_texts(r))
        for r in model.requests[since:]
        if chat_texts(r, "user")[-1:] == [text]
    ]
    assert found, f"no request answered {text!r}"
    return found


# -- batches: every few caller turns and at the end, never before the triggering reply -------


async def test_facts_are_read_every_few_turns_after_the_reply_and_once_at_the_end(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    install_memory(installed_sqlite_store, llm_extractor=True, llm_extractor_every=4)
    model = FakeMemoryModel(reply_delay=0.2)
    said = [f"On day {n} of my holiday I walked along the river" for n in range(1, 11)]
    session = text_session(model)
    caller = await start_in_own_task(session, CALLER)
    for text in said:
        await session.run(user_input=text)
    during_the_call = [e.messages for e in model.extractions]
    assert await caller.aclose() is True
    await session.aclose()

    # ceil(10 / 4) = 3 requests: two during the call, the rest at the end of the session
    assert [e.messages for e in model.extractions] == [said[0:4], said[4:8], said[8:10]]
    assert during_the_call == [said[0:4], said[4:8]]
    # each batch started only once the reply to the message that made it due had ended
    log = model.log
    extractions = [i for i, (what, _) in enumerate(log) if what == "extract"]
    for position, last_message in zip(extractions, (said[3], said[7], said[9]), strict=True):
        assert log.index(("reply-end", last_message)) < position


# -- update: a fact that changed is one slot, its old value history, never recalled -------------


def mover(text: str, known: dict[str, str]) -> list[dict[str, Any]]:
    """A model reading where the caller lives: a new city updates the slot shown holding the
    old one (the prompt asks to reuse known keys); without one shown it adds a new key."""
    if "Porto has been my home" in text:
        return [change("add", "FACT", "lives_in", "Porto")]
    if "moved to Lisbon" in text:
        slot = next((key for key, value in known.items() if value == "Porto"), "current_city")
        return [change("update", "FACT", slot, "Lisbon")]
    return []


async def test_a_move_updates_the_slot_and_the_next_call_hears_only_the_new_city(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    memory = install_memory(installed_sqlite_store, llm_extractor=True)
    model = FakeMemoryModel(mover)
    await call(model, CALLER, ["Porto has been my home for years"])
    await call(model, CALLER, ["We packed everything up and moved to Lisbon last month"])
    third = len(model.requests)
    question = "Where is home for me these days?"
    await call(model, CALLER, [question])

    facts = await facts_of(CALLER)
    assert facts == {("FACT", "lives_in"): "Lisbon"}  # one slot, not a second key
    history = await memory.store.list_history(livekit_identity_to_uuid(CALLER))
    assert [(h.key, h.value) for h in history] == [("lives_in", "Porto")]
    [asked] = reply_requests_for(model, question, since=third)
    assert "Lisbon" in asked
    # not in the known block, not in recall, not in anything the third call sent: the words
    # that said Porto stopped being recalled when the fact they state changed
    assert "Porto" not in call_requests(model, third)


# -- delete: a fact the caller says is no longer true is forgotten ---------------------------


def dog_owner(text: str, known: dict[str, str]) -> list[dict[str, Any]]:
    if "don't have a dog" in text and "dog_name" in known:
        return [change("delete", "RELATIONSHIP", "dog_name")]
    return []


async def test_a_dog_the_caller_no_longer_has_is_forgotten_and_not_recalled(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    install_memory(installed_sqlite_store, llm_extractor=True)
    model = FakeMemoryModel(dog_owner)
    await call(model, CALLER, ["I have a dog called Rex"])
    assert (await facts_of(CALLER))[("RELATIONSHIP", "dog_name")] == "Rex"
    await call(model, CALLER, ["I don't have a dog any more"])
    third = len(model.requests)
    await call(model, CALLER, ["What was my dog called?"])

    assert ("RELATIONSHIP", "dog_name") not in await facts_of(CALLER)
    assert "Rex" not in call_requests(model, third)


# -- the caller's language: values stay as they said them -----------------------------------


@pytest.mark.parametrize(
    ("said", "fact", "question"),
    [
        (
            "Trabajo como diseñadora gráfica en Valencia",
            ("FACT", "job", "diseñadora gráfica"),
            "¿Te acuerdas de lo que hago, de mi trabajo como diseñadora?",
        ),
        (
            "میں کراچی میں رہتا ہوں",
            ("FACT", "lives_in", "کراچی"),
            "کیا آپ کو یاد ہے کہ میں کراچی میں کہاں رہتا ہوں؟",
        ),
    ],
    ids=["spanish", "urdu"],
)
async def test_facts_keep_the_callers_language(
    installed_sqlite_store: SQLiteMemoryStore,
    said: str,
    fact: tuple[str, str, str],
    question: str,
) -> None:
    install_memory(installed_sqlite_store, llm_extractor=True)
    category, key, value = fact

    def reader(text: str, known: dict[str, str]) -> list[dict[str, Any]]:
        return [change("add", category, key, value)] if text == said else []

    model = FakeMemoryModel(reader)
    await call(model, CALLER, [said])
    [request] = model.extractions
    assert request.messages == [said]  # the model read the caller's own words

    assert (await facts_of(CALLER))[(category, key)] == value
    second = len(model.requests)
    await call(model, CALLER, [question])
    assert value in call_requests(model, second)


# -- two callers at once: each one's facts stay theirs ---------------------------------------


async def test_two_callers_on_one_model_each_get_only_their_own_facts(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    install_memory(installed_sqlite_store, llm_extractor=True, llm_extractor_every=2)

    def pets(text: str, _known: dict[str, str]) -> list[dict[str, Any]]:
        name = text.rsplit(" ", 1)[-1]
        return [change("add", "RELATIONSHIP", "parrot_name", name)] if "parrot" in text else []

    model = FakeMemoryModel(pets, reply_delay=0.01)
    await asyncio.gather(
        call(model, CALLER, ["I adore birds", "My parrot is named Kiwi", "he talks a lot"]),
        call(model, OTHER, ["I adore birds", "My parrot is named Mango", "she sings"]),
    )
    assert (await facts_of(CALLER))[("RELATIONSHIP", "parrot_name")] == "Kiwi"
    assert (await facts_of(OTHER))[("RELATIONSHIP", "parrot_name")] == "Mango"


# -- without the LLM: the rules, the call going on, one warning ------------------------------


async def test_a_failing_model_leaves_the_rules_facts_and_the_call_goes_on(
    installed_sqlite_store: SQLiteMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    install_memory(installed_sqlite_store, llm_extractor=True, llm_extractor_every=2)
    model = FakeMemoryModel(fail_extractions=1000)
    said = ["My name is Marisol", "my favourite colour is teal", "I work as a nurse", "ok"]
    with caplog.at_level(logging.INFO):
        await call(model, CALLER, said)

    replied = [text for what, text in model.log if what == "reply-end"]
    assert replied[-4:] == said  # every turn was answered
    assert len(model.extractions) >= 2  # it was asked, and failed
    facts = await facts_of(CALLER)
    assert facts[("PRESENTATION", "name")] == "Marisol"
    assert facts[("PREFERENCE", "favorite_color")] == "teal"
    assert facts[("FACT", "job")] == "nurse"
    warnings = [
        r for r in caplog.records if r.name == EXTRACTOR_LOG and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1


async def test_with_the_setting_off_no_extraction_is_asked_and_the_rules_still_work(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    install_memory(installed_sqlite_store, llm_extractor=False)
    model = FakeMemoryModel(lambda _t, _k: [change("add", "INTEREST", "hobby", "chess")])
    caller = await call(model, CALLER, ["My name is Marisol", "I play chess on Fridays"])
    assert caller.writer.facts is None
    assert model.extractions == []
    facts = await facts_of(CALLER)
    assert facts[("PRESENTATION", "name")] == "Marisol"
    assert ("INTEREST", "hobby") not in facts


async def test_a_session_without_an_llm_asks_none_and_keeps_the_rules_facts(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    memory = install_memory(installed_sqlite_store, llm_extractor=True)
    session: AgentSession[Any] = AgentSession(llm=None)

    async def entrypoint() -> CallerSession:
        return await memory.attach(session, identity=CALLER)

    caller = await asyncio.create_task(entrypoint())
    assert caller.writer.facts is None
    caller.caller_said("My name is Marisol", message_id="m1")
    assert await caller.aclose() is True
    with session_user(CALLER):
        assert await memory_manager.aretrieve("PRESENTATION", "name") == "Marisol"
