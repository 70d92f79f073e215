"""Any language, nothing dropped: capture and the search query in any script.

A caller who speaks Urdu, Hindi, Russian, Japanese, Arabic or Spanish has what they say kept
as an utterance, word for word; their questions and small talk are not kept, as in English;
their name is read where the wording is explicit; and a question in their script becomes a
search query that keeps their words whole (a Hindi word keeps its vowel signs).
"""

from __future__ import annotations

import logging
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caller_memory import memory_manager, session_user
from caller_memory.capture.rule_based import extract_memories
from caller_memory.recall.query import build_search_query, content_words
from caller_memory.text import cjk_bigram_text
from caller_memory.types import MemoryCategory, MemoryKind

UTTERANCE_KEY = re.compile(r"^utterance_\d+_[0-9a-f]{8}$")
NAME = (MemoryCategory.PRESENTATION, "name")

# Statements as a caller says them, one per script; none has a rule of its own, so each is
# kept as exactly one utterance (and nothing else).
STATEMENTS = [
    pytest.param("میں لاہور میں رہتا ہوں اور ایک اسکول میں پڑھاتا ہوں۔", id="urdu"),
    pytest.param("मेरी बहन दिल्ली में रहती है और वह डॉक्टर है।", id="hindi"),
    pytest.param("Я живу в Москве и работаю учителем.", id="russian"),
    pytest.param("私は東京に住んでいて、看護師をしています。", id="japanese"),
    pytest.param("أنا أعيش في القاهرة وأعمل مهندسا.", id="arabic"),
    pytest.param("我住在北京，我是老师。", id="chinese"),
    pytest.param("저는 서울에 살고 있어요.", id="korean"),
    pytest.param("Vivo en Madrid y trabajo como enfermera.", id="spanish"),
    pytest.param("Ich wohne seit zwei Jahren in Köln.", id="german"),
    pytest.param("Αγαπώ τη θάλασσα.", id="greek"),
    pytest.param("אני גר בתל אביב.", id="hebrew"),
    pytest.param("ฉันชอบกินข้าวผัด", id="thai"),
]


@pytest.mark.parametrize("text", STATEMENTS)
def test_a_statement_in_any_script_is_kept_word_for_word(text: str) -> None:
    [utterance] = extract_memories(text, now_ms=1)
    assert utterance.kind is MemoryKind.UTTERANCE
    assert UTTERANCE_KEY.match(utterance.key)
    assert utterance.value == text


def test_text_is_kept_in_one_canonical_form() -> None:
    """A decomposed "í" (as some keyboards and transcribers write it) is stored composed, so
    the same word typed either way is one word to the store and the query."""
    decomposed = "Vivo en Mu\u0301nich con mi hermana Lucía"
    [utterance] = extract_memories(decomposed, now_ms=1)
    assert utterance.value == unicodedata.normalize("NFC", decomposed)
    assert "Múnich" in utterance.value
    assert build_search_query("mu\u0301nich") == build_search_query("múnich") == "múnich"


QUESTIONS = [
    pytest.param("میرا پیشہ کیا ہے؟", id="urdu"),
    pytest.param("मेरा पेशा क्या है?", id="hindi"),
    pytest.param("Где я живу?", id="russian"),
    pytest.param("私の仕事は何ですか。", id="japanese-ka"),
    pytest.param("私は東京に住んでいますか", id="japanese-ka-no-stop"),
    pytest.param("私の仕事は何？", id="japanese-fullwidth"),
    pytest.param("أين أعيش؟", id="arabic"),
    pytest.param("你是医生吗", id="chinese-ma"),
    pytest.param("我住在哪里？", id="chinese-fullwidth"),
    pytest.param("¿Dónde vivo?", id="spanish"),
    pytest.param("¿Dónde vivo", id="spanish-opening-only"),
    pytest.param("Hola, ¿cómo me llamo?", id="spanish-greeting-question"),
    pytest.param("Как меня зовут?", id="russian-name-question"),
]


