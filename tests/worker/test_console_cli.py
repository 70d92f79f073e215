"""The real command line: `python agent.py console --text`, `start`, and `import agent`.

These tests run `agent.py` as a separate process, exactly as a developer would, with no
network and no keys: the OpenAI models point at `tests/openai_stub.py` (a fake server on
127.0.0.1), memories go to a throwaway SQLite file, and no `LIVEKIT_*` variable is set.

The console test drives the CLI in a pseudo-terminal, because `console --text` reads keys
with its own `readkey` (termios on stdin) and draws with rich. It types like a person: one key
at a time, each one checked on screen before the next. That matters: before every key the
CLI's `readkey` turns canonical mode off with `TCSAFLUSH`, which throws away whatever was typed
ahead, so a key sent a moment too early is lost. The test therefore sends each key only once
the terminal is in that non-canonical state (the flush is then behind it), which makes typing
deterministic instead of timing-dependent. Console mode also imports `sounddevice` even in
text mode, which needs the PortAudio library (Debian: `libportaudio2`).

Each process runs in a fresh temporary working directory (the script is given by its absolute
path), so a developer's `.env` / `.env.local` cannot add keys, a database or a real
`OPENAI_BASE_URL` to the run.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from caller_memory.voice.greeting import FIRST_CALL_GREETING
from tests.openai_stub import GREETING_REPLY, OpenAIStub, message_text

PROJECT_DIR = Path(__file__).resolve().parents[2]
AGENT_SCRIPT = PROJECT_DIR / "agent.py"

CONSOLE_IDENTITY = "console-tester@example.com"
FIRST_MESSAGE = "my favorite color is teal"
SECOND_MESSAGE = "I plan to visit Lisbon next spring"

# Generous but bounded: the worker start loads the VAD and the job runner (~3 s on an idle
# 2-core machine, far more on a busy CI runner).
STARTUP_TIMEOUT_S = 120.0
GREETING_TIMEOUT_S = 60.0
KEY_ECHO_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 120.0

# Variables that would point the child at real services or another store.
_SCRUBBED_PREFIXES = ("LIVEKIT_", "OPENAI_", "SUPABASE_")
_SCRUBBED_NAMES = {
    "DATABASE_URL",
    "MEMORY_SQLITE_PATH",
    "MEMORY_ALLOW_DEFAULT_USER",
    "IDENTITY_NAMESPACE",
    "CONSOLE_USER_IDENTITY",
}

# CSI (colours, cursor moves), OSC (titles, links) and two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def _clean_env(**overrides: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_PREFIXES) and name not in _SCRUBBED_NAMES
    }
    # Set but empty: load_dotenv (without override) leaves them alone.
    env.update(SUPABASE_URL="", DATABASE_URL="", PYTHONUNBUFFERED="1", TERM="xterm-256color")
    env.update(overrides)
    return env


def _screen_text(raw: str) -> str:
    return _ANSI.sub("", raw).replace("\r", "")


class TerminalSession:
    """A child process on a pseudo-terminal (its controlling terminal), read continuously.

    Output is drained by a thread all the time: the CLI waits for its output to drain before
    it reads a key, so a terminal nobody reads from would stall it.
    """

    def __init__(
        self, argv: list[str], *, cwd: Path, env: dict[str, str], rows: int = 50, cols: int = 200
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self._master = master
        try:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                # Make the pty the child's controlling terminal, so Ctrl-C is a real SIGINT.
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            )
        finally:
            os.close(slave)
        self._raw: list[str] = []
        self._length = 0
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, name="pty-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO once the child side is closed
                chunk = b""
            text = decoder.decode(chunk, final=not chunk)
            with self._changed:
                if text:
                    self._raw.append(text)
                    self._length += len(text)
                self._changed.notify_all()
            if not chunk:
                return

    def mark(self) -> int:
        """A position in the output; `wait_for(..., since=mark)` looks only at what follows."""
        with self._changed:
            return self._length

    def screen(self, since: int = 0) -> str:
        with self._changed:
            raw = "".join(self._raw)
        return _screen_text(raw[since:])

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float, since: int = 0) -> bool:
        """Wait until `pattern` (text or regex) appears in the output after `since`."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            if regex.search(self.screen(since)):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (not self._reader.is_alive() and self.process.poll() is not None):
                return bool(regex.search(self.screen(since)))
            with self._changed:
                self._changed.wait(min(remaining, 0.2))

    def send(self, data: str) -> None:
        os.write(self._master, data.encode())

    def wait_until_reading_a_key(self, timeout: float) -> bool:
        """Wait until the child has turned canonical mode off, i.e. its `readkey` is reading.

        The master side of a pty shares the terminal settings of the child's side. `readkey`
        flushes pending input when it turns canonical mode off, and turns it back on after
        each key, so a key sent while canonical mode is off is never thrown away.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                lflag = termios.tcgetattr(self._master)[3]
            except termios.error:
                return False
            if not lflag & termios.ICANON:
                return True
            if time.monotonic() >= deadline or self.process.poll() is not None:
                return False
            time.sleep(0.01)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Kill the child's whole process group if it is still running; release the pty."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._reader.join(5)
        with contextlib.suppress(OSError):
            os.close(self._master)


def _readable(screen: str, chars: int = 8000) -> str:
    """The end of the output, without the prompt's redraws (rich repaints it 30 times a second)."""
    lines: list[str] = []
    for line in screen.splitlines():
        line = line.rstrip()
        if line and line not in lines[-8:]:
            lines.append(line)
    return "\n".join(lines)[-chars:]


