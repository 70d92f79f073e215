"""What the worker's logs may hold: raw identities and caller data only at DEBUG.

Our own log lines follow that rule by construction (the uuid at INFO, the identity at DEBUG).
livekit-agents 1.8.9 does not: its room I/O logs the caller's raw LiveKit identity at INFO
("RoomIO linked to participant", key `lk.pii.participant_identity`; "closing agent session due
to participant disconnect", key `participant`) and at WARNING (pre-connect audio and noise
cancellation warnings, key `participant`), and the caller's words at WARNING when it skips a
turn (`lk.pii.user_input`). It puts them in the record's extra fields, which its log handlers
print (and ship to LiveKit Cloud, which strips only `lk.pii.*`).

`IdentityRedactionFilter`, installed on the `livekit` loggers by `install_identity_redaction()`
in every process that runs jobs (the worker's `setup_fnc` runs in each job process, and in
the console's job thread), rewrites those fields of records above DEBUG: an identity becomes
the caller's uuid (what our own INFO lines show, so the lines still correlate), any other
`lk.pii.*` value becomes a placeholder. DEBUG records keep them, as README says. A logger
filter runs where the record is created, so records that job processes forward to the main
process are already redacted when they leave.

`ConsoleNoiseFilter` (installed by `agent.py console`) demotes to DEBUG three framework
warnings that every console start prints and that say nothing about this worker: no warmed
process yet (the console starts its one job at once), and the LiveKit-hosted turn detector and
interruption detector being unavailable without LiveKit credentials (the console has none by
design; both fall back to local models).
"""

from __future__ import annotations

import logging

from caller_memory.identity import livekit_identity_to_uuid

LIVEKIT_LOGGERS = ("livekit", "livekit.agents")
DEFAULT_LOG_LEVEL = "INFO"

# Extra fields livekit-agents fills with a participant's identity.
IDENTITY_FIELDS = frozenset(
    {
        "participant",
        "participant_identity",
        "identity",
        "caller_identity",
        "expected_identity",
        "lk.pii.participant_identity",
    }
)
PII_PREFIX = "lk.pii."
REDACTED = "<redacted: logged at DEBUG only>"

# Message templates (`record.msg`) of the console's irrelevant start-up warnings.
CONSOLE_NOISE = (
    "no warmed process available for job, waiting for one to be created",
    "LIVEKIT_INFERENCE_URL is set but %s missing; falling back to the turn-detector-v1-mini model",
    "failed to create AdaptiveInterruptionDetector",
)


def _as_user_uuid(value: object) -> str:
    try:
        return f"user {livekit_identity_to_uuid(value)}" if isinstance(value, str) else REDACTED
    except ValueError:  # not a usable identity (or a malformed IDENTITY_NAMESPACE)
        return REDACTED


class IdentityRedactionFilter(logging.Filter):
    """Above DEBUG: identities in extra fields become uuids, other `lk.pii.*` values a
    placeholder. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True
        fields = record.__dict__
        for name in [n for n in fields if n in IDENTITY_FIELDS or n.startswith(PII_PREFIX)]:
            value = fields[name]
            if value is None:
                continue
            fields[name] = _as_user_uuid(value) if name in IDENTITY_FIELDS else REDACTED
        return True


class ConsoleNoiseFilter(logging.Filter):
    """Demotes `CONSOLE_NOISE` warnings to DEBUG (shown only with `--log-level debug`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or record.msg not in CONSOLE_NOISE:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _install(filter_type: type[logging.Filter]) -> None:
    for name in LIVEKIT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, filter_type) for f in logger.filters):
            logger.addFilter(filter_type())


def install_identity_redaction() -> None:
    """Install `IdentityRedactionFilter` on the livekit loggers of this process (idempotent)."""
    _install(IdentityRedactionFilter)


def install_console_noise_filter() -> None:
    """Install `ConsoleNoiseFilter` on the livekit loggers of this process (idempotent)."""
    _install(ConsoleNoiseFilter)
