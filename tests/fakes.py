"""Test fakes for what cannot run here: the LLM. Small, honest, named as fakes.

`FakeScriptedLLM` streams a reply that quotes the caller's last message, and records every
chat context it was asked to complete, so tests can check what the agent sent to the model.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr


class FakeScriptedLLM(llm.LLM):
    """An `llm.LLM` that answers `reply: <last user text>` (or `greeting` with no user text)."""

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.requests: list[llm.ChatContext] = []

    @property
    def model(self) -> str:
        return "fake-scripted"

    @property
    def provider(self) -> str:
        return "fake"

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
        return _FakeStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    @staticmethod
    def reply_for(chat_ctx: llm.ChatContext) -> str:
        for item in reversed(chat_ctx.items):
            if isinstance(item, llm.ChatMessage) and item.role == "user":
                return f"reply: {item.text_content}"
        return "greeting"


class _FakeStream(llm.LLMStream):
    async def _run(self) -> None:
        llm_ = self._llm
        assert isinstance(llm_, FakeScriptedLLM)
        if llm_.delay:
            await asyncio.sleep(llm_.delay)
        text = FakeScriptedLLM.reply_for(self._chat_ctx)
        for i, word in enumerate(text.split(" ")):
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id="fake",
                    delta=llm.ChoiceDelta(role="assistant", content=word if i == 0 else " " + word),
                )
            )


def user_texts(chat_ctx: llm.ChatContext) -> list[str]:
    return [
        item.text_content or ""
        for item in chat_ctx.items
        if isinstance(item, llm.ChatMessage) and item.role == "user"
    ]
