"""`agent.py console --text`: show what the agent says on its own, e.g. its greeting.

livekit-agents' text console prints only the results of the runs it starts itself, one per
line the user types (`session.run(user_input=...)`). What the agent says outside such a run
is never shown there: above all the greeting (`CompanionAgent.on_enter`), which then counts
as delivered (a first-time caller's welcome is used up) while the person at the terminal saw
nothing. `show_agent_replies_outside_runs` prints those messages the way the console prints
a run's reply ("● Agent", then the text), and does nothing outside the console's text mode.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentSession, ConversationItemAddedEvent, llm
from livekit.agents.cli.cli import AgentsConsole
from rich.text import Text


def _run_in_progress(session: AgentSession[Any]) -> bool:
    # The console's own run (livekit-agents keeps the current one here, 1.8.x); its reply is
    # printed by the console when the run completes.
    run = getattr(session, "_global_run_state", None)
    return run is not None and not run.done()


def show_agent_replies_outside_runs(session: AgentSession[Any]) -> None:
    """In the console's text mode, print every agent message that no console run prints."""
    console = AgentsConsole.get_instance()
    if not console.enabled:
        return

    def on_item_added(event: ConversationItemAddedEvent) -> None:
        item = event.item
        terminal = getattr(console, "console", None)  # the text console's rich Console
        if (
            terminal is None
            or console.console_mode != "text"
            or not isinstance(item, llm.ChatMessage)
            or item.role != "assistant"
            or not item.text_content
            or _run_in_progress(session)
        ):
            return
        terminal.print()
        terminal.print(Text.assemble(("  \u25cf ", "#6BCB77"), ("Agent", "bold #6BCB77")))
        for line in item.text_content.split("\n"):
            terminal.print(Text(f"    {line}"))

    session.on("conversation_item_added", on_item_added)
