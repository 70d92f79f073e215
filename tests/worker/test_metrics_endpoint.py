"""The metrics endpoint of a running worker serves memory's metrics, from its job processes too.

A worker process is started the way a deployment runs one with `prometheus_port` and
`PROMETHEUS_MULTIPROC_DIR`: it runs a job process (a child process, spawned as LiveKit spawns
them) that does real memory work on a real SQLite store and exits, then serves LiveKit's own
metrics endpoint (`livekit.agents.telemetry.http_server.HttpServer`, what `AgentServer` starts
for `prometheus_port`). The test fetches `/metrics` over HTTP: the parent never did any memory
work, so every `caller_memory_` value it serves was collected from the child's files.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from tests.support import subprocess_env

WORKER = textwrap.dedent(
    """
    import asyncio
    import multiprocessing
    import sys
    from pathlib import Path

    HERE = Path(sys.argv[1])


    def job() -> None:
        # a job process: two facts written, one recall that finds one, one that finds nothing
        from caller_memory import session_user
        from caller_memory.recall.recall import recall
        from caller_memory.testing import sqlite_memory

        async def work() -> None:
            memory = sqlite_memory(HERE / "job", embeddings="off")
            with session_user("metrics-caller@example.com"):
                await memory.manager.astore("FACT", "job", "nurse")
                await memory.manager.astore("FACT", "home_town", "Leeds")
                for said in ("Do you remember my job?", "What about xylophones?"):
                    await recall(
                        said, manager=memory.manager, budget_s=5.0, outage=memory.outage
                    )
            await memory.aclose()

        asyncio.run(work())


    async def serve() -> None:
        from livekit.agents.telemetry.http_server import HttpServer

        server = HttpServer("127.0.0.1", 0)
        await server.start()
        print(server.port, flush=True)
        await asyncio.sleep(600)  # until the test has what it wants and kills it


    if __name__ == "__main__":
        child = multiprocessing.get_context("spawn").Process(target=job)
        child.start()
        child.join()
        if child.exitcode != 0:
            sys.exit(f"the job process failed ({child.exitcode})")
        asyncio.run(serve())
    """
)


def test_the_workers_metrics_endpoint_serves_what_its_job_process_counted(tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        env=subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.strip().isdigit(), worker.stderr.read() if worker.stderr else line
        url = f"http://127.0.0.1:{int(line)}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read().decode()
    finally:
        worker.kill()
        worker.wait(timeout=30)

    ours = [x for x in body.splitlines() if "caller_memory_" in x]
    values = {
        m.group(1): float(m.group(2))
        for x in ours
        if (m := re.fullmatch(r"(caller_memory_\S+) (\S+)", x))
    }
    assert values['caller_memory_writes_total{result="stored"}'] == 2
    assert values['caller_memory_recalls_total{outcome="hit"}'] == 1
    assert values['caller_memory_recalls_total{outcome="empty"}'] == 1
    assert values["caller_memory_recall_duration_seconds_count"] == 2
    assert values['caller_memory_writes_total{result="spooled"}'] == 0
    # every instrument is described on the endpoint, as LiveKit's own are
    for name in (
        "caller_memory_recall_duration_seconds histogram",
        "caller_memory_recalls_total counter",
        "caller_memory_memories_injected histogram",
        "caller_memory_capture_queue_depth gauge",
        "caller_memory_capture_dropped_total counter",
        "caller_memory_writes_total counter",
        "caller_memory_spool_records gauge",
        "caller_memory_spool_bytes gauge",
        "caller_memory_erasures_total counter",
        "caller_memory_extraction_requests_total counter",
        "caller_memory_extraction_tokens_total counter",
        "caller_memory_embedding_duration_seconds histogram",
    ):
        metric, kind = name.split()
        assert f"# TYPE {metric.removesuffix('_total')} {kind}" in body or (
            f"# TYPE {metric} {kind}" in body
        ), name
    # no identity, uuid or memory text in any label
    for secret in ("metrics-caller", "nurse", "Leeds", "xylophones"):
        assert secret not in body


def test_the_reference_worker_serves_the_endpoint_on_prometheus_port(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    """`PROMETHEUS_PORT` in the worker's settings: `python agent.py start` serves LiveKit's
    endpoint with every memory instrument on it, and gives its job processes the default
    multiprocess directory (here LiveKit itself cannot be reached: the endpoint is up while
    the worker retries)."""
    agent_py = Path(__file__).resolve().parents[2] / "agent.py"
    worker = subprocess.Popen(
        [sys.executable, str(agent_py), "start"],
        env=subprocess_env(
            LIVEKIT_URL="ws://127.0.0.1:9",
            LIVEKIT_API_KEY="test-key",
            LIVEKIT_API_SECRET="test-secret-that-is-long-enough-for-hs256-xx",
            OPENAI_API_KEY="test-openai-key",
            MEMORY_EMBEDDINGS="off",
            PROMETHEUS_PORT=str(unused_tcp_port),
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
    body = ""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = response.read().decode()
            except OSError:
                pass
            # multiprocess mode serves what the processes' files hold: empty until they exist
            if "caller_memory_" in body:
                break
            time.sleep(0.5)
    finally:
        worker.kill()
        said, _ = worker.communicate(timeout=30)
    assert body, f"no metrics endpoint on {url} (exit {worker.returncode}):\n{said[-3000:]}"
    for metric in (
        "caller_memory_recall_duration_seconds",
        "caller_memory_recalls_total",
        "caller_memory_writes_total",
        "caller_memory_capture_queue_depth",
        "caller_memory_spool_records",
        "caller_memory_embedding_duration_seconds",
    ):
        assert f"# TYPE {metric} " in body, metric
    assert 'caller_memory_writes_total{result="stored"} 0.0' in body
    assert (tmp_path / "data" / "prometheus").is_dir()
