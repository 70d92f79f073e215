"""Smoke test of the retrieval benchmark (bench/) on a tiny dataset."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.retrieval_benchmark import BM25, PROJECT, main, run_benchmark
from bench.retrieval_dataset import generate_dataset

TINY = ["--users", "2", "--seed", "11", "--min-utterances", "40", "--max-utterances", "60"]
ROW = re.compile(r"^\| (Project|Plain BM25) [^|]*\| ([0-9.]+) \| ([0-9.]+) \| [0-9.]+ ms \|$")


def test_dataset_is_deterministic_and_labelled() -> None:
    a = generate_dataset(2, 11, utterances=(40, 60))
    b = generate_dataset(2, 11, utterances=(40, 60))
    assert a == b
    assert a != generate_dataset(2, 12, utterances=(40, 60))
    for user in a.users:
        assert len(set(user.utterances)) == len(user.utterances)
        assert user.questions
        for q in user.questions:
            assert q.evidence
            assert all(user.roles[i] == "evidence" for i in q.evidence)


def test_main_prints_both_methods_with_recalls_in_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(TINY) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): m for line in out.splitlines() if (m := ROW.match(line))}
    assert set(rows) == {"Project", "Plain BM25"}, out
    for m in rows.values():
        assert 0.0 <= float(m.group(2)) <= float(m.group(3)) <= 1.0
    assert "### By fact type" in out
    assert "2 users" in out


async def test_project_search_finds_some_evidence(tmp_path: Path) -> None:
    dataset = generate_dataset(2, 11, utterances=(40, 60))
    result = await run_benchmark(dataset, db_dir=tmp_path)
    assert len(result.questions) == dataset.n_questions > 0
    assert any(q.rank[PROJECT] is not None for q in result.questions)
    assert any(q.rank[BM25] is not None for q in result.questions)
    for method in (PROJECT, BM25):
        assert 0.0 <= result.recall(method, 5) <= result.recall(method, 10) <= 1.0
