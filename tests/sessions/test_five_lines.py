"""Five lines give an existing LiveKit agent a memory of each caller: the composition API.

`PLAIN_AGENT` is an agent in the style of LiveKit's starter (livekit-examples/
agent-starter-python, `src/agent.py`): an `Agent` subclass with its instructions, a worker, and
an entrypoint that builds an `AgentSession` and starts it with the agent in the job's room.
`AGENT_WITH_MEMORY` is the same source with the memory lines added (README's five lines); the
first test holds it to at most five added or changed lines.

The second test executes `AGENT_WITH_MEMORY` as a module and runs its own entrypoint, as the
worker would, for two callers at once, each in a job of their own (a real `JobContext` made by
livekit's `fake_job_context`, in a fake room: no LiveKit server can run here). What cannot run
here is replaced where the starter names it, and only there: its models (`inference.STT`,
`inference.LLM`, `inference.TTS`) by the fakes of `caller_memory.testing` (an LLM that calls
the memory tools when asked to), and the session's audio settings (a turn detector and a
microphone that need models and a server) by `spoken_session`'s; the `AgentSession` is
livekit's own, built from the fakes the starter's code asked for. The memory is the one the
five lines build, `CallerMemory.from_settings()`, on the embedded SQLite store the test's
environment names. Each caller types (`session.run`) and speaks (audio -> `FakeSTT` ->
`on_user_turn_completed`), their turns in flight at the same time, and what happened is read
from what each caller's LLM was sent and from the store file, row by row.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentSession, get_job_context, llm
from livekit.agents.testing import fake_job_context
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult

from caller_memory import CallerMemory, MemoryKind, livekit_identity_to_uuid
from caller_memory.capture.rule_based import extract_memories
from caller_memory.recall.block import BLOCK_PREAMBLE, BLOCK_START
from caller_memory.testing import (
    FakeAudioInput,
    FakeScriptedLLM,
    FakeSTT,
    chat_texts,
    eventually,
    reply_arrived,
    spoken_session,
)
from tests.fake_room import FakeRoom
from tests.support import sqlite_rows

PLAIN_AGENT = '''\
import logging

from dotenv import load_dotenv
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    cli,
    inference,
)
from livekit.plugins import silero

logger = logging.getLogger("agent")

load_dotenv(".env.local")

AGENT_MODEL = "openai/gpt-4.1-mini"


class Assistant(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions="""You are a helpful voice AI assistant. The user is interacting
            with you via voice, even if you perceive the conversation as text.
            Your responses are concise, to the point, and without any complex formatting.""",
        )


server = AgentServer()


def prewarm(proc: JobProcess):
    proc.userdata["vad"] = silero.VAD.load()


server.setup_fnc = prewarm


@server.rtc_session(agent_name="my-agent")
async def my_agent(ctx: JobContext):
    ctx.log_context_fields = {
        "room": ctx.room.name,
    }

    session = AgentSession(
        stt=inference.STT(model="deepgram/nova-3", language="multi"),
        llm=inference.LLM(model=AGENT_MODEL),
        tts=inference.TTS(model="cartesia/sonic-3", voice="9626c31c-bec5-4cca-baa8-f8ba9e84c8bc"),
        vad=ctx.proc.userdata["vad"],
    )

    await session.start(
        agent=Assistant(),
        room=ctx.room,
    )

    await ctx.connect()


if __name__ == "__main__":
    cli.run_app(server)
'''

AGENT_WITH_MEMORY = '''\
import logging

from dotenv import load_dotenv
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    cli,
    inference,
)
from livekit.plugins import silero
from caller_memory import CallerMemory, MemoryAgent

logger = logging.getLogger("agent")

load_dotenv(".env.local")

AGENT_MODEL = "openai/gpt-4.1-mini"
memory = CallerMemory.from_settings()


class Assistant(MemoryAgent):
    def __init__(self) -> None:
        super().__init__(
            instructions="""You are a helpful voice AI assistant. The user is interacting
            with you via voice, even if you perceive the conversation as text.
            Your responses are concise, to the point, and without any complex formatting.""",
        )


server = AgentServer()


def prewarm(proc: JobProcess):
    proc.userdata["vad"] = silero.VAD.load()


server.setup_fnc = prewarm


@server.rtc_session(agent_name="my-agent")
async def my_agent(ctx: JobContext):
    ctx.log_context_fields = {
        "room": ctx.room.name,
    }

    session = AgentSession(
        stt=inference.STT(model="deepgram/nova-3", language="multi"),
        llm=inference.LLM(model=AGENT_MODEL),
        tts=inference.TTS(model="cartesia/sonic-3", voice="9626c31c-bec5-4cca-baa8-f8ba9e84c8bc"),
        vad=ctx.proc.userdata["vad"],
    )

    caller = await memory.attach(session, identity=(await ctx.wait_for_participant()).identity)
    await session.start(
        agent=Assistant(),
        room=ctx.room,
        **caller.start_options,
    )

    await ctx.connect()


if __name__ == "__main__":
    cli.run_app(server)
'''

FIVE_LINES = [
    "from caller_memory import CallerMemory, MemoryAgent",
    "memory = CallerMemory.from_settings()",
    "class Assistant(MemoryAgent):",
    "caller = await memory.attach(session, identity=(await ctx.wait_for_participant()).identity)",
    "**caller.start_options,",
]
STARTER_INSTRUCTIONS = "You are a helpful voice AI assistant."

ALICE = "alice@example.com"
BOB = "bob@example.com"
REPLY_TIMEOUT = 10.0
RECALLED = f"{BLOCK_START}\n{BLOCK_PREAMBLE}\n"  # how the block recall adds to a turn starts
QUESTION = "what's my favourite colour?"
WHAT_DO_YOU_KNOW = "what do you know about me?"
FORGET_PREFIX = "please forget "
REMEMBER_PREFIX = "please remember "


# -- the five lines --------------------------------------------------------------------------


def test_memory_is_five_lines_added_to_a_starter_agent() -> None:
    diff = list(
        difflib.unified_diff(
            PLAIN_AGENT.splitlines(), AGENT_WITH_MEMORY.splitlines(), lineterm="", n=0
        )
    )
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    assert len(added) <= 5
    assert [line.strip() for line in added] == FIVE_LINES
    # nothing of the agent was taken away: the one line removed is the one the base class
    # changes in
    assert [line.strip() for line in removed] == ["class Assistant(Agent):"]
    # both are whole Python modules
    compile(PLAIN_AGENT, "plain_agent.py", "exec")
    compile(AGENT_WITH_MEMORY, "agent_with_memory.py", "exec")


# -- the agent with memory, run by its own entrypoint ----------------------------------------


class FakeMemoryToolLLM(FakeScriptedLLM):
    """A fake LLM that uses the memory tools when the caller asks it to: "what do you know
    about me?" calls what_do_you_know_about_me, "please forget X" forget_memory(what=X),
    "please remember X" remember_this(fact=X); once a tool's output is in, it answers
    "tool said: <output>". Anything else gets "reply: <what the caller said>"."""

    model_name = "fake-memory-tools"
    _call_ids = itertools.count(1)

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if isinstance(last, llm.FunctionCallOutput):
            return [llm.ChoiceDelta(role="assistant", content=f"tool said: {last.output}")]
        said = (last.text_content or "") if isinstance(last, llm.ChatMessage) else ""
        if said == WHAT_DO_YOU_KNOW:
            return self._call("what_do_you_know_about_me", {})
        if said.startswith(FORGET_PREFIX):
            return self._call("forget_memory", {"what": said.removeprefix(FORGET_PREFIX)})
        if said.startswith(REMEMBER_PREFIX):
            return self._call("remember_this", {"fact": said.removeprefix(REMEMBER_PREFIX)})
        return super().respond(chat_ctx)

    def _call(self, name: str, arguments: dict[str, str]) -> list[llm.ChoiceDelta]:
        call = llm.FunctionToolCall(
            name=name, arguments=json.dumps(arguments), call_id=f"call-{next(self._call_ids)}"
        )
        return [llm.ChoiceDelta(role="assistant", tool_calls=[call])]


@dataclass
class Job:
    """One caller's job: their room (they are in it), the fakes standing in for the models the
    starter's entrypoint asks for in this job, and the session it started."""

    identity: str
    room: FakeRoom = field(default_factory=FakeRoom)
    llm: FakeMemoryToolLLM = field(default_factory=FakeMemoryToolLLM)
    stt: FakeSTT = field(default_factory=FakeSTT)
    models_asked: list[str] = field(default_factory=list)
    session: AgentSession[Any] | None = None

    def __post_init__(self) -> None:
        self.room.join(self.identity)

    @property
    def running(self) -> AgentSession[Any]:
        assert self.session is not None, "the entrypoint started no session"
        return self.session