def _tail(terminal: TerminalSession) -> str:
    return _readable(terminal.screen())


def _fail(terminal: TerminalSession, what: str) -> None:
    pytest.fail(
        f"{what}\n--- the last of the terminal output ---\n{_tail(terminal)}\n--- end ---",
        pytrace=False,
    )


def _type_line(terminal: TerminalSession, text: str) -> None:
    """Type `text` key by key, each once the CLI reads keys and shows the last one; then Enter.

    Each key is checked on screen ("❯ typed-so-far█") before the next one is sent, so the
    CLI has finished with the previous key (and restored the terminal) by then.
    """
    for i, key in enumerate([*text, "\r"]):
        if not terminal.wait_until_reading_a_key(KEY_ECHO_TIMEOUT_S):
            _fail(terminal, f"the console was not reading keys while typing {text!r}")
        mark = terminal.mark()
        # Enter is "\r" from the keyboard; the terminal turns it into the "\n" the CLI reads.
        terminal.send(key)
        if key == "\r":
            expected: str | re.Pattern[str] = _shown_under("You", text)
        else:
            expected = f"\u276f {text[: i + 1]}\u2588"  # the prompt line: "❯ typed-so-far█"
        if not terminal.wait_for(expected, KEY_ECHO_TIMEOUT_S, since=mark):
            _fail(terminal, f"the console never showed {expected!r} while typing {text!r}")


def _shown_under(speaker: str, text: str) -> re.Pattern[str]:
    """`text` on a line of its own below "● <speaker>".

    The worker's log lines are printed to the same terminal and may land in between.
    """
    return re.compile(
        r"\u25cf\s*" + speaker + r"\s[\s\S]*?^\s*" + re.escape(text) + r"\s*$", re.MULTILINE
    )


def _agent_said(text: str) -> re.Pattern[str]:
    return _shown_under("Agent", text)


def _agent_said_while_prompting(text: str) -> re.Pattern[str]:
    """`text` below "● Agent", printed while the prompt is on screen (the greeting): rich
    moves the cursor to print above its live prompt, and once those moves are stripped a
    line may begin with leftovers of the prompt."""
    return re.compile(r"\u25cf\s*Agent\s[\s\S]*?(?:^|\s)" + re.escape(text) + r"\s*$", re.MULTILINE)


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


def _require_portaudio() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import sounddevice"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if probe.returncode != 0:
        pytest.fail(
            "`agent.py console` imports sounddevice, which needs the PortAudio library "
            "(Debian: apt-get install libportaudio2):\n" + probe.stderr[-2000:],
            pytrace=False,
        )


