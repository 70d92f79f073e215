"""The caller's control over their memory, by voice: four tools any agent can carry.

Each tool finds the caller through the session it runs in (`caller_of`), so one definition
serves every agent and every session: `MemoryAgent` carries them, and an agent that does not
use it takes `CallerSession.tools`. They raise `ToolError` with what the model should tell
the caller when they cannot do what was asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from livekit.agents import RunContext, ToolError, function_tool, llm

from caller_memory.voice.registry import caller_of

if TYPE_CHECKING:
    from caller_memory.voice.caller import CallerSession

NOT_ATTACHED = (
    "Memory is not available in this conversation. Tell the caller you cannot do that here."
)


def _caller(context: RunContext) -> CallerSession:
    caller = caller_of(context.session)
    if caller is None:
        raise ToolError(NOT_ATTACHED)
    return caller


@function_tool
async def remember_this(context: RunContext, fact: str) -> str:
    """Remember something because the caller explicitly asked you to.

    Args:
        fact: What to remember, in the caller's words, e.g. "my sister's name is Ana".
    """
    return await _caller(context).remember(fact)


@function_tool
async def what_do_you_know_about_me(context: RunContext) -> str:
    """Read back what you remember about the caller, when they ask what you know."""
    return await _caller(context).read_back()


@function_tool
async def forget_memory(context: RunContext, what: str) -> str:
    """Forget one thing the caller asked you to forget.

    Args:
        what: The memory's key from what_do_you_know_about_me (e.g. "favorite_color"),
            or a few words describing it (e.g. "my favourite colour").
    """
    return await _caller(context).forget(what)


@function_tool
async def forget_everything_about_me(context: RunContext, confirmed: bool) -> str:
    """Delete the caller's profile and every memory, only after they confirm out loud.

    Args:
        confirmed: True only when the caller has just confirmed out loud, after you asked
            them, that everything about them should be deleted.
    """
    return await _caller(context).forget_everything(confirmed)


MEMORY_TOOLS: tuple[llm.FunctionTool, ...] = (
    remember_this,
    what_do_you_know_about_me,
    forget_memory,
    forget_everything_about_me,
)