class StarterModels:
    """Stands in for `livekit.agents.inference` in the starter's module (no model can run
    here): each model the entrypoint asks for is the fake of the job it runs in, found by the
    job's room, and `AgentSession(...)` is livekit's real session, built from those fakes with
    `spoken_session`'s audio settings (turns end on the STT's end of speech; a fake
    microphone) and its audio output off (no TTS can run here: the agent answers in
    transcripts)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs

    def _job(self) -> Job:
        room = get_job_context().room
        [job] = [job for job in self.jobs if job.room is room]
        return job

    def STT(self, *, model: str, **_options: Any) -> FakeSTT:
        job = self._job()
        job.models_asked.append(model)
        return job.stt

    def LLM(self, *, model: str, **_options: Any) -> FakeMemoryToolLLM:
        job = self._job()
        job.models_asked.append(model)
        return job.llm

    def TTS(self, *, model: str, **_options: Any) -> None:
        self._job().models_asked.append(model)

    def build_session(
        self, *, stt: FakeSTT, llm: FakeMemoryToolLLM, **_starter_options: Any
    ) -> AgentSession[Any]:
        job = self._job()
        session = spoken_session(llm, stt)
        session.output.set_audio_enabled(False)
        job.session = session
        return session


def load_agent(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module


async def run_entrypoint(module: types.ModuleType, job: Job) -> None:
    """What the worker does with a job: the module's entrypoint, in a task of its own, with
    the job's context installed."""

    async def entrypoint() -> None:
        with fake_job_context(room=job.room) as ctx:  # type: ignore[arg-type]
            # prewarm's VAD is not needed: turns here end on the fake STT's end of speech
            ctx.proc.userdata["vad"] = None
            await module.my_agent(ctx)

    await asyncio.create_task(entrypoint())