def _converse(terminal: TerminalSession, stub: OpenAIStub, messages: tuple[str, ...]) -> int:
    """Wait for the prompt and the greeting (shown on screen), type each message and wait for
    the stub's reply to it, then quit with Ctrl-C; returns the exit code."""
    if not terminal.wait_for("Type to talk to your agent", STARTUP_TIMEOUT_S):
        _fail(terminal, f"no console prompt within {STARTUP_TIMEOUT_S:.0f}s")

    # The agent greets first (on_enter -> generate_reply): one LLM call before any input, and
    # the person at the terminal sees it (before they type: the first login is then done).
    if not stub.wait_for_chat_requests(1, GREETING_TIMEOUT_S):
        _fail(terminal, "the agent never asked the LLM for its greeting")
    if not terminal.wait_for(_agent_said_while_prompting(GREETING_REPLY), GREETING_TIMEOUT_S):
        _fail(terminal, "the agent's greeting was never shown")

    for message in messages:
        mark = terminal.mark()
        _type_line(terminal, message)
        if not terminal.wait_for(_agent_said(f"STUB-REPLY({message})"), REPLY_TIMEOUT_S, mark):
            _fail(terminal, f"the stub's reply to {message!r} never appeared")
        prompt_mark = terminal.mark()
        if not terminal.wait_for("Type to talk to your agent", REPLY_TIMEOUT_S, prompt_mark):
            _fail(terminal, "the console did not offer the prompt again")

    terminal.send("\x03")  # Ctrl-C: a SIGINT from the terminal, as a person would quit
    exit_code = terminal.wait_exit(EXIT_TIMEOUT_S)
    if exit_code is None:
        _fail(terminal, f"`agent.py console` did not exit within {EXIT_TIMEOUT_S:.0f}s")
    assert exit_code is not None
    return exit_code


# Framework warnings every console start printed, about nothing this worker does wrong.
CONSOLE_NOISE = (
    "no warmed process available",
    "LIVEKIT_INFERENCE_URL is set but",
    "failed to create AdaptiveInterruptionDetector",
)
_LOG_LINE = re.compile(
    r"^\s*(?:\d\d:\d\d:\d\d\.\d+\s+)?(DEBUG|INFO|WARNING|ERROR)\s.*$", re.MULTILINE
)
# livekit-agents' loop monitor warns when a busy machine delays the event loop by 100 ms; it
# says how loaded the test machine was, not what the worker logs.
_LOOP_STALL = "event loop blocked for"


def _assert_quiet_logs(screen: str, *private: str) -> None:
    """At the default level: INFO log lines, no DEBUG, no warning; nothing private on screen
    but what the person typed (the raw identity and the caller's words in log records)."""
    lines = [(m.group(1), m.group(0)) for m in _LOG_LINE.finditer(screen)]
    assert any(level == "INFO" for level, _ in lines), _readable(screen)  # sees log lines
    loud = [line for level, line in lines if level != "INFO" and _LOOP_STALL not in line]
    assert loud == [], "\n".join(loud)
    for noise in CONSOLE_NOISE:
        assert noise not in screen, _readable(screen)
    assert "lk.pii" not in screen, _readable(screen)
    for text in private:
        assert text not in screen, (text, _readable(screen))