@pytest.mark.parametrize("text", QUESTIONS)
def test_a_question_in_any_script_stores_nothing(text: str) -> None:
    assert extract_memories(text, now_ms=1) == []


SMALL_TALK = [
    pytest.param("नमस्ते", id="hindi-hello"),
    pytest.param("नमस्ते!", id="hindi-hello-bang"),
    pytest.param("ठीक है, धन्यवाद।", id="hindi-ok-thanks"),
    pytest.param("السلام علیکم", id="urdu-salaam"),
    pytest.param("جی، شکریہ۔", id="urdu-yes-thanks"),
    pytest.param("Да, хорошо, спасибо.", id="russian"),
    pytest.param("はい、わかりました。", id="japanese"),
    pytest.param("ありがとうございます", id="japanese-thanks"),
    pytest.param("はいありがとう", id="japanese-unspaced"),
    pytest.param("好的，谢谢！", id="chinese"),
    pytest.param("好的谢谢", id="chinese-unspaced"),
    pytest.param("네, 감사합니다", id="korean"),
    pytest.param("شكرا", id="arabic-thanks"),
    pytest.param("¡Hola!", id="spanish-hello"),
    pytest.param("Sí, muchas gracias", id="spanish-thanks"),
    pytest.param("Merci beaucoup", id="french"),
    pytest.param("Danke schön", id="german"),
    pytest.param("Obrigado", id="portuguese"),
    pytest.param("👍🙏", id="emoji"),
    pytest.param("؟", id="arabic-question-mark"),
    pytest.param("。", id="ideographic-full-stop"),
    pytest.param("…", id="ellipsis"),
]


@pytest.mark.parametrize("text", SMALL_TALK)
def test_small_talk_in_any_language_stores_nothing(text: str) -> None:
    assert extract_memories(text, now_ms=1) == []


@pytest.mark.parametrize(
    "text",
    [
        "Vivo en Madrid, ¿y tú?",
        "میں لاہور میں رہتا ہوں۔ آپ کہاں رہتے ہیں؟",
        "私は東京に住んでいます。あなたは？",
        "नमस्ते! मैं दिल्ली में रहता हूँ।",
    ],
)
def test_a_statement_next_to_a_question_or_a_greeting_is_kept(text: str) -> None:
    [utterance] = extract_memories(text, now_ms=1)
    assert utterance.value == text


NAMES = [
    ("me llamo Lucía", "Lucía"),
    ("Me llamo Lucía y vivo en Madrid", "Lucía"),
    ("Hola, me llamo Lucía García.", "Lucía García"),
    ("¡Hola! Soy Lucía.", "Lucía"),
    ("Hola, soy Lucía", "Lucía"),
    ("Sí, mi nombre es Lucía", "Lucía"),
    ("No, me llamo Lucía", "Lucía"),
    ("Me llamo Lucía, ¿y tú?", "Lucía"),
    ("Bonjour, je m'appelle Marc", "Marc"),
    ("Ich heiße Anna und wohne in Berlin", "Anna"),
    ("Mein Name ist Jürgen", "Jürgen"),
    ("Meu nome é João", "João"),
    ("Oi, eu me chamo Ana", "Ana"),
    ("Mi chiamo Marco", "Marco"),
    ("Меня зовут Анна.", "Анна"),
    ("меня зовут анна", "Анна"),
    ("मेरा नाम राहुल है।", "राहुल"),
    ("नमस्ते, मेरा नाम राहुल शर्मा है", "राहुल शर्मा"),
    ("میرا نام احمد ہے۔", "احمد"),
    ("السلام علیکم، میرا نام احمد ہے", "احمد"),
    ("mera naam Rahul hai", "Rahul"),
]


@pytest.mark.parametrize(("text", "name"), NAMES)
def test_the_callers_name_in_other_languages(text: str, name: str) -> None:
    memories = extract_memories(text, now_ms=1)
    assert memories[0].kind is MemoryKind.UTTERANCE
    assert memories[0].category is MemoryCategory.PRESENTATION
    assert {(m.category, m.key): m.value for m in memories[1:]} == {NAME: name}


