"""Raw identities (and what callers say) stay out of log lines above DEBUG, livekit-agents'
own lines included.

livekit-agents 1.8.9 logs the participant's identity at INFO when its room I/O links to the
caller ("RoomIO linked to participant"). The test drives that real code (`RoomIO` on an
unconnected `rtc.Room`), formats the records with livekit-agents' own JSON formatter (what
`agent.py start` prints), first without the worker's logging setup (the identity is there:
the test sees the leak) and then after the worker's per-process setup (`agent.prewarm`).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.cli.log import JsonFormatter
from livekit.agents.voice.room_io import RoomIO

from caller_memory.identity import livekit_identity_to_uuid
from caller_memory.voice import log_privacy

IDENTITY = "caller.private@example.com"
LIVEKIT_LOGGER = logging.getLogger("livekit.agents")


class JsonLines:
    """livekit-agents' JSON log format into a buffer, every record at DEBUG and above."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(JsonFormatter())

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines() if line]


@pytest.fixture
def json_lines() -> Iterator[JsonLines]:
    sink = JsonLines()
    loggers = [logging.getLogger(name) for name in log_privacy.LIVEKIT_LOGGERS]
    saved = [(logger, logger.level, list(logger.filters)) for logger in loggers]
    for logger in loggers:
        logger.filters.clear()  # start from livekit-agents' own behaviour
    LIVEKIT_LOGGER.setLevel(logging.DEBUG)
    LIVEKIT_LOGGER.addHandler(sink.handler)
    try:
        yield sink
    finally:
        LIVEKIT_LOGGER.removeHandler(sink.handler)
        for logger, level, filters in saved:
            logger.setLevel(level)
            logger.filters[:] = filters


def _link_room_io_to(identity: str) -> None:
    RoomIO(AgentSession(), rtc.Room()).set_participant(identity)


def _linked_lines(sink: JsonLines) -> list[dict[str, object]]:
    return [line for line in sink.lines() if line.get("message") == "RoomIO linked to participant"]


async def test_livekits_own_info_line_carries_the_raw_identity_without_the_worker_setup(
    json_lines: JsonLines,
) -> None:
    _link_room_io_to(IDENTITY)
    [line] = _linked_lines(json_lines)
    assert line["level"] == "INFO"
    assert line["lk.pii.participant_identity"] == IDENTITY  # the leak this file is about


async def test_after_the_worker_setup_no_line_above_debug_holds_the_identity(
    json_lines: JsonLines,
) -> None:
    import agent

    process = SimpleNamespace(userdata={})
    agent.prewarm(process)  # what every job process runs first
    await process.userdata["memory"].aclose()  # the memory it built is not needed here
    _link_room_io_to(IDENTITY)
    LIVEKIT_LOGGER.debug("a debug line keeps it", extra={"participant": IDENTITY})

    [line] = _linked_lines(json_lines)
    assert line["level"] == "INFO"
    assert line["lk.pii.participant_identity"] == f"user {livekit_identity_to_uuid(IDENTITY)}"
    loud = [text for text in json_lines.buffer.getvalue().splitlines() if '"DEBUG"' not in text]
    assert loud and all(IDENTITY not in text for text in loud), loud
    [debug] = [x for x in json_lines.lines() if x.get("message") == "a debug line keeps it"]
    assert debug["participant"] == IDENTITY  # DEBUG still has it, as README says


@pytest.mark.parametrize(
    ("level", "message", "extra"),
    [
        # the other lines of livekit-agents 1.8.9 that carry an identity or caller data
        (
            logging.INFO,
            "closing agent session due to participant disconnect "
            "(disable via `RoomInputOptions.close_on_disconnect=False`)",
            {"room": "r", "participant": IDENTITY, "reason": "CLIENT_INITIATED"},
        ),
        (
            logging.WARNING,
            "pre-connect audio received but no trackId",
            {"participant": IDENTITY},
        ),
        (
            logging.WARNING,
            "skipping user input, speech scheduling is paused",
            {"lk.pii.user_input": f"my e-mail is {IDENTITY}"},
        ),
    ],
)
def test_every_identity_and_pii_field_is_redacted_above_debug(
    json_lines: JsonLines, level: int, message: str, extra: dict[str, str]
) -> None:
    log_privacy.install_identity_redaction()
    log_privacy.install_identity_redaction()  # idempotent
    assert (
        sum(isinstance(f, log_privacy.IdentityRedactionFilter) for f in LIVEKIT_LOGGER.filters) == 1
    )
    LIVEKIT_LOGGER.log(level, message, extra=extra)
    [line] = json_lines.lines()
    assert line["message"] == message and line["level"] == logging.getLevelName(level)
    assert IDENTITY not in json_lines.buffer.getvalue()
    if "participant" in extra:
        assert line["participant"] == f"user {livekit_identity_to_uuid(IDENTITY)}"
    else:
        assert line["lk.pii.user_input"] == log_privacy.REDACTED