async def hang_up(job: Job) -> None:
    session = job.running
    assert isinstance(session.input.audio, FakeAudioInput)
    session.input.audio.close()
    await session.aclose()


async def typed(job: Job, text: str) -> RunResult[Any]:
    return await job.running.run(user_input=text)


async def spoken(job: Job, text: str) -> llm.ChatMessage:
    replied = reply_arrived(job.running, f"reply: {text}")
    job.stt.say(text)
    return await asyncio.wait_for(replied, REPLY_TIMEOUT)


def replies(result: RunResult[Any]) -> list[str]:
    return [
        event.item.text_content or ""
        for event in result.events
        if isinstance(event, ChatMessageEvent) and event.item.role == "assistant"
    ]


def tool_outputs(result: RunResult[Any]) -> list[str]:
    return [
        event.item.output
        for event in result.events
        if isinstance(getattr(event, "item", None), llm.FunctionCallOutput)
    ]


def requests_answering(fake_llm: FakeMemoryToolLLM, text: str) -> list[llm.ChatContext]:
    return [r for r in fake_llm.requests if chat_texts(r, "user")[-1:] == [text]]


def everything_sent(fake_llm: FakeMemoryToolLLM) -> str:
    return "\n".join(t for request in fake_llm.requests for t in chat_texts(request))


Turn = Callable[[Job], Awaitable[object]]


async def calls_at_once(jobs: dict[str, Job], turns: dict[str, list[Turn]]) -> list[str]:
    """Each caller's turns in their own task, the two callers' turns in flight at the same
    time (each round starts together); returns who finished a turn, in order."""
    rounds = asyncio.Barrier(len(turns))
    finished: list[str] = []

    async def caller(identity: str) -> None:
        for turn in turns[identity]:
            await rounds.wait()
            await turn(jobs[identity])
            finished.append(identity)

    await asyncio.gather(*(asyncio.create_task(caller(identity)) for identity in turns))
    return finished


async def spool_settled(memory: CallerMemory) -> None:
    """Wait until the memory's spool wrote what it holds (every `attach` starts a replay, and
    a capture queues behind a running replay so that an older value never overwrites a newer
    one)."""
    memory.spool.schedule_replay(first_delay=0.01)
    await eventually(lambda: not memory.spool.has_pending, "the spool to be replayed")