@pytest.mark.parametrize(
    "text",
    [
        "No me llamo Lucía",  # Spanish negates before the verb
        "Hola, no me llamo Lucía",
        "Je m'appelle pas Marc",
        "Ich heiße nicht Anna",
        "Mi nombre es muy largo",
        "Soy de Madrid",
        "soy enfermera",
        "Vivo en Madrid. Soy Lucía.",  # "soy" opens the message or follows a greeting only
        "Ich bin Lehrer",  # German capitalises nouns: no "ich bin" rule
        "मेरा नाम क्या है",  # "what is my name", said without "?"
        "मेरा नाम राहुल नहीं है",  # "my name is not Rahul"
        "میرا نام کیا ہے",
        "mera naam kya hai",
        "Mon nom est difficile à prononcer",
    ],
)
def test_no_name_where_the_wording_does_not_give_one(text: str) -> None:
    assert NAME not in {(m.category, m.key) for m in extract_memories(text, now_ms=1)}


@pytest.mark.parametrize("text", ["I'm Han", "I'm Dia", "Hi, I'm Sim"])
def test_a_name_that_is_small_talk_elsewhere_is_still_a_name(text: str) -> None:
    """Hindi "han" and Portuguese "dia" and "sim" are small talk; a message that states a fact
    is never small talk."""
    assert NAME in {(m.category, m.key) for m in extract_memories(text, now_ms=1)}


def test_why_nothing_was_kept_is_logged_at_debug_without_the_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caller_memory.capture.rule_based")
    said = {"میرا پیشہ کیا ہے؟": "question", "नमस्ते": "small talk", "": "empty"}
    for text, reason in said.items():
        caplog.clear()
        assert extract_memories(text, now_ms=1) == []
        [record] = [r for r in caplog.records if r.name == "caller_memory.capture.rule_based"]
        assert record.levelno == logging.DEBUG
        message = record.getMessage()
        assert reason in message
        for word in text.split():
            assert word not in message
            assert word.strip("؟") not in message


# -- the search query ---------------------------------------------------------------------


def test_a_hindi_question_keeps_its_words_whole() -> None:
    query = build_search_query("मेरा पेशा क्या है?")
    assert query
    assert "पेशा" in query.split()
    assert query.split() == ["मेरा", "पेशा", "क्या", "है"]


@pytest.mark.parametrize(
    ("question", "words"),
    [
        ("میرا پیشہ کیا ہے؟", ["میرا", "پیشہ", "کیا", "ہے"]),
        ("मेरी बहन कहाँ रहती है?", ["मेरी", "बहन", "कहाँ", "रहती", "है"]),
        ("Где я живу?", ["где", "живу"]),  # one letter is no word to search for
        ("أين أعمل؟", ["أين", "أعمل"]),
        ("¿Dónde vivo?", ["dónde", "vivo"]),
        ("Dónde trabaja mi hermana", ["dónde", "trabaja", "mi", "hermana"]),
    ],
)
def test_words_in_any_script_pass_through_as_said(question: str, words: list[str]) -> None:
    """No English stop word, stemming or synonym touches another language's words."""
    assert build_search_query(question).split() == words


def test_the_query_is_the_callers_words_and_the_other_spelling_of_a_few() -> None:
    question = "What do I do for a living, where do I work, my favourite colour, पेशा"
    terms = build_search_query(question).split()
    assert terms == [*content_words(question), "favorite", "color"]
    assert "पेशा" in terms