@pytest.mark.slow
def test_console_text_mode_talks_to_the_llm_and_stores_both_messages_for_the_console_user(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    _require_portaudio()
    db_path = tmp_path / "console-memories.sqlite3"
    env = _clean_env(
        OPENAI_API_KEY="sk-test-fake",
        OPENAI_BASE_URL=stub.base_url,
        MEMORY_SQLITE_PATH=str(db_path),
        CONSOLE_USER_IDENTITY=CONSOLE_IDENTITY,
    )
    started = time.monotonic()
    terminal = TerminalSession(
        [sys.executable, str(AGENT_SCRIPT), "console", "--text"], cwd=tmp_path, env=env
    )
    try:
        exit_code = _converse(terminal, stub, (FIRST_MESSAGE, SECOND_MESSAGE))
        elapsed = time.monotonic() - started
    finally:
        terminal.close()

    screen = terminal.screen()
    assert exit_code == 0, f"exit code {exit_code}\n{_readable(screen)}"
    assert "Traceback" not in screen, _readable(screen)
    _assert_quiet_logs(screen, CONSOLE_IDENTITY)
    print(f"console session took {elapsed:.1f}s")  # -s / -rP

    # What the worker asked the model: the greeting first, then one call per message.
    chats = stub.chat_requests()
    greeting_messages = chats[0].body["messages"]
    assert not [m for m in greeting_messages if m.get("role") == "user"], greeting_messages
    assert any(FIRST_CALL_GREETING in message_text(m) for m in greeting_messages), greeting_messages
    replies_asked = [
        [message_text(m) for m in chat.body["messages"] if m.get("role") == "user"][-1:]
        for chat in chats[1:]
    ]
    assert replies_asked == [[FIRST_MESSAGE], [SECOND_MESSAGE]], replies_asked
    # Text mode neither listens nor speaks.
    assert not [r.path for r in stub.requests if "/audio/" in r.path]

    # Both messages were stored for the console caller, and for no one else.
    expected_user = str(uuid.uuid5(uuid.NAMESPACE_DNS, CONSOLE_IDENTITY))
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        memories = db.execute("SELECT user_id, value FROM memories").fetchall()
        profiles = db.execute("SELECT id, original_identity FROM profiles").fetchall()
    assert {user for user, _ in memories} == {expected_user}, memories
    # Each message is kept as said (capture may derive further memories from it, e.g. a fact).
    stored_values = {value for _, value in memories}
    assert {FIRST_MESSAGE, SECOND_MESSAGE} <= stored_values, memories
    assert profiles == [(expected_user, CONSOLE_IDENTITY)], profiles


@pytest.mark.slow
def test_the_quickstart_as_readme_tells_it_gets_a_reply(
    stub: OpenAIStub, tmp_path: Path, e5_model_dir: Path
) -> None:
    """README's quickstart, literally: `.env` copied from `.env.example`, only the key filled
    in, and the model server set the way a user points at one (`OPENAI_BASE_URL` in `.env`;
    here the stub); then `agent.py console --text` from the project directory. Memories go to
    the default file, `data/memories.sqlite3`, as the caller `console-user`. The embedding
    model is where an offline deployment puts it (`MEMORY_EMBEDDING_MODEL_DIR`, set in
    `.env`): `download-files` cannot reach the model hub from here."""
    _require_portaudio()
    project = tmp_path / "project"
    shutil.copytree(
        PROJECT_DIR,
        project,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "data", "__pycache__", ".*_cache", ".hypothesis", ".env", ".env.local"
        ),
    )
    shutil.copyfile(project / ".env.example", project / ".env")  # cp .env.example .env
    dot_env = project / ".env"
    text = dot_env.read_text(encoding="utf-8")
    assert "\nOPENAI_API_KEY=\n" in text and "\nOPENAI_BASE_URL=\n" in text
    text = text.replace("\nOPENAI_API_KEY=\n", "\nOPENAI_API_KEY=sk-quickstart-fake\n")
    text = text.replace("\nOPENAI_BASE_URL=\n", f"\nOPENAI_BASE_URL={stub.base_url}\n")
    assert "\nMEMORY_EMBEDDING_MODEL_DIR=\n" in text
    text = text.replace(
        "\nMEMORY_EMBEDDING_MODEL_DIR=\n", f"\nMEMORY_EMBEDDING_MODEL_DIR={e5_model_dir}\n"
    )
    dot_env.write_text(text, encoding="utf-8")
    env = {k: v for k, v in _clean_env().items() if not k.startswith("MEMORY_")}

    terminal = TerminalSession(
        [sys.executable, "agent.py", "console", "--text"], cwd=project, env=env
    )
    try:
        exit_code = _converse(terminal, stub, (FIRST_MESSAGE,))
    finally:
        terminal.close()

    screen = terminal.screen()
    assert exit_code == 0, f"exit code {exit_code}\n{_readable(screen)}"
    assert "Traceback" not in screen, _readable(screen)
    _assert_quiet_logs(screen, "console-user")
    console_user = str(uuid.uuid5(uuid.NAMESPACE_DNS, "console-user"))
    db_path = project / "data" / "memories.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        memories = db.execute("SELECT user_id, value FROM memories").fetchall()
        profiles = db.execute(
            "SELECT id, original_identity, is_first_login FROM profiles"
        ).fetchall()
    assert (console_user, FIRST_MESSAGE) in memories, memories
    # the greeting was shown, so the first-call welcome is rightly used up
    assert profiles == [(console_user, "console-user", 0)], profiles