def stored(path: Path, identity: str) -> tuple[list[str], dict[tuple[str, str], str]]:
    """(utterances, facts) stored under the caller's uuid."""
    rows = [m for m in sqlite_rows(path)[1] if m["user_id"] == livekit_identity_to_uuid(identity)]
    utterances = sorted(m["value"] for m in rows if m["kind"] == MemoryKind.UTTERANCE)
    facts = {(m["category"], m["key"]): m["value"] for m in rows if m["kind"] == MemoryKind.FACT}
    return utterances, facts


def captured_from(said: list[str]) -> tuple[list[str], dict[tuple[str, str], str]]:
    """(utterances, facts) the capture rules take from what the caller said."""
    memories = [m for text in said for m in extract_memories(text)]
    utterances = sorted(m.value for m in memories if m.kind == MemoryKind.UTTERANCE)
    facts = {(m.category.value, m.key): m.value for m in memories if m.kind == MemoryKind.FACT}
    return utterances, facts


FIRST_CALL = {
    ALICE: ["My name is Marisol", "my favourite colour is teal", "I love sailing at dawn"],
    BOB: ["My name is Thaddeus", "my favourite colour is orange", "I collect vintage radios"],
}
OWN_WORDS = {
    ALICE: ["Marisol", "teal", "sailing", "Biscuit"],
    BOB: ["Thaddeus", "orange", "radios"],
}


async def test_the_five_lines_give_a_starter_agent_per_caller_memory_in_real_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the starter loads .env.local from the working directory
    # recall has a real budget in production (50 ms); this test is about whose memories
    monkeypatch.setenv("MEMORY_RECALL_BUDGET_MS", "2000")
    database = tmp_path / "memories.sqlite3"  # where the test's environment puts the store
    agent = load_agent(AGENT_WITH_MEMORY, "agent_with_memory")
    memory: CallerMemory = agent.memory
    assert getattr(memory.store, "path", None) == database
    jobs: list[Job] = []
    models = StarterModels(jobs)
    agent.inference = models
    agent.AgentSession = models.build_session
    try:
        await first_call_is_captured_per_caller(agent, jobs, database)
        await second_call_recalls_and_the_tools_act_for_their_caller(agent, jobs, database)
    finally:
        await memory.aclose()


async def first_call_is_captured_per_caller(
    agent: types.ModuleType, jobs: list[Job], database: Path
) -> None:
    """Alice types, Bob speaks, at the same time: what each says lands under their own uuid,
    and only there."""
    call = {ALICE: Job(ALICE), BOB: Job(BOB)}
    jobs[:] = call.values()
    await asyncio.gather(*(run_entrypoint(agent, job) for job in call.values()))
    for identity, job in call.items():
        assert job.running.room_io.linked_participant.identity == identity  # type: ignore[union-attr]
        assert job.models_asked == ["deepgram/nova-3", "openai/gpt-4.1-mini", "cartesia/sonic-3"]

    def typing(text: str) -> Turn:
        async def turn(job: Job) -> None:
            result = await typed(job, text)
            assert replies(result) == [f"reply: {text}"]

        return turn

    def speaking(text: str) -> Turn:
        async def turn(job: Job) -> None:
            reply = await spoken(job, text)
            assert reply.text_content == f"reply: {text}"

        return turn

    finished = await calls_at_once(
        call,
        {
            ALICE: [typing(text) for text in FIRST_CALL[ALICE]],
            BOB: [speaking(text) for text in FIRST_CALL[BOB]],
        },
    )
    assert sorted(finished) == sorted([ALICE] * 3 + [BOB] * 3)
    assert call[BOB].stt.transcripts_sent == FIRST_CALL[BOB]  # Bob's words came from audio
    for job in call.values():
        await hang_up(job)
    await spool_settled(agent.memory)

    # (1) capture: each caller's words, and the facts in them, under their own uuid only
    profiles, memories = sqlite_rows(database)
    callers = {livekit_identity_to_uuid(ALICE), livekit_identity_to_uuid(BOB)}
    assert {m["user_id"] for m in memories} == callers
    assert {p["id"]: p["original_identity"] for p in profiles} == {
        livekit_identity_to_uuid(ALICE): ALICE,
        livekit_identity_to_uuid(BOB): BOB,
    }
    for identity, said in FIRST_CALL.items():
        assert stored(database, identity) == captured_from(said), identity
    assert stored(database, ALICE)[1][("PREFERENCE", "favorite_color")] == "teal"
    assert stored(database, BOB)[1][("PREFERENCE", "favorite_color")] == "orange"
    for identity, job in call.items():
        other = BOB if identity == ALICE else ALICE
        # the starter's own agent answered, with its instructions
        assert [t for t in chat_texts(job.llm.requests[0], "system") if STARTER_INSTRUCTIONS in t]
        assert not [w for w in OWN_WORDS[other] if w in everything_sent(job.llm)], identity