# Devanagari consonants, independent vowels and the marks that follow a consonant (vowel
# signs, virama, anusvara, candrabindu, nukta): any word made of them is one word.
_CONSONANTS = "कखगघचछजझटठडढतथदधनपफबभमयरलवशषसह"
_VOWELS = "अआइईउऊएऐओऔ"
_MARKS = "\u093e\u093f\u0940\u0941\u0942\u0947\u0948\u094b\u094c\u094d\u0902\u0901\u093c"
_SYLLABLE = st.builds(
    lambda head, marks: head + marks,
    st.sampled_from(_CONSONANTS + _VOWELS),
    st.text(st.sampled_from(_MARKS), max_size=2),
)
_HINDI_WORD = st.lists(_SYLLABLE, min_size=2, max_size=4).map("".join)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        _HINDI_WORD,
        min_size=1,
        max_size=6,
        unique_by=lambda word: unicodedata.normalize("NFC", word),
    )
)
def test_every_hindi_word_reaches_the_query_whole(said: list[str]) -> None:
    query = build_search_query(" ".join(said) + "?").split()
    assert query == [unicodedata.normalize("NFC", w) for w in said]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_query_terms_are_letters_digits_and_their_marks(text: str) -> None:
    """What the store receives: plain words (letters, digits, combining marks, an inner
    apostrophe), never syntax, never a mark cut off from its letter."""
    for term in build_search_query(text).split():
        assert term[0].isalnum(), term
        assert all(c.isalnum() or unicodedata.category(c)[0] == "M" or c == "'" for c in term)


def test_chinese_and_japanese_become_character_bigrams() -> None:
    """Written without spaces, a CJK "word" is a whole phrase; its bigrams find the words
    inside it ("仕事" in "私の仕事は何ですか")."""
    assert "仕事" in build_search_query("私の仕事は何ですか？").split()
    assert "北京" in build_search_query("我住在北京吗").split()
    assert build_search_query("猫") == "猫"
    assert set(build_search_query("東京").split()) == {"東京"}
    indexed = cjk_bigram_text("私は東京に住んでいます。I live in Tokyo")
    assert "東京" in indexed.split()
    assert indexed.endswith("I live in Tokyo")
    assert cjk_bigram_text("no CJK here: मेरा पेशा") == "no CJK here: मेरा पेशा"


# -- end to end, through the memory manager and the real SQLite store ---------------------


async def _say(*messages: str) -> None:
    for index, text in enumerate(messages):
        for m in extract_memories(text, now_ms=1_000 + index):
            await memory_manager.astore(m.category, m.key, m.value, kind=m.kind)


async def test_an_urdu_callers_words_are_stored_and_recalled(
    installed_sqlite_store: object,
) -> None:
    said = ["میں لاہور میں رہتا ہوں۔", "میرا پیشہ استاد ہے۔", "شکریہ", "میرا نام کیا ہے؟"]
    with session_user("urdu-caller@example.com"):
        await _say(*said)
        stored = sorted(m.value for m in await memory_manager.alist() if m.is_utterance)
        assert stored == sorted(said[:2])
        found = await memory_manager.asearch("میرا پیشہ کیا ہے؟", limit=5)
        assert found and found[0].value == "میرا پیشہ استاد ہے۔"


async def test_a_spanish_callers_name_is_stored(installed_sqlite_store: object) -> None:
    with session_user("spanish-caller@example.com"):
        await _say("¡Hola! Me llamo Lucía.", "¿Cómo me llamo?", "Me llamo Lucía García")
        assert await memory_manager.aretrieve("PRESENTATION", "name") == "Lucía García"


RAMBLE = (
    "Morning! Bit of a grey one today. The kettle has just boiled, the neighbours are painting "
    "their fence again, bright orange this time, honestly the whole street is talking about "
    "it, the bins were late, the buses are on strike and the corner shop ran out of bread. "
)
QUESTION = "Anyway, what is my sister's dog called?"


async def test_a_caller_who_rambles_is_searched_by_what_they_ask_last(
    installed_sqlite_store: object,
) -> None:
    """A message's last words are searched (as its embedding keeps its last tokens), also
    when it is longer than a query may be: the question comes after the small talk."""
    with session_user("rambling-caller@example.com"):
        await _say("My sister's dog is called Biscuit.", "I had pasta for lunch.")
        assert len(content_words(RAMBLE)) > 24
        for message in (RAMBLE + QUESTION, RAMBLE * 12 + QUESTION):
            found = await memory_manager.asearch(message, limit=5)
            assert [m.value for m in found] == ["My sister's dog is called Biscuit."]