def test_a_missing_embedding_model_stops_the_worker_with_what_to_do(tmp_path: Path) -> None:
    """No model where the settings say (`download-files` never ran): the worker stops before
    it takes a call, in one line that says how to get the model or do without, instead of
    a conversation whose memory quietly cannot search by meaning."""
    env = {
        **_clean_env(),
        "OPENAI_API_KEY": "sk-fake",
        "MEMORY_EMBEDDINGS": "local",
        "MEMORY_EMBEDDING_MODEL_DIR": str(tmp_path / "no-model-here"),
        "MEMORY_SQLITE_PATH": str(tmp_path / "memories.sqlite3"),
        "MEMORY_SPOOL_DIR": str(tmp_path / "spool"),
    }
    result = _run_agent(["console", "--text"], tmp_path, env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("agent.py console:")]
    assert str(tmp_path / "no-model-here") in line
    assert "python agent.py download-files" in line and "MEMORY_EMBEDDINGS=off" in line


def test_console_help_needs_no_settings(tmp_path: Path) -> None:
    result = _run_agent(["console", "--help"], tmp_path, _clean_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Usage" in result.stdout and "--text" in result.stdout, output
    assert "OPENAI_API_KEY" not in output and "Traceback" not in output, output


def _run_agent(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(AGENT_SCRIPT), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def test_console_without_openai_key_exits_with_one_message_naming_it(tmp_path: Path) -> None:
    result = _run_agent(["console", "--text"], tmp_path, _clean_env(OPENAI_API_KEY=""))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "OPENAI_API_KEY" in result.stderr, output
    assert "Traceback" not in output, output
    assert len(result.stderr.strip().splitlines()) == 1, output


def test_start_without_livekit_url_exits_with_one_message_naming_it(tmp_path: Path) -> None:
    result = _run_agent(["start"], tmp_path, _clean_env(OPENAI_API_KEY="sk-test-fake"))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "LIVEKIT_URL" in result.stderr, output
    assert "Traceback" not in output, output
    assert len(result.stderr.strip().splitlines()) == 1, output


_IMPORT_PROBE = textwrap.dedent(
    """
    import asyncio, os, sys, threading

    def os_threads():
        return len(os.listdir("/proc/self/task"))

    def sockets():
        fds = os.listdir("/proc/self/fd")
        links = []
        for fd in fds:
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return [link for link in links if link.startswith("socket:")]

    def children():
        found = []
        for task in os.listdir("/proc/self/task"):
            try:
                found += open(f"/proc/self/task/{task}/children").read().split()
            except OSError:
                pass
        return found

    # The dependencies first: numpy's BLAS and onnxruntime start native thread pools when
    # imported. Whatever agent.py itself would start comes on top of this baseline.
    import livekit.agents, livekit.plugins.openai, livekit.plugins.silero  # noqa
    baseline_threads = os_threads()
    baseline_sockets = sockets()

    sys.path.insert(0, sys.argv[1])
    import agent

    import caller_memory.defaults
    problems = []
    if threading.enumerate() != [threading.main_thread()]:
        problems.append(f"python threads: {threading.enumerate()}")
    if os_threads() != baseline_threads:
        problems.append(f"os threads: {baseline_threads} -> {os_threads()}")
    if sockets() != baseline_sockets:
        problems.append(f"sockets: {baseline_sockets} -> {sockets()}")
    if children():
        problems.append(f"child processes: {children()}")
    if caller_memory.defaults._memory is not None:
        problems.append(f"a memory was built: {caller_memory.defaults._memory!r}")
    try:
        asyncio.get_running_loop()
        problems.append("an event loop is running")
    except RuntimeError:
        pass
    if os.listdir("."):
        problems.append(f"files created: {os.listdir('.')}")
    if not callable(agent.main) or agent.server is None:
        problems.append("agent.main / agent.server missing")
    print("PROBLEMS:", problems if problems else "none")
    sys.exit(1 if problems else 0)
    """
)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_importing_agent_with_an_empty_environment_starts_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "empty-cwd"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(PROJECT_DIR)],
        cwd=workdir,
        env={},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PROBLEMS: none" in result.stdout, output