async def second_call_recalls_and_the_tools_act_for_their_caller(
    agent: types.ModuleType, jobs: list[Job], database: Path
) -> None:
    """Both call again at the same time: recall brings each their own memory; the tools the
    model calls read, forget and remember for the caller of the session they run in."""
    call = {ALICE: Job(ALICE), BOB: Job(BOB)}
    jobs[:] = call.values()
    await asyncio.gather(*(run_entrypoint(agent, job) for job in call.values()))
    outputs: dict[str, list[str]] = {ALICE: [], BOB: []}

    async def ask_out_loud(job: Job) -> None:
        reply = await spoken(job, QUESTION)
        assert reply.text_content == f"reply: {QUESTION}"

    def typing_to_a_tool(text: str) -> Turn:
        async def turn(job: Job) -> None:
            result = await typed(job, text)
            outputs[job.identity].extend(tool_outputs(result))

        return turn

    finished = await calls_at_once(
        call,
        {
            ALICE: [
                ask_out_loud,
                typing_to_a_tool(WHAT_DO_YOU_KNOW),
                typing_to_a_tool(f"{REMEMBER_PREFIX}my dog's name is Biscuit"),
            ],
            BOB: [
                ask_out_loud,
                typing_to_a_tool(f"{FORGET_PREFIX}my favourite colour"),
                typing_to_a_tool(WHAT_DO_YOU_KNOW),
            ],
        },
    )
    assert sorted(finished) == sorted([ALICE] * 3 + [BOB] * 3)
    for job in call.values():
        await hang_up(job)
    await spool_settled(agent.memory)

    # (2) recall: the spoken question's request holds the caller's own answer, once, in a
    # memory block (what the session started knowing, which per-turn recall does not repeat,
    # or recall's), and nothing of the other caller reached anything this caller's model was
    # sent
    for identity, mine in ((ALICE, "teal"), (BOB, "orange")):
        [asked] = requests_answering(call[identity].llm, QUESTION)
        memory_blocks = [t for t in chat_texts(asked) if t.startswith(f"{BLOCK_START}\n")]
        holding = [b for b in memory_blocks if f'favorite_color: "{mine}"' in b]
        assert len(holding) == 1, f"{identity}: the answer is not in the question's request once"
        assert "\n".join(chat_texts(asked)).count(f'"{mine}"') == 1
        other = BOB if identity == ALICE else ALICE
        sent = everything_sent(call[identity].llm)
        assert not [w for w in OWN_WORDS[other] if w in sent], identity

    # (3) the tools, called by the model through the session, act for that session's caller
    known, remembered = outputs[ALICE]
    assert '"Marisol"' in known and '"teal"' in known
    assert not [w for w in OWN_WORDS[BOB] if w in known]
    assert "Saved" in remembered
    forgotten, bob_known = outputs[BOB]
    assert forgotten.startswith("Forgotten: ") and "favorite_color (orange)" in forgotten
    assert '"Thaddeus"' in bob_known and "orange" not in bob_known
    assert not [w for w in OWN_WORDS[ALICE] if w in bob_known]

    # (4) in the store, after both calls: Bob's colour is gone, in his own words too, and
    # nothing of Alice's went; Alice's dog is hers alone
    _, alice_facts = stored(database, ALICE)
    assert alice_facts[("PREFERENCE", "favorite_color")] == "teal"
    assert alice_facts[("RELATIONSHIP", "dog_name")] == "Biscuit"
    bob_said, bob_facts = stored(database, BOB)
    assert ("PREFERENCE", "favorite_color") not in bob_facts
    assert bob_facts[("PRESENTATION", "name")] == "Thaddeus"
    assert not [u for u in bob_said if "orange" in u]
    assert "Biscuit" not in "\n".join([*bob_said, *bob_facts.values()])
