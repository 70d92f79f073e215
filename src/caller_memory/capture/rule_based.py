"""Turn what the caller says into memories: which category, under which key.

A user message yields:

- one **utterance** memory, the message itself, under `utterance_<ms>_<hash>` (so utterances
  never overwrite each other), in the category its wording points to (`categorize`);
- zero or more **stable facts**, each under a key that names the fact, not the moment
  (`favorite_color`, `home_town`, `sister_name`, ...). The store upserts on
  `(category, key)`, so saying a fact again *replaces* the old value instead of piling up a
  second answer: "my favourite colour is blue" then "my favorite color is red" leaves one
  PREFERENCE/`favorite_color` = "red".

Key scheme (each key always lives in the same category, or replacement would not happen):

==================  =========================================  ==============================
category            key                                        value (example)
==================  =========================================  ==============================
PRESENTATION        name (what to call the caller) / nickname  "Sam" / "Sammy"
PRESENTATION        pronouns                                   "she/her"
FACT                home_town, birthplace, lives_in            "Leeds"
FACT                job / employer / school                    "nurse" / "Acme" / "Oxford"
FACT                age / birthday / birth_year                "34" / "March 3rd" / "1990"
FACT                diet / allergy_<item>                      "vegan" / "allergic to nuts"
RELATIONSHIP        <relation>_name (sister_name,              "Ana"
                    older_brother_name, dog_name, mother_name)
RELATIONSHIP        <relation>_<person> for relations one      "Tom"
                    has several of (friend_tom, colleague_jo)
RELATIONSHIP        has_<relation> (has_sister, has_children)  "has two sisters" / "has no dog"
RELATIONSHIP        marital_status / spouse_name / fiance_name "married" / "Tom"
PREFERENCE          favorite_<thing> (favorite_color)          "red"
PREFERENCE          opinion_of_<item> (opinion_of_jazz)       "loves jazz" / "hates jazz"
==================  =========================================  ==============================

`stable_key_category(key)` gives this table as a function, for other writers of the same
keys.

Likes and dislikes share **one key per item**, `opinion_of_<item>`, whose value starts with
the current sentiment (`loves`, `likes`, `prefers`, `dislikes` or `hates`): "I love jazz"
then "I hate jazz" leaves exactly one memory about jazz, and it says "hates jazz". Relations
keyed `<relation>_name` hold one person each (a second sister's name replaces the first,
unless the caller says "older"/"younger"/"twin"); friends, colleagues, cousins, neighbours
and children are keyed per person so that a second friend does not replace the first.

Item slugs (`<item>`, `<thing>`, `<person>`) are ASCII, lower case, words joined by `_`, at
most 48 characters, without a leading article: "the Beatles" and "Beatles" share a key.

What yields nothing at all: questions ("what's my name?", "do you remember my favourite
colour?") and small talk ("ok", "yes", "thanks", "hi"). A question is not a statement, and
both only add noise to recall. "Can you call me Sam?" is the one question that states a fact.

Any language, nothing dropped: a message in any script is kept as an utterance unless it is
content-free. Words are letters, digits and their combining marks in any script (a Hindi
word keeps its vowel signs). A question is one that ends in "?", the full-width "？" or the
Arabic "؟", opens with the Spanish "¿", or ends in the Japanese "か" or the Chinese "吗"
particle. Small talk is a message made only of English fillers or of the short multilingual
list in `vocabulary.SMALL_TALK_WORDS` (greetings, thanks, yes and no: "gracias", "नमस्ते",
"はい、わかりました"), or with no words at all (emoji, punctuation). Why a message yielded
nothing is logged at DEBUG, without its words. The stable-fact rules are English, except
the caller's name in a few other languages where the wording is explicit ("me llamo Lucía",
"je m'appelle Marc", "ich heiße Anna", "meu nome é João", "mi chiamo Marco", "меня зовут
Анна", "मेरा नाम राहुल है", "میرا نام احمد ہے"): the LLM extractor reads facts in any
language.

Stable facts are only taken from clear statements: each rule is anchored at the start of a
clause (after fillers like "well," or "by the way"), so negations ("I'm not from London",
"my name isn't Bob"), hedges ("I used to live in Berlin", "maybe I like jazz") and reported
speech never set a fact. A bare "I'm Sam" is a name only when it opens the message or
follows a greeting, and only capitalised and not a nationality or faith ("I'm British"),
so "I'm tired" or a line of role-play in the middle of a story does not rename the caller.
Within one message a later statement of the same key wins.

The rules are plain compiled regular expressions: no network, no model. A typical message
takes tens of microseconds, a 300-character one about 0.2 ms; patterns that scan the whole
text run on a lower-cased copy (case-insensitive scanning is several times slower), and
nothing in them is quadratic in the message length.

The category rules of the original companion tested INTEREST before PREFERENCE (so "I
prefer ..." was never a PREFERENCE) and never produced LORE or PRESENTATION. Here they are
tried most specific first (see `_CATEGORY_RULES`) and every one of the eleven categories is
reachable. A message that states a name, a relation or a personal fact takes that
category even without a keyword ("Hi, I'm Sam" is PRESENTATION).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from caller_memory.capture import vocabulary as vocab
from caller_memory.text import CJK_CHARS, WORD_CHARS
from caller_memory.types import MemoryCategory, MemoryKind

logger = logging.getLogger(__name__)

MAX_CAPTURED_CHARS = 2000
MAX_SLUG_CHARS = 48

Cat = MemoryCategory


@dataclass(frozen=True, slots=True)
class CapturedMemory:
    category: MemoryCategory
    key: str
    value: str
    kind: MemoryKind = MemoryKind.FACT


def _rx(pattern: str) -> re.Pattern[str]:
    """A rule anchored at a clause start: case-insensitive, so names keep their capitals."""
    return re.compile(pattern, re.IGNORECASE)


def _lrx(pattern: str) -> re.Pattern[str]:
    """A pattern searched through whole texts: run on the lower-cased text instead.

    `re.IGNORECASE` makes a search through a long alternation about five times slower, and
    these run over every position of the message.
    """
    return re.compile(pattern)


def _lower(text: str) -> str:
    """`text` in lower case with the same length, so spans found in it map back to `text`."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)


def _alt(words: Iterable[str], *, escape: bool = True) -> str:
    """A non-capturing alternation, longest first so "best friend" wins over "friend"."""
    items = sorted(set(words), key=len, reverse=True)
    if escape:
        items = [re.escape(w).replace(r"\ ", r"\s+") for w in items]
    return "(?:" + "|".join(items) + ")"


# -- normalising and splitting a message into clauses ---------------------------------------

_QUOTES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "“": '"', "”": '"'})
# Sentences end at ". ! ? ; …" followed by a space, as in English; also at the Arabic and
# Urdu question mark and full stop and the Devanagari danda (spaced like the Latin ones), and
# at the ideographic full stop and full-width "！？" (Chinese and Japanese put no space after).
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;…؟۔।॥])\s+|(?<=[。！？])\s*")
# How a sentence may end, in any script, and which of these ends make it a question.
_SENTENCE_END = ".!?;…。！？؟۔।॥"
_QUESTION_MARKS = "?？؟"
# A Spanish question opens with "¿"; a Japanese one ends with the particle "か" ("東京ですか"),
# a Chinese one with "吗" ("你是医生吗"); the question mark is often left out after these.
_QUESTION_OPENING = "¿"
_QUESTION_PARTICLE = re.compile(r"(?:(?<!と)か|かな|吗|嗎)$")
_ABBREVIATION_END = _lrx(r"\b(?:mr|mrs|ms|dr|st|jr|sr|prof|mt|ft|vs|etc|e\.g|i\.e|approx)\.$")

_SUBJECT = (
    r"(?:i|i'm|im|i've|i'd|i'll|my|we|we're|we've|our|you|you're|he|she|they|he's|she's|"
    r"they're|it's|there's)"
)
_INTERROGATIVE = (
    r"(?:what|what's|whats|who|who's|where|where's|when|why|how|how's|which|do you|did you|"
    r"can you|could you|would you|will you|are you|have you|is it|isn't it|right|you know|"
    r"don't you|aren't you)"
)
_FILLER = _alt(vocab.LEADING_FILLERS, escape=False)
_GREETING = _lrx(r"\b" + _alt(vocab.GREETINGS) + r"\b")
_OPINION_VERB = (
    r"(?:hate|love|like|dislike|enjoy|adore|can't stand|cannot stand|don't like|do not like|"
    r"detest|loathe|despise|prefer)"
)

_LEADING_FILLERS = _lrx(rf"^(?:{_FILLER}\b[\s,!.…-]*)+")
_COMMA_FILLER = _alt(
    [f for f in vocab.LEADING_FILLERS if f not in ("and", "but", "also", "plus", "so")],
    escape=False,
)
# "I love jazz but hate rap": give the second verb its subject back, so it is a clause.
_SUBJECT_DROP = _lrx(
    r"\s+(and|but)\s+(?=(?:really\s+|also\s+|absolutely\s+|totally\s+|just\s+|actually\s+)?"
    + _OPINION_VERB
    + r"\b)"
)
# Clause boundaries: a comma before a new subject, question or filler; a conjunction before
# a new subject; a dash. Not every comma: "jazz, blues and soul" is one list.
_CLAUSE_SPLIT = _lrx(
    r"\s*,\s*(?=(?:(?:and|but|so|because|cause|though|although|plus)\s+)?"
    rf"(?:{_SUBJECT}|{_INTERROGATIVE}|{_COMMA_FILLER})\b)"
    r"|\s*[,;:]?\s+(?:and|but|so|because|'cause|cause|though|although|plus|whereas|while)\s+"
    rf"(?={_SUBJECT}\b)"
    r"|\s+[-–—]+\s+"
)
_AUX = (
    r"(?:is|isn't|are|aren't|am|was|wasn't|were|weren't|do|does|doesn't|did|didn't|don't|"
    r"can|can't|could|couldn't|would|wouldn't|will|won't|should|shouldn't|shall|have|"
    r"haven't|has|hasn't|had|may|might|must)"
)
_PRONOUN = r"(?:i|you|we|he|she|they|it|my|your|our|his|her|their|there|this|that|the|me)"
# A question starts with a question word followed by a verb ("where do I live", "how old am
# I", "what's my name") or with an inverted verb ("do you remember", "is my name Sam").
# "When I was young, ..." and "Will is my brother" are statements.
_QUESTION_START = _lrx(
    r"^(?:(?:what|who|whose|whom|where|when|why|how|which)(?:'s|'re|s\b|"
    rf"\s+(?:(?!{_PRONOUN}\b)[\w']+\s+){{0,3}}?{_AUX}\b)|"
    rf"{_AUX}\s+{_PRONOUN}\b|tell\s+me\b|remind\s+me\b|any\s+idea\b)"
)
_WORD = re.compile(rf"[{WORD_CHARS}']+")
_CJK_WORD = re.compile(f"[{CJK_CHARS}]+")


@dataclass(frozen=True, slots=True)
class _Clause:
    text: str  # original case, fillers stripped, no end punctuation
    question: bool
    greeted: bool  # a greeting came earlier in the message ("hi, it's Sam")
    first: bool  # the message's first clause with words in it
    # A bare "no" opened the clause and was stripped as a filler: "no me llamo Lucía" is
    # Spanish for "my name is not Lucía" (English puts the negation later).
    negated: bool = False


def _normalize(text: str) -> str:
    """One line, NUL-free, bounded; NFC, so that text typed or transcribed in either canonical
    form (a precomposed or a decomposed "í", "क़", "й") is stored and searched as one."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.replace("\x00", " ").split())[:MAX_CAPTURED_CHARS]


def _sentences(text: str) -> list[str]:
    merged: list[str] = []
    for part in _SENTENCE_BREAK.split(text):
        if merged and _ABBREVIATION_END.search(merged[-1][-8:].lower()):
            merged[-1] = f"{merged[-1]} {part}"
        else:
            merged.append(part)
    return merged


def _with_subjects(body: str) -> str:
    """ "I love jazz but hate rap" -> "I love jazz but I hate rap" (see `_SUBJECT_DROP`)."""
    parts: list[str] = []
    position = 0
    for m in _SUBJECT_DROP.finditer(_lower(body)):
        parts += [body[position : m.end()], "I "]
        position = m.end()
    parts.append(body[position:])
    return "".join(parts)


_APPOSITIVE_HEAD = re.compile(r"^\s*[^\W\d_][\w'-]*(?:\s+[^\W\d_][\w'-]*)?$")  # "Daniel"


def _split_clauses(body: str) -> list[str]:
    pieces: list[str] = []
    position = 0
    for m in _CLAUSE_SPLIT.finditer(_lower(body)):
        before = body[position : m.start()]
        if _APPOSITIVE_HEAD.match(before) and _REL_APPOSITIVE.match(body[position:].strip()):
            continue  # "Daniel, my younger brother, ...": one clause
        pieces.append(before)
        position = m.end()
    pieces.append(body[position:])
    return [p for p in pieces if p.strip()]


_EDGE = " ,;:\"'،、，"  # also the Arabic, ideographic and full-width commas
_EDGE_OPENING = _EDGE + "¿¡"
# "Vivo en Madrid, ¿y tú?": the "¿" opens a question inside the sentence, so what comes
# before it is a clause of its own (and a statement).
_QUESTION_OPENING_SPLIT = re.compile(r"[\s,;:]*(?=¿)")
# A greeting in another language (or "sí,", "bueno,", "oui,") opening a clause: stripped like
# the English leading fillers. A yes/no word only with punctuation after it: a bare "no"
# before a verb negates it in Spanish, Italian, Portuguese.
_OTHER_LEADING = _lrx(
    rf"^(?:{_alt(vocab.OTHER_GREETINGS)}(?![{WORD_CHARS}])[\s,!.…¡،、，！-]*|"
    rf"{_alt(vocab.OTHER_LEADING_WORDS)}\s*[,!.…،、，！]+\s*)+"
)
_OTHER_GREETING = _lrx(rf"(?<![{WORD_CHARS}]){_alt(vocab.OTHER_GREETINGS)}(?![{WORD_CHARS}])")
_BARE_NO_END = re.compile(r"(?:^|\s)no\s*$")


def _ends_as_question(sentence: str) -> bool:
    """Whether a sentence ends as a question: "?" (also full-width and Arabic), or a question
    particle in Japanese or Chinese. (A Spanish "¿" marks where a question starts: see
    `_clauses`.)"""
    ending = sentence.rstrip(" \"')")
    if ending.endswith(tuple(_QUESTION_MARKS)):
        return True
    if ending.isascii():
        return False
    return bool(_QUESTION_PARTICLE.search(ending.rstrip(_SENTENCE_END + " \"')")))


def _clause_pieces(body: str) -> list[str]:
    pieces = _split_clauses(_with_subjects(body))
    if "¿" not in body:
        return pieces
    return [part for piece in pieces for part in _QUESTION_OPENING_SPLIT.split(piece) if part]


def _clauses(cleaned: str) -> list[_Clause]:
    """The message split into clauses, each marked as a question or a statement."""
    clauses: list[_Clause] = []
    greeted = False
    for sentence in _sentences(cleaned.translate(_QUOTES)):
        is_question = _ends_as_question(sentence)
        body = sentence.strip().rstrip(_SENTENCE_END + "\"' ").lstrip("\"' ")
        pieces = _clause_pieces(body)
        for index, piece in enumerate(pieces):
            opens_question = piece.lstrip(_EDGE).startswith(_QUESTION_OPENING)
            piece = piece.strip(_EDGE)
            negated = False
            if filler := _LEADING_FILLERS.match(_lower(piece)):
                greeted = greeted or bool(_GREETING.search(filler.group(0)))
                negated = bool(_BARE_NO_END.search(filler.group(0)))
                piece = piece[filler.end() :].strip(_EDGE)
            piece = piece.lstrip(_EDGE_OPENING)
            if other := _OTHER_LEADING.match(_lower(piece)):
                greeted = greeted or bool(_OTHER_GREETING.search(other.group(0)))
                piece = piece[other.end() :].strip(_EDGE)
            piece = _strip_tail(_CLAUSE_TRAILING, piece).strip(_EDGE)
            if not piece:
                continue
            question = (
                bool(_QUESTION_START.match(_lower(piece)))
                or (is_question and index == len(pieces) - 1)
                or opens_question
            )
            clauses.append(_Clause(piece, question, greeted, not clauses, negated))
    return clauses


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("_", " "))


def _is_english_small_talk(text: str) -> bool:
    """Every word is an English filler ("ok", "yes thanks", "hi there"); no words at all."""
    return all(w in vocab.FILLER_WORDS for w in _words(text))


def _is_small_talk_run(run: str) -> bool:
    """Whether a run of Chinese or Japanese characters is small-talk words end to end
    ("はいありがとう", "好的谢谢"): these scripts put no spaces between words."""
    if len(run) > _MAX_SMALL_TALK_RUN:
        return False
    ends = [True] + [False] * len(run)  # ends[i]: run[:i] splits into small-talk words
    for end in range(1, len(run) + 1):
        ends[end] = any(
            ends[start] and run[start:end] in vocab.SMALL_TALK_WORDS
            for start in range(max(0, end - _LONGEST_SMALL_TALK_WORD), end)
        )
    return ends[-1]


_MAX_SMALL_TALK_RUN = 32
_LONGEST_SMALL_TALK_WORD = max(map(len, vocab.SMALL_TALK_WORDS))


def _is_small_talk_word(word: str) -> bool:
    if word in vocab.FILLER_WORDS or word in vocab.SMALL_TALK_WORDS:
        return True
    return not word.isascii() and bool(_CJK_WORD.fullmatch(word)) and _is_small_talk_run(word)


def _is_small_talk(text: str) -> bool:
    """Every word is small talk in English or another language (`vocab.SMALL_TALK_WORDS`):
    "ok", "gracias", "नमस्ते", "はい、わかりました"; no words at all (emoji, punctuation)."""
    return all(_is_small_talk_word(w) for w in _words(text))


# -- cleaning values --------------------------------------------------------------------

_STRIP = " ,.!?;:\"'"
_CUT = _lrx(
    r"\s+(?:because|'cause|cause|since|but|so\s+that|so|which|who|whom|where|when|while|"
    r"until|unless|if|although|though|whereas|except|especially|like\s+i\s+said|"
    r"as\s+i\s+said|or\s+so|i\s+think|i\s+guess|you\s+know)\b.*$"
)
_NUMBER = (
    r"(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|a\s+few|few|a\s+couple\s+of|"
    r"several|many|\d+)"
)
# Words that end a clause without adding to it ("I live in Berlin now", "I'm a nurse by
# trade", "I don't have a dog anymore"): stripped from every clause before the rules run.
_TRAILING_WORDS = (
    r"originally|now|currently|too|as\s+well|actually|though|anymore|any\s+more|"
    r"these\s+days|nowadays|at\s+the\s+moment|right\s+now|lately|recently|really|honestly|"
    r"by\s+the\s+way|btw|haha|lol|so\s+much|a\s+lot|very\s+much|the\s+most|i\s+think|"
    r"i\s+guess|i\s+suppose|i\s+believe|you\s+know|ok|okay|please|thanks|thank\s+you|either|"
    r"anyway|at\s+all|by\s+trade|by\s+profession|for\s+a\s+living|full[-\s]time|"
    r"part[-\s]time|all\s+the\s+time|in\s+fact|"
    r"(?:last|this)\s+(?:week|month|year|summer|winter|spring|autumn|fall|weekend)|"
    rf"(?:{_NUMBER}\s+)?(?:years?|months?|weeks?|days?|decades?)\s+ago"
)
# Time spans that end a value but may be the point of a clause ("I was born in 1990").
_TIME_SPANS = (
    r"since\s+\S+(?:\s+\d{4})?|"
    r"for\s+(?:a\s+|the\s+|about\s+|almost\s+|over\s+|nearly\s+|more\s+than\s+)?"
    rf"(?:{_NUMBER}\s+)?(?:years?|months?|weeks?|days?|decades?|ages|a\s+while|while|long|"
    r"ever|life)|"
    r"(?:back\s+)?in\s+\d{4}"
)
_CLAUSE_TRAILING = _lrx(rf"(?:[\s,]+(?:{_TRAILING_WORDS}))+[\s,.!?]*$")
_TRAILING = _lrx(rf"(?:[\s,]+(?:{_TRAILING_WORDS}|{_TIME_SPANS}))+[\s,.!?]*$")


_TAIL_CHARS = 160
_MAX_PHRASE_SOURCE = 300


def _strip_tail(pattern: re.Pattern[str], text: str) -> str:
    """Remove trailing filler words matched by `pattern`, looking at the end only.

    Searching the whole text for a trailing run is quadratic in the run's length ("really
    really really ..."); trailing fillers are a few words, so only the tail is searched.
    """
    while True:
        start = max(0, len(text) - _TAIL_CHARS)
        m = pattern.search(_lower(text[start:]))
        if m is None:
            return text
        text = text[: start + m.start()]
        if start == 0 or m.start() > 0:
            return text


def _cut(text: str) -> str:
    """`text` up to the first word that starts a new clause ("because", "but", "who", ...)."""
    m = _CUT.search(_lower(text))
    return text[: m.start()] if m else text


def _phrase(raw: str, *, max_words: int) -> str | None:
    """A short clean phrase from the rest of a clause, or None if it is not one."""
    value = _cut(raw[:_MAX_PHRASE_SOURCE].strip(_STRIP))
    value = _strip_tail(_TRAILING, value).strip(_STRIP)
    if not value or len(value.split()) > max_words:
        return None
    return value


_ASCII_WORD = re.compile(r"[a-z0-9]+")


def _ascii_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _ASCII_WORD.findall(folded.lower().replace("'", ""))


def slugify(text: str, *, max_chars: int = MAX_SLUG_CHARS) -> str:
    """A stable key part: ASCII, lower case, `_`-joined, no leading article, bounded length.

    "The Beatles", "the beatles" and "Beatles" all give "beatles". Text with no ASCII
    letters at all ("寿司") gets a short hash of itself, still stable.
    """
    words = _ascii_words(text)
    while len(words) > 1 and words[0] in ("the", "a", "an", "some"):
        words = words[1:]
    if not words:
        digest = hashlib.sha1(text.casefold().strip().encode("utf-8")).hexdigest()[:8]
        return f"x{digest}"
    slug = words[0][:max_chars]
    for word in words[1:]:
        if len(slug) + 1 + len(word) > max_chars:
            break
        slug = f"{slug}_{word}"
    return slug


# -- names ------------------------------------------------------------------------------

_NAME_TOKEN = re.compile(r"^[^\W\d_]+(?:['-][^\W\d_]+)*$")
_NAME_PARTICLES = frozenset({"de", "da", "del", "van", "von", "der", "la", "le", "bin", "al"})
_NAME_TRAILERS = _rx(r"(?:[\s,]+" + _alt(vocab.NAME_TRAILERS) + r")+[\s,.!]*$")
_RELATION_WORDS = frozenset(vocab.RELATIONS) | frozenset(vocab.RELATION_PLURALS)


def _person_name(rest: str, *, capital_only: bool, whole: bool) -> str | None:
    """The name at the start of `rest` ("Sam", "Ana Lopez"), or None.

    `capital_only`: the name must be capitalised as spoken (used where a lower-case word
    would be ambiguous: "I'm Sam" vs "I'm tired"). `whole`: nothing but the name (and
    trailers such as "please", "by the way") may follow it. A lower-case name is accepted
    only as the whole rest of an explicit form ("my name is sam"), and title-cased.
    """
    rest = _NAME_TRAILERS.sub("", rest.strip(_STRIP)).strip(_STRIP)
    tokens = rest.split()
    if not tokens:
        return None
    names: list[str] = []
    for index, raw in enumerate(tokens):
        token = raw.strip(',.!?;:"')
        possessive = token.lower().endswith("'s")
        if possessive:
            token = token[:-2]
        lower = token.lower()
        if not _NAME_TOKEN.match(token):
            break
        if index and lower in _NAME_PARTICLES and index + 1 < len(tokens):
            if tokens[index + 1][:1].isupper():
                names.append(token)
                continue
            break
        if lower in vocab.NAME_STOP_WORDS or lower in _RELATION_WORDS:
            break
        capital = token[:1].isupper()
        if index and not (capital and names and names[-1][:1].isupper()):
            break
        if capital_only and (not capital or lower in vocab.NOT_NAMES):
            break
        names.append(token)
        if possessive or len(names) == 3 or raw[-1:] in ",.!?;:":
            break
    while names and names[-1].lower() in _NAME_PARTICLES:
        names.pop()
    if not names:
        return None
    consumed = len(names)
    if whole and consumed < len(tokens):
        return None
    if not names[0][:1].isupper():
        if consumed < len(tokens) or capital_only:
            return None
        names = [n[:1].upper() + n[1:] for n in names]
    return " ".join(names)


# -- the stable-fact rules ----------------------------------------------------------------
#
# Every rule is anchored at the start of a statement clause (`re.match`), so "I'm not from
# London", "I used to love jazz" or "my friend says my name is Bob" cannot match.

_I_AM = r"(?:i'?m|i\s+am)"
_ADVERBS = r"(?:(?:currently|now|still|actually|also|just|originally|recently|finally)\s+)*"

_PRONOUNS = _rx(
    r"^(?:my\s+(?:preferred\s+)?pronouns\s+are|my\s+pronouns're|pronouns\s+are|i\s+use|"
    r"i\s+go\s+by|i\s+prefer|i'd\s+prefer)\s+"
    r"(?P<a>she|he|they|xe|ze|ey|it)\s*(?:/|\s+and\s+|\s+|-)\s*"
    r"(?P<b>her|hers|him|his|them|theirs|they|she|xem|xir|zir|hir|em|its)"
    r"(?:\s+pronouns)?$"
)
_NAME_EXPLICIT = _rx(
    r"^(?:my\s+(?:first\s+|full\s+|real\s+|actual\s+)?name\s+is|my\s+name's|my\s+names|"
    r"the\s+name's|the\s+name\s+is|name's|"
    r"(?:you\s+can|you\s+may|please|just|everyone|everybody|people|most\s+people|"
    r"my\s+friends|friends)\s+(?:just\s+)?calls?\s+me|call\s+me|"
    r"(?:can|could|would|will)\s+you\s+(?:please\s+|just\s+|maybe\s+)*call\s+me|"
    r"i\s+go\s+by(?:\s+the\s+name(?:\s+of)?)?|"
    rf"{_I_AM}\s+(?:called|named)|i\s+prefer\s+to\s+be\s+called|"
    r"i'd\s+(?:rather|prefer\s+to|like\s+to)\s+be\s+called|"
    r"i'd\s+like\s+you\s+to\s+call\s+me|i\s+want\s+you\s+to\s+call\s+me)"
    r"\s+(?!not\b|never\b)(?P<rest>.+)$"
)
_NICKNAME = _rx(r"^my\s+nick\s*name\s+is\s+(?!not\b|never\b)(?P<rest>.+)$")
_NAME_REQUEST = _rx(r"^(?:can|could|would|will)\s+you\s+(?:(?:please|just|maybe)\s+)*call\s+me\s")
_NAME_INTRO = _rx(rf"^(?P<form>{_I_AM}|this\s+is|it's|its)\s+(?P<rest>.+)$")
_INTRO_TAIL = _rx(r"\s+(?:here|speaking)$")
_NAME_HERE = _rx(r"^(?P<rest>[^\W\d_][\w'-]*(?:\s+[^\W\d_][\w'-]*)?)\s+(?:here|speaking)$")

# Names in a few other languages, where the wording is explicit and cheap to read right;
# the LLM extractor reads everything else. Spanish, French, German, Portuguese, Italian and
# Russian "my name is" / "I am called", and a negation right after never names anyone:
_NAME_EXPLICIT_OTHER = _rx(
    r"^(?:me\s+llamo|mi\s+nombre\s+es|"
    r"je\s+m'appelle|mon\s+(?:pr[ée]nom|nom)\s+est|"
    r"ich\s+hei(?:ß|ss)e|mein\s+(?:vor)?name\s+ist|"
    r"(?:eu\s+)?me\s+chamo|chamo-me|(?:o\s+)?meu\s+nome\s+[ée]|"
    r"mi\s+chiamo|il\s+mio\s+nome\s+[èe]|"
    r"меня\s+зовут|мо[её]\s+имя)"
    r"\s+(?!(?:no|not|pas|nicht|não|non|не)\b)(?P<rest>.+)$"
)
# "Soy Lucía", "Je suis Marc", "Sou o João", "Sono Marco": a name only when capitalised, as
# the message's opening (or after a greeting), like the English "I'm Sam". Not German: "Ich
# bin Lehrer" capitalises the noun.
_NAME_INTRO_OTHER = _rx(
    r"^(?:(?:yo\s+)?soy|je\s+suis|(?:eu\s+)?sou(?:\s+[ao])?|sono)\s+(?P<rest>.+)$"
)
# Hindi and Urdu put the verb last: "मेरा नाम राहुल है", "میرا نام احمد ہے", and in Latin letters
# (as speech-to-text often writes Hindi) "mera naam Rahul hai". One to three words.
_NAME_HINDI_URDU = re.compile(
    r"^(?:मेरा\s+नाम|م[یي]را\s+نام)\s+(?P<rest>\S+(?:\s+\S+){0,2}?)\s+(?:है|[ہه]ے)$"
)
_NAME_HINGLISH = _rx(r"^mera\s+naa?m\s+(?P<rest>\S+(?:\s+\S+){0,2}?)\s+(?:hai|he)$")
# Question words, negations and particles that can stand where such a name would.
_NOT_A_NAME_OTHER = frozenset(
    """
    क्या कौन नहीं ना न भी तो यह वह ही کیا کون نہیں نا نہ بھی تو یہ وہ ہی kya kaun nahi nahin
    na bhi to toh yeh woh hi
    """.split()
)
_NAME_WORD_OTHER = re.compile(rf"[^\W\d_][{WORD_CHARS}]*")


def _other_script_name(rest: str) -> str | None:
    """A name of one to three words in a script without capitals (Devanagari, Arabic), or
    None: each a word of letters and marks, none a question word or negation."""
    words = rest.split()
    if all(_NAME_WORD_OTHER.fullmatch(w) and w not in _NOT_A_NAME_OTHER for w in words):
        return " ".join(words)
    return None


def _other_language_name(clause: _Clause) -> str | None:
    text = clause.text
    if text.isascii() and not _OTHER_NAME_ASCII_START.match(text):
        return None
    if m := _NAME_EXPLICIT_OTHER.match(text):
        if clause.negated:  # "no me llamo Lucía"
            return None
        return _person_name(m["rest"], capital_only=False, whole=False)
    if (m := _NAME_INTRO_OTHER.match(text)) and (clause.first or clause.greeted):
        name = _person_name(m["rest"], capital_only=True, whole=False)
        return name if name and len(name.split()) <= 2 else None
    if m := _NAME_HINDI_URDU.match(text):
        return _other_script_name(m["rest"])
    if m := _NAME_HINGLISH.match(text):
        if any(w.lower() in _NOT_A_NAME_OTHER for w in m["rest"].split()):
            return None
        return _person_name(m["rest"], capital_only=False, whole=True)
    return None


# The first words the rules above can start with, in ASCII: most English clauses are
# passed over by this one cheap test.
_OTHER_NAME_ASCII_START = _rx(
    r"^(?:me|mi|je|mon|ich|mein|eu|chamo|o|meu|il|yo|soy|sou|sono|mera)\b"
)

_FAVORITE = r"(?:all[-\s]time\s+|absolute\s+|very\s+|most\s+|current\s+)?(?:favou?rite|fave|fav)"
_FAVORITE_FORWARD = _rx(
    rf"^my\s+{_FAVORITE}\s+(?P<thing>.+?)(?:'s|\s+(?:is|are|has\s+to\s+be|would\s+be|"
    r"would\s+have\s+to\s+be|must\s+be|is\s+definitely|is\s+still|is\s+now))\s+"
    r"(?!not\b|never\b|probably\b)(?P<value>.+)$"
)
_FAVORITE_REVERSE = _rx(
    r"^(?P<value>.+?)\s+(?:is|are|'s|has\s+(?:always\s+)?been|have\s+(?:always\s+)?been)\s+"
    r"(?:definitely\s+|still\s+|now\s+|also\s+|easily\s+)?"
    rf"my\s+{_FAVORITE}\s+(?P<thing>.+)$"
)
_THING_PREFIX = _rx(r"^(?:kind|type|sort|genre|style)\s+of\s+")
_THING_SUFFIX = _rx(
    r"\s+(?:of\s+all\s+time|in\s+the\s+(?:whole\s+)?world|ever|right\s+now|"
    r"at\s+the\s+moment|these\s+days|of\s+the\s+moment)$"
)
# "My favourite actor is in a terrible advert": not a favourite, a remark about one.
_VALUE_REJECTS = frozenset(
    """
    it that this which what mine one those in on at from with about into out over under by
    for to going also so very really not probably currently now still always
    """.split()
)

_INTENSIFIERS = (
    r"(?:(?:really|truly|absolutely|totally|just|do|still|also|honestly|actually|kind\s+of|"
    r"kinda|sort\s+of|quite|genuinely|definitely|seriously|so|very\s+much|simply|"
    r"pretty\s+much|utterly|always|now|personally|particularly|especially)\s+)*"
)
_OPINION_SENTIMENT: dict[str, str] = {
    "love": "loves",
    "adore": "loves",
    "like": "likes",
    "enjoy": "likes",
    "dig": "likes",
    "prefer": "prefers",
    "hate": "hates",
    "detest": "hates",
    "loathe": "hates",
    "despise": "hates",
    "can't stand": "hates",
    "cannot stand": "hates",
    "can't bear": "hates",
    "cannot bear": "hates",
    "dislike": "dislikes",
}
_OPINION_PLAIN = _rx(rf"^i\s+{_INTENSIFIERS}(?P<verb>{_alt(_OPINION_SENTIMENT)})\s+(?P<obj>.+)$")
_OPINION_NEGATED = _rx(
    rf"^i\s+{_INTENSIFIERS}(?:don't|do\s+not|no\s+longer)\s+{_INTENSIFIERS}"
    r"(?:like|enjoy|love|care\s+for|much\s+like|much\s+care\s+for)\s+(?P<obj>.+)$"
)
_OPINION_PERFECT = _rx(
    r"^i(?:'ve|\s+have)\s+(?:(?:always|really|just|honestly|actually)\s+)*"
    r"(?P<verb>loved|liked|enjoyed|adored|hated|disliked)\s+(?P<obj>.+)$"
)
_PERFECT_SENTIMENT = {
    "loved": "loves",
    "adored": "loves",
    "liked": "likes",
    "enjoyed": "likes",
    "hated": "hates",
    "disliked": "dislikes",
}
_OPINION_GOT_INTO = _rx(
    r"^i(?:'ve|\s+have)\s+(?:(?:really|recently|just|properly|totally)\s+)*"
    r"(?:gotten|got|been\s+getting)\s+(?:really\s+)?into\s+(?P<obj>.+)$"
)
_OPINION_NEVER = _rx(
    r"^i(?:'ve|\s+have)\s+never\s+(?:really\s+|much\s+)?(?:liked|enjoyed|loved|cared\s+for)"
    r"\s+(?P<obj>.+)$"
)
_FAN_WORDS = {
    "fan of": "likes",
    "into": "likes",
    "keen on": "likes",
    "fond of": "likes",
    "big on": "likes",
    "obsessed with": "loves",
    "crazy about": "loves",
    "passionate about": "loves",
    "hooked on": "loves",
    "sucker for": "loves",
}
_FAN_PREFIX = r"(?:a\s+(?:big\s+|huge\s+|massive\s+|real\s+|total\s+|great\s+)?)?"
_OPINION_FAN = _rx(
    rf"^{_I_AM}\s+{_INTENSIFIERS}{_FAN_PREFIX}(?P<verb>{_alt(_FAN_WORDS)})\s+(?P<obj>.+)$"
)
_OPINION_NOT_FAN = _rx(
    rf"^{_I_AM}\s+not\s+{_INTENSIFIERS}{_FAN_PREFIX}"
    r"(?:fan\s+of|into|keen\s+on|fond\s+of|big\s+on)\s+(?P<obj>.+)$"
)
_OPINION_FAN_SUFFIX = _rx(
    rf"^{_I_AM}\s+(?:such\s+)?a\s+(?:(?:big|huge|massive|real|total|great|die-?hard)\s+)?"
    r"(?P<obj>.+?)\s+fan$"
)
_COMPARISON = _rx(r"\s+(?:more\s+than|better\s+than|over|rather\s+than|instead\s+of|than)\s+")
_PREFER_COMPARISON = _rx(r"\s+(?:to|over|rather\s+than|instead\s+of|more\s+than|than)\s+")
_ITEM_SPLIT = _rx(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+(?=[^,]*$)")
_PHRASE_REJECTS = _rx(
    r"^(?:the\s+(?:way|idea|fact|thought|feeling|most)|it\s+when|a\s+(?:lot|bit|few)\b|"
    r"(?:lots|loads|plenty|most|many|stuff|things)\b|to\s+(?:"
    + "|".join(sorted(vocab.OPINION_INFINITIVE_REJECTS))
    + r")\b)"
)
_RESTRICTIVE = frozenset(
    {"who", "whom", "which", "where", "when", "while", "until", "unless", "if"}
)
_PRONOUN_ENDS = frozenset({"that", "this", "it", "them", "him", "her", "me", "us"})
# "I love talking to you", "I like your voice": about the companion, not the caller's taste.
_ABOUT_YOU = _rx(r"\b(?:you|your|yours|yourself)\b")
_OWN_RELATION = _rx(r"^(?:my|our)\s+(?:\w+\s+)?" + _alt(_RELATION_WORDS) + r"$")

_FROM = _rx(
    rf"^(?:{_I_AM}|i\s+come|i\s+came|we're|we\s+are)\s+(?:originally\s+|actually\s+)*from\s+"
    r"(?!not\b)(?P<place>.+)$"
)
_GREW_UP = _rx(
    r"^i\s+(?:grew\s+up|was\s+raised|was\s+brought\s+up|was\s+born\s+and\s+(?:raised|bred))"
    r"\s+in\s+(?P<place>.+)$"
)
_HOME_TOWN = _rx(r"^my\s+home\s*town(?:\s+is|'s)\s+(?!not\b)(?P<place>.+)$")
_LIVES = _rx(
    rf"^(?:(?:i|we)\s+{_ADVERBS}(?:live|reside)|(?:{_I_AM}|we're|we\s+are)\s+{_ADVERBS}"
    r"(?:living|based|settled)|(?:i|we)(?:'ve|\s+have)\s+(?:been\s+)?(?:lived|living))"
    r"\s+in\s+(?P<place>.+)$"
)
_MOVED = _rx(rf"^(?:i|we)(?:'ve|\s+have)?\s+{_ADVERBS}moved\s+to\s+(?P<place>.+)$")
_BORN_IN = _rx(r"^i\s+was\s+born\s+in\s+(?P<place>.+)$")
_BORN_ON = _rx(r"^i\s+was\s+born\s+on\s+(?P<date>.+)$")
_BIRTHDAY = _rx(r"^my\s+birthday(?:'s|\s+is)\s+(?:on\s+)?(?!not\b)(?P<date>.+)$")
_PLACE_CUT = _rx(r"\s+(?:with|near|for|where|in\s+order)\b.*$")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_PLACE_YEAR = _rx(r"^(?P<place>.+?)\s+(?:back\s+)?in\s+(?P<year>\d{4})$")
_MONTH = _rx(r"\b" + _alt(vocab.MONTHS) + r"\b")
_DATE_NUMERIC = re.compile(r"\b\d{1,2}[/.-]\d{1,2}\b")
_RELATIVE_DATE = _rx(r"\b(?:tomorrow|today|yesterday|next|this|coming|soon|in\s+\d+\s+days)\b")

_JOB_NOUN = _alt(vocab.JOB_NOUNS)
# "I'm a pretty good cook" is a compliment, not a job.
_JOB_MODIFIER_REJECTS = frozenset(
    """
    bit fan kind sort friend mother father mum mom dad member wife husband pretty good great
    bad terrible decent amazing excellent awful keen big huge fantastic brilliant lousy real
    total complete natural born wannabe proper little better worse best worst role
    """.split()
)
_JOB_TAIL = r"(?:\s+(?:at|for|with)\s+(?P<org>.+?)|\s+in\s+.+?)?"
_JOB_IM_A = _rx(
    rf"^{_I_AM}\s+{_ADVERBS}(?:a|an)\s+(?P<job>(?:[\w'-]+\s+){{0,3}}?{_JOB_NOUN}s?)"
    rf"{_JOB_TAIL}$"
)
_JOB_WORK_AS = _rx(
    rf"^(?:i\s+{_ADVERBS}work|{_I_AM}\s+{_ADVERBS}(?:working|employed))\s+as\s+"
    rf"(?:a\s+|an\s+|the\s+)?(?P<job>.+?){_JOB_TAIL}$"
)
_JOB_MY_JOB = _rx(
    r"^my\s+(?:job|profession|occupation|job\s+title|day\s+job|role)\s+is\s+(?:being\s+)?"
    rf"(?:a\s+|an\s+)?(?P<job>(?:[\w'-]+\s+){{0,3}}?{_JOB_NOUN}){_JOB_TAIL}$"
)
_JOB_STATE = _rx(rf"^{_I_AM}\s+{_ADVERBS}(?P<state>{_alt(vocab.JOB_STATES)})$")
_JOB_RETIRED = _rx(r"^i(?:'ve|\s+have)?\s+(?:just\s+|recently\s+|finally\s+)*retired$")
_EMPLOYER = _rx(
    rf"^(?:i\s+{_ADVERBS}work|{_I_AM}\s+{_ADVERBS}working)\s+(?:at|for)\s+(?P<org>.+?)"
    r"(?:\s+as\s+(?:a\s+|an\s+|the\s+)?(?P<job>.+))?$"
)
_STUDENT = _rx(r"\b(?:student|undergrad|undergraduate|postgrad|phd|pupil)s?$")
_UNITS = "one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_AGE_NUMBER = (
    rf"\d{{1,3}}|(?:{'|'.join(_TENS)})(?:[-\s]+(?:{'|'.join(_UNITS)}))?|"
    rf"{'|'.join(_TEENS)}|{'|'.join(_UNITS)}"
)
_AGE = _rx(
    rf"^(?:{_I_AM}|i(?:'ve)?\s+just\s+turned|i\s+turned|my\s+age\s+is)\s+"
    rf"(?P<age>{_AGE_NUMBER})(?:\s*(?:years?|yrs?)(?:\s+old|\s+of\s+age)?|\s*y/?o)?$"
)
_DIET = _rx(
    rf"^{_I_AM}\s+(?:(?:now|a|strictly|strict|fully|mostly|also)\s+)*"
    rf"(?P<diet>{_alt(vocab.DIETS)})$"
)
_DIET_BECAME = _rx(
    r"^i(?:'ve|\s+have)?\s+(?:went|became|turned|gone|become)\s+"
    rf"(?:(?:fully|completely|totally|strictly)\s+)?(?:a\s+)?(?P<diet>{_alt(vocab.DIETS)})$"
)
# "My flat in Auckland is tiny": where the caller lives, said in passing.
_HOME_IN = _rx(
    r"^(?:my|our)\s+(?:(?:new|little|tiny|small|lovely)\s+)?(?:flat|house|apartment|place|"
    r"home|condo)\s+in\s+(?P<place>.+?)(?:\s+(?:is|has|needs|looks|gets)\b.*|'s\b.*)?$"
)
_ALLERGY = _rx(
    rf"^{_I_AM}\s+(?:(?:really|very|severely|deathly|highly|also|quite)\s+)*allergic\s+to\s+"
    r"(?P<what>.+)$"
)
_ALLERGY_HAVE = _rx(r"^i\s+have\s+(?:a|an)\s+(?:severe\s+|bad\s+)?(?P<what>.+?)\s+allergy$")

_MODIFIER = _alt(vocab.RELATION_MODIFIERS)
_RELATION = _alt(vocab.RELATIONS)
_REL = rf"(?:(?P<mod>{_MODIFIER})[\s-]+)?(?P<rel>{_RELATION})"
_REL_NAME_IS = _rx(rf"^(?:my|our)\s+{_REL}(?:'s|s')?\s+name\s+is\s+(?!not\b)(?P<rest>.+)$")
_REL_CALLED = _rx(rf"^(?:my|our)\s+{_REL}(?:'s|\s+is)\s+(?:called|named)\s+(?!not\b)(?P<rest>.+)$")
_REL_NAME_REVERSE = _rx(rf"^(?P<rest>.+?)\s+is\s+my\s+{_REL}(?:'s|s')\s+name$")
_REL_IS = _rx(rf"^(?:my|our)\s+{_REL}(?:'s|\s+is)\s+(?P<rest>.+)$")
# Up to two words between "my" and the relation ("my lop-eared bunny Milo"), but not a
# possessive: "my friend's dog Rex" is not the caller's dog.
_ADJECTIVES = r"(?:(?![\w-]*'s\b)[\w-]+\s+){0,2}?"
_NEXT_WORDS = r"[^\W\d_][\w'-]*,?(?:\s+[^\W\d_][\w'-]*,?){0,3}"
_REL_ADJACENT = _lrx(rf"\b(?:my|our)\s+{_ADJECTIVES}{_REL},?\s+(?=(?P<rest>{_NEXT_WORDS}))")
# "Daniel, my younger brother, just got engaged"
_REL_APPOSITIVE = _rx(
    r"^(?P<rest>[^\W\d_][\w'-]*(?:\s+[^\W\d_][\w'-]*)?),\s+(?:my|our)\s+"
    rf"{_ADJECTIVES}{_REL}(?:,|$)"
)
_HAS = _rx(
    r"^(?:i|we)(?:'ve\s+(?:(?:also|still|only)\s+)*got|'ve|"
    r"\s+(?:(?:also|still|now|only|actually)\s+)*(?:have\s+got|have))\s+(?P<items>.+)$"
)
_HAS_ITEM = _rx(
    rf"^(?P<count>{_alt(vocab.COUNT_WORDS, escape=False)})\s+"
    rf"(?:(?P<mod>{_MODIFIER})[\s-]+)?(?P<rel>{_alt(_RELATION_WORDS)})"
    r"(?:\s+(?:called|named)\s+(?P<rest>.+))?$"
)
_HAS_NOT = _rx(
    r"^(?:i|we)\s+(?:(?:don't|do\s+not|no\s+longer)\s+have|(?:haven't|have\s+not)\s+got)\s+"
    rf"(?:a\s+|an\s+|any\s+)?(?P<rel>{_alt(_RELATION_WORDS)})$"
)
_HAS_NO = _rx(rf"^(?:i|we)(?:\s+have|'ve\s+got|'ve)\s+no\s+(?P<rel>{_alt(_RELATION_WORDS)})$")
_ONLY_CHILD = _rx(rf"^{_I_AM}\s+an\s+only\s+child$")
_MARITAL = _rx(
    rf"^(?:{_I_AM}|we're|we\s+are)\s+(?:(?:now|still|happily|recently|newly|just)\s+)*"
    r"(?P<status>married|single|divorced|engaged|widowed|separated|in\s+a\s+relationship|"
    r"not\s+married|unmarried)(?:\s+to\s+(?P<rest>.+))?$"
)
_GOT_MARRIED = _rx(
    r"^(?:i|we)\s+(?:(?:just|recently|finally)\s+)*got\s+(?P<status>married|divorced|engaged)"
    r"(?:\s+to\s+(?P<rest>.+))?$"
)


def _fact(category: MemoryCategory, key: str, value: str) -> CapturedMemory:
    return CapturedMemory(category, key, value)


def _presentation_facts(clause: _Clause) -> Iterator[CapturedMemory]:
    text = clause.text
    if m := _PRONOUNS.match(text):
        yield _fact(Cat.PRESENTATION, "pronouns", f"{m['a'].lower()}/{m['b'].lower()}")
        return
    if m := _NICKNAME.match(text):
        if name := _person_name(m["rest"], capital_only=False, whole=False):
            yield _fact(Cat.PRESENTATION, "nickname", name)
        return
    if m := _NAME_EXPLICIT.match(text):
        if name := _person_name(m["rest"], capital_only=False, whole=False):
            yield _fact(Cat.PRESENTATION, "name", name)
        return
    if m := _NAME_INTRO.match(text):
        rest, form = m["rest"], m["form"].lower()
        tail = _INTRO_TAIL.search(rest)
        if tail:
            rest = rest[: tail.start()]
        # "It's Sam" needs a greeting or "here"; a bare "I'm Sam" must open the message, so
        # "... I'm Aragorn, son of Arathorn" in the middle of a story sets no name.
        if form.startswith(("this", "it")) and not (clause.greeted or tail):
            return
        if not (clause.greeted or tail or clause.first):
            return
        if name := _person_name(rest, capital_only=True, whole=True):
            if len(name.split()) <= 2:
                yield _fact(Cat.PRESENTATION, "name", name)
    elif (m := _NAME_HERE.match(text)) and (clause.first or clause.greeted):
        if name := _person_name(m["rest"], capital_only=True, whole=True):
            yield _fact(Cat.PRESENTATION, "name", name)
    elif name := _other_language_name(clause):
        yield _fact(Cat.PRESENTATION, "name", name)


def _singular(word: str) -> str:
    if word in vocab.PLURAL_EXCEPTIONS or len(word) <= 3:
        return word
    if word.endswith("ies") and word not in ("movies", "cookies", "pies", "smoothies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _favorite_key(thing: str) -> str | None:
    thing = _cut(thing.strip(_STRIP).lower())
    thing = _THING_SUFFIX.sub("", _THING_PREFIX.sub("", _strip_tail(_TRAILING, thing)))
    words = _ascii_words(thing)
    if not words or len(words) > 4:
        return None
    phrase = " ".join(words)
    if phrase not in vocab.FAVORITE_THING_SYNONYMS:
        words[-1] = _singular(words[-1])
        phrase = " ".join(words)
    phrase = vocab.FAVORITE_THING_SYNONYMS.get(phrase, phrase)
    return "favorite_" + slugify(phrase)


def _favorite_facts(clause: _Clause) -> Iterator[CapturedMemory]:
    m = _FAVORITE_FORWARD.match(clause.text) or _FAVORITE_REVERSE.match(clause.text)
    if not m:
        return
    key = _favorite_key(m["thing"])
    value = _phrase(m["value"], max_words=8)
    if _ABOUT_YOU.search(m["thing"]) or (value and _ABOUT_YOU.search(value)):
        return
    if key and value and value.split()[0].lower() not in _VALUE_REJECTS:
        yield _fact(Cat.PREFERENCE, key, value)


_LIST_END = re.compile(r"\b(?:and|or)\b", re.IGNORECASE)


def _opinion_items(obj: str, comparison: re.Pattern[str]) -> tuple[list[str], str]:
    """The items of "jazz, blues and soul" and what they were compared with, if anything."""
    parts = comparison.split(obj, maxsplit=1)
    head = parts[0]
    compared = obj[len(head) :] if len(parts) > 1 else ""
    parts = head.split(",")
    if len(parts) > 1 and _LIST_END.search(parts[-1]):  # "jazz, blues and soul"
        items = [i.strip(_STRIP) for i in _ITEM_SPLIT.split(head)]
    else:  # "Mondays, always have": what follows the comma is not another item
        items = [parts[0].strip(_STRIP)]
    return [i for i in items if i], compared


def _opinion_facts(verb: str, raw_obj: str) -> Iterator[CapturedMemory]:
    # "I hate people who chew loudly" is not "hates people": a taste cut short by a relative
    # clause would say something the caller did not, so it is not kept.
    cut = _CUT.search(_lower(raw_obj[:_MAX_PHRASE_SOURCE]))
    if cut and cut.group(0).split()[0] in _RESTRICTIVE:
        return
    obj = _phrase(raw_obj, max_words=12)
    if obj is None:
        return
    comparison = _PREFER_COMPARISON if verb == "prefers" else _COMPARISON
    items, compared = _opinion_items(obj, comparison)
    for item in items:
        words = item.split()
        first = words[0].lower()
        if (
            len(words) > 6
            or first in vocab.OPINION_OBJECT_REJECTS
            or _PHRASE_REJECTS.match(item)
            or _OWN_RELATION.match(item)
            or _ABOUT_YOU.search(item)
            or words[-1].lower() in _PRONOUN_ENDS
            or words == ["to"]
        ):
            continue
        subject = item[3:] if first == "to" and len(words) > 1 else item
        value = f"{verb} {item}{compared if len(items) == 1 else ''}"
        yield _fact(Cat.PREFERENCE, "opinion_of_" + slugify(subject), value)


def _preference_facts(clause: _Clause) -> Iterator[CapturedMemory]:
    text = clause.text
    if _PRONOUNS.match(text):  # "I prefer they/them" is about pronouns, not a taste
        return
    yield from _favorite_facts(clause)
    if m := _OPINION_NEGATED.match(text) or _OPINION_NEVER.match(text):
        yield from _opinion_facts("dislikes", m["obj"])
    elif m := _OPINION_PLAIN.match(text):
        verb = " ".join(m["verb"].lower().split())
        yield from _opinion_facts(_OPINION_SENTIMENT[verb], m["obj"])
    elif m := _OPINION_PERFECT.match(text):
        yield from _opinion_facts(_PERFECT_SENTIMENT[m["verb"].lower()], m["obj"])
    elif m := _OPINION_GOT_INTO.match(text):
        yield from _opinion_facts("likes", m["obj"])
    elif m := _OPINION_NOT_FAN.match(text):
        yield from _opinion_facts("dislikes", m["obj"])
    elif m := _OPINION_FAN.match(text):
        verb = " ".join(m["verb"].lower().split())
        yield from _opinion_facts(_FAN_WORDS[verb], m["obj"])
    elif m := _OPINION_FAN_SUFFIX.match(text):
        yield from _opinion_facts("likes", m["obj"])


_AND_NEXT = re.compile(r"\s+and\s+(\S+)")


_PLACE_CONNECTORS = frozenset(
    """
    the of upon on de la le du del da der van von am and y sur north south east west northern
    southern eastern western central upper lower greater
    """.split()
)


def _place(raw: str, *, capitalised: bool = False) -> str | None:
    """A place name ("Leeds", "the UK", "Rio de Janeiro", "south london"), or None.

    Spoken with capitals, every word but connectors must be capitalised ("the bank calling
    about your account" is not a place); without any capital (lower-case speech-to-text),
    at most three words. `capitalised` demands a capital (for "I moved to ...", which is
    as often "I moved to the sofa").
    """
    value = _phrase(raw, max_words=10)
    if value is None:
        return None
    value = _PLACE_CUT.sub("", value.split(",")[0])
    if and_next := _AND_NEXT.search(value):
        if and_next.group(1)[:1].islower():
            value = value[: and_next.start()]
    value = value.strip(_STRIP)
    words = value.split()
    if not words or len(words) > 5 or words[0][:1].isdigit():
        return None
    if words[0].lower() in vocab.PLACE_REJECTS:
        return None
    if " ".join(words[:2]).lower() in vocab.PLACE_REJECTS or _ABOUT_YOU.search(value):
        return None
    content = [w for w in words if w.lower() not in _PLACE_CONNECTORS]
    if not content:
        return None
    if any(w[:1].isupper() for w in words):
        if not all(w[:1].isupper() or w[:1].isdigit() for w in content):
            return None
    elif capitalised or len(content) > 3:
        return None
    return value


_DATE_HEAD = _rx(r"^(?:(?:the|on|in)\s+)+")
_DATE_TAIL = _rx(r"(?:\s*,?\s*\b(?:in|of|on))?\s*$")


def _date(raw: str) -> tuple[str | None, str | None]:
    """(day, year) from "March 3rd, 1990" / "the 3rd of March"; None where absent."""
    parts = [p.strip() for p in raw.strip(_STRIP).split(",")]
    # "the 15th of October, a proper autumn baby": the date is before the comma, or the
    # comma separates the year ("March 3rd, 1990").
    text = parts[0] + (f", {parts[1]}" if len(parts) > 1 and _YEAR.fullmatch(parts[1]) else "")
    if _RELATIVE_DATE.search(text):
        return None, None
    year_match = _YEAR.search(text)
    year = year_match.group(1) if year_match else None
    day = _YEAR.sub("", text).strip(_STRIP + " ")
    day = _DATE_HEAD.sub("", day)
    day = _DATE_TAIL.sub("", day).strip(_STRIP)
    has_day = bool(_MONTH.search(day) or _DATE_NUMERIC.search(day))
    return (day if has_day and len(day.split()) <= 5 else None), year


def _age_number(said: str) -> int:
    """34 from "34", "thirty-four" or "thirty four"."""
    if said.isdigit():
        return int(said)
    total = 0
    for word in said.lower().replace("-", " ").split():
        if word in _TENS:
            total += 20 + 10 * _TENS.index(word)
        elif word in _TEENS:
            total += 10 + _TEENS.index(word)
        elif word in _UNITS:
            total += 1 + _UNITS.index(word)
    return total


def _fact_facts(clause: _Clause) -> Iterator[CapturedMemory]:
    text = clause.text
    # Single-word facts end at a comma: "I'm a journalist, have been for nine years".
    head = text.split(",", 1)[0]
    if m := _FROM.match(text) or _GREW_UP.match(text) or _HOME_TOWN.match(text):
        if place := _place(m["place"]):
            yield _fact(Cat.FACT, "home_town", place)
    elif m := _LIVES.match(text):
        if place := _place(m["place"]):
            yield _fact(Cat.FACT, "lives_in", place)
    elif m := _MOVED.match(text):
        if place := _place(m["place"], capitalised=True):
            yield _fact(Cat.FACT, "lives_in", place)
    elif m := _BORN_IN.match(text):
        raw = _cut(m["place"].strip(_STRIP)).strip(_STRIP)
        if _YEAR.fullmatch(raw):
            yield _fact(Cat.FACT, "birth_year", raw)
        elif not _MONTH.match(raw):
            if py := _PLACE_YEAR.match(raw):
                raw = py["place"]
                if _YEAR.fullmatch(py["year"]):
                    yield _fact(Cat.FACT, "birth_year", py["year"])
            if place := _place(raw):
                yield _fact(Cat.FACT, "birthplace", place)
    elif m := _BORN_ON.match(text) or _BIRTHDAY.match(text):
        day, year = _date(m["date"])
        if day:
            yield _fact(Cat.FACT, "birthday", day)
        if year and m.re is _BORN_ON:
            yield _fact(Cat.FACT, "birth_year", year)
    elif m := _HOME_IN.match(text):
        if place := _place(m["place"], capitalised=True):
            yield _fact(Cat.FACT, "lives_in", place)
    elif m := _AGE.match(head):
        age = _age_number(m["age"])
        if 1 <= age <= 120:
            yield _fact(Cat.FACT, "age", str(age))
    elif m := _DIET.match(head) or _DIET_BECAME.match(head):
        yield _fact(Cat.FACT, "diet", m["diet"].lower())
    elif m := _ALLERGY.match(text) or _ALLERGY_HAVE.match(text):
        if what := _phrase(m["what"], max_words=8):
            for item in _ITEM_SPLIT.split(what):
                item = item.strip(_STRIP)
                if item and item.split()[0].lower() not in vocab.OPINION_OBJECT_REJECTS:
                    yield _fact(Cat.FACT, "allergy_" + slugify(item), f"allergic to {item}")
    else:
        yield from _job_facts(head)


def _job_facts(text: str) -> Iterator[CapturedMemory]:
    job: str | None = None
    org: str | None = None
    if m := _JOB_STATE.match(text):
        job = m["state"].lower().removeprefix("a ")
        job = "self-employed" if job == "self employed" else job
    elif _JOB_RETIRED.match(text):
        job = "retired"
    elif m := _EMPLOYER.match(text):
        org, job = m["org"], m["job"]
    elif m := _JOB_WORK_AS.match(text) or _JOB_IM_A.match(text) or _JOB_MY_JOB.match(text):
        job, org = m["job"], m["org"]
        words = job.lower().split()
        if m.re is not _JOB_WORK_AS and (
            "of" in words or any(w in _JOB_MODIFIER_REJECTS for w in words[:-1])
        ):
            return
    if job:
        job = _phrase(job, max_words=5)
        if job and job.split()[0].lower() in vocab.OPINION_OBJECT_REJECTS:
            job = None
    if org:
        org = _phrase(org, max_words=6)
        lowered = (org or "").lower()
        if lowered in ("myself", "my self", "me"):
            org, job = None, job or "self-employed"
        elif (
            not org
            or lowered in vocab.EMPLOYER_REJECTS
            or lowered.split()[0] in vocab.OPINION_OBJECT_REJECTS
        ):
            org = None
    if job:
        yield _fact(Cat.FACT, "job", job)
    if org:
        key = "school" if job and _STUDENT.search(job) else "employer"
        yield _fact(Cat.FACT, key, org)


def _relation_stem(rel: str) -> str:
    said = " ".join(rel.lower().split())
    return vocab.RELATIONS.get(said, said)


def _relation_key(rel: str, mod: str | None) -> str:
    stem = _relation_stem(rel)
    if mod and stem not in vocab.PETS:
        modifier = vocab.RELATION_MODIFIERS[mod.lower()]
        if modifier == "step" and not stem.startswith("step"):
            return f"step{stem}"
        if modifier != "step":
            return f"{modifier}_{stem}"
    return stem


def _relation_name(rel: str, mod: str | None, name: str) -> CapturedMemory:
    stem = _relation_key(rel, mod)
    if _relation_stem(rel) in vocab.MULTI_RELATIONS:
        return _fact(Cat.RELATIONSHIP, f"{stem}_{slugify(name)}", name)
    return _fact(Cat.RELATIONSHIP, f"{stem}_name", name)


_CALLED_TAIL = _rx(r"\s+(?:called|named)$")


def _has_items(items: str) -> Iterator[CapturedMemory]:
    """ "a sister and two dogs", "a dog called Rex", "a younger brother, Kwame, who ..." """
    cut = _cut(items.strip(_STRIP))
    named: tuple[str, str | None] | None = None  # the last single relation, for ", Kwame,"
    for raw in _ITEM_SPLIT.split(cut):
        m = _HAS_ITEM.match(raw.strip(_STRIP))
        if not m:
            name = _person_name(raw, capital_only=True, whole=True)
            if named and name:
                yield _relation_name(*named, name)
            named = None
            continue
        word = m["rel"].lower()
        single = m["count"].lower() in ("a", "an", "one") and word in vocab.RELATIONS
        named = (word, m["mod"]) if single and not m["rest"] else None
        stem = vocab.RELATION_PLURALS.get(word) or vocab.RELATIONS.get(word, word)
        if stem not in vocab.HAS_RELATIONS:
            continue
        said = raw.strip(_STRIP)
        if m["rest"]:
            said = said[: m.start("rest")].strip()
            said = _CALLED_TAIL.sub("", said)
            name = _person_name(m["rest"], capital_only=False, whole=False)
            if name and word in vocab.RELATIONS:
                yield _relation_name(word, m["mod"], name)
        yield _fact(Cat.RELATIONSHIP, f"has_{stem}", f"has {said}")


def _relationship_facts(clause: _Clause) -> Iterator[CapturedMemory]:
    text = clause.text
    if m := _REL_NAME_IS.match(text) or _REL_CALLED.match(text):
        if name := _person_name(m["rest"], capital_only=False, whole=False):
            yield _relation_name(m["rel"], m["mod"], name)
    elif m := _REL_NAME_REVERSE.match(text):
        if name := _person_name(m["rest"], capital_only=False, whole=True):
            yield _relation_name(m["rel"], m["mod"], name)
    elif m := _REL_IS.match(text):
        if name := _person_name(m["rest"], capital_only=True, whole=True):
            yield _relation_name(m["rel"], m["mod"], name)
    elif m := _REL_APPOSITIVE.match(text):
        if name := _person_name(m["rest"], capital_only=True, whole=True):
            yield _relation_name(m["rel"], m["mod"], name)
    elif m := _HAS_NOT.match(text) or _HAS_NO.match(text):
        word = m["rel"].lower()
        stem = vocab.RELATION_PLURALS.get(word) or vocab.RELATIONS.get(word, word)
        if stem in vocab.HAS_RELATIONS:
            yield _fact(Cat.RELATIONSHIP, f"has_{stem}", f"has no {word}")
    elif _ONLY_CHILD.match(text):
        yield _fact(Cat.RELATIONSHIP, "has_siblings", "has no siblings")
    elif m := _HAS.match(text):
        yield from _has_items(m["items"])
    elif m := _MARITAL.match(text) or _GOT_MARRIED.match(text):
        status = " ".join(m["status"].lower().split())
        yield _fact(Cat.RELATIONSHIP, "marital_status", status)
        if m["rest"] and status in ("married", "engaged"):
            if name := _person_name(m["rest"], capital_only=True, whole=False):
                key = "spouse_name" if status == "married" else "fiance_name"
                yield _fact(Cat.RELATIONSHIP, key, name)
    # "my sister Ana", "my dog, Rex," anywhere in the clause: a capitalised name right after
    # the relation is unambiguous.
    for m in _REL_ADJACENT.finditer(_lower(text)):
        rest = text[m.start("rest") : m.end("rest")]
        name = _person_name(rest, capital_only=True, whole=False)
        if name and name.lower() not in vocab.NOT_NAMES:
            yield _relation_name(m["rel"], m["mod"], name)


_FACT_RULES = (_presentation_facts, _fact_facts, _relationship_facts, _preference_facts)


def _facts(clauses: list[_Clause]) -> list[CapturedMemory]:
    """Stable facts stated in the clauses; a later statement of a key wins."""
    found: dict[tuple[MemoryCategory, str], CapturedMemory] = {}
    for clause in clauses:
        if clause.question and not _NAME_REQUEST.match(clause.text):
            continue
        for rule in _FACT_RULES:
            for memory in rule(clause):
                slot = (memory.category, memory.key)
                found.pop(slot, None)
                found[slot] = memory
    return list(found.values())


# -- the utterance's category ------------------------------------------------------------

_REL_WORDS_ALT = _alt(_RELATION_WORDS)

# (category, pattern) in the order they are tried, most specific first; the first match wins.
# Why this order: how to address the caller (PRESENTATION) matters whatever else the message
# says; game talk (CAMPAIGNS) and invented worlds (LORE) use everyday words ("my character's
# sister", "in my world, my dog is a dragon") that would otherwise file them as the caller's
# own life; intentions (GOAL, PLAN) are time-bound and worth more than the mention of a
# relative in them; then people (RELATIONSHIP), personal facts (FACT), tastes (PREFERENCE
# before INTEREST, the original's bug), views (OPINION), and past events (EXPERIENCE), whose
# keywords ("I was", "I had") are the least specific. Nothing matched: FACT.
_CATEGORY_RULES: list[tuple[MemoryCategory, re.Pattern[str]]] = [
    (
        Cat.PRESENTATION,
        _lrx(
            r"\b(?:call me (?!(?:later|back|tomorrow|tonight|when|whenever|if|anytime|sometime|"
            r"soon|again|crazy|maybe)\b)|my name is|my name's|i go by|my pronouns|pronouns are|"
            r"i'm called|i am called|address me as|refer to me as|pronounce my name|"
            r"my name is pronounced|my name (?:isn't|is not)|my nickname|i identify as|"
            r"i'?m (?:non-?binary|trans|transgender|genderqueer|genderfluid|agender)|"
            r"(?:she|he|they)/(?:her|him|them|they))\b"
        ),
    ),
    (
        Cat.CAMPAIGNS,
        _lrx(
            r"(?:\bcampaigns?\b|\bdungeon master\b|\bgame master\b|\bdm\b|\bgm\b|\bd&d\b|"
            r"\bdnd\b|\bdungeons (?:and|&) dragons\b|\bpathfinder\b|\bsession zero\b|"
            r"\bone-shot\b|\bmy character\b|\bour (?:adventuring )?party\b|"
            r"\bmy (?:paladin|rogue|wizard|cleric|bard|ranger|warlock|sorcerer|druid|fighter|"
            r"barbarian|monk)\b|\btabletop\b|\brpg\b|\bside ?quest\b|\bquest\b|"
            r"\blevel(?:ed|led)? up\b)"
        ),
    ),
    (
        Cat.LORE,
        _lrx(
            r"\b(?:lore|legend (?:says|has it|of)|the legend|myths?|mythology|prophecy|"
            r"in my world|in our world|in the story|in our story|in my story|kingdom of|"
            r"the ancient|once upon a time|the gods of|realm|world-?building|in[- ]universe|"
            r"canonically|head ?canon)\b"
        ),
    ),
    (
        Cat.GOAL,
        _lrx(
            r"\b(?:my (?:goal|dream|ambition|resolution)|"
            r"i (?:really )?want to (?!(?:ask|know|tell|say|talk|hear|check|see if)\b)|"
            r"i'd (?:love|like) to (?!(?:ask|know|tell|say|talk|hear)\b)|i hope to|"
            r"i'm hoping to|i'?m trying to|i am trying to|i'm working (?:on|towards?)|"
            r"i dream of|i aspire|some ?day i|one day i (?:want|will|'ll|hope|would)|"
            r"i wish i could|i'm determined to|i'?m aiming to|i aim to|"
            r"i'm saving (?:up )?for|bucket list)"
        ),
    ),
    (
        Cat.PLAN,
        _lrx(
            r"\b(?:(?:i'm|i am|we're|we are) (?:going to|gonna) (?!(?:tell|say|ask|be honest)\b)|"
            r"i'?m planning|i am planning|we're planning|i plan to|i'm about to|"
            r"(?:i|we) will (?!(?:tell|say|ask|be honest)\b)|"
            r"(?:i'll|we'll) (?!(?:tell|say|ask|be honest)\b)|i've booked|i booked|"
            r"i have an appointment|i've got an appointment|tomorrow|tonight|"
            r"next (?:week|month|year|weekend|monday|tuesday|wednesday|thursday|friday|"
            r"saturday|sunday)|this (?:weekend|evening|afternoon)|later today)"
        ),
    ),
    (
        Cat.RELATIONSHIP,
        _lrx(
            rf"\b(?:my|our)\s+(?:{_MODIFIER}[\s-]+)?{_REL_WORDS_ALT}\b|"
            r"\bi'?m (?:married|single|divorced|engaged|widowed|dating|seeing someone|"
            r"in a relationship)\b|\bonly child\b|\bmy ex\b|\bwe've been together\b|"
            rf"\bi (?:have|'ve got|have got) (?:a|an|one|two|three|four|five|\d+) "
            rf"(?:{_MODIFIER}[\s-]+)?{_REL_WORDS_ALT}\b"
        ),
    ),
    (
        Cat.FACT,
        _lrx(
            r"\b(?:i'?m (?:originally )?from|i am from|i come from|i grew up|i was born|"
            r"i live in|i'm living in|i moved to|my home ?town|i work (?:as|at|for|in)|"
            r"my job is|i'?m \d{1,3}(?: years old)?\b|my birthday|i'?m allergic|"
            r"i'?m (?:a )?(?:vegan|vegetarian|pescatarian)|i'?m retired|i'?m unemployed)"
        ),
    ),
    (
        Cat.PREFERENCE,
        _lrx(
            r"\b(?:i prefer|i'd prefer|i would prefer|i'd rather|i would rather|"
            r"my (?:favou?rite|fave)|(?:is|are) my (?:favou?rites?|fave)|"
            r"i (?:really )?(?:don't|do not) (?:really )?(?:like|enjoy|care for)|"
            rf"i {_INTENSIFIERS}(?:dislike|hate|detest|loathe|despise|can'?t stand|"
            r"cannot stand|can'?t bear)|i (?:really )?(?:don't|do not) (?:really )?love|"
            r"i can'?t bear|i'm not (?:a (?:big |huge )?fan of|into|keen on)|rather than|"
            r"please (?:don't|do not|always|never|keep|speak|talk)|"
            r"(?:don't|do not) (?:ever )?call me|i like [\w' ]+ (?:better|more) than|"
            r"i(?:'ve| have) never (?:really )?(?:liked|enjoyed|loved|cared for))"
        ),
    ),
    (
        Cat.OPINION,
        _lrx(
            r"\b(?:i think|i believe|in my opinion|imo|i feel (?:like|that)|i reckon|"
            r"i'm convinced|i am convinced|overrated|underrated|i'm (?:sure|certain) that|"
            r"if you ask me|it's (?:ridiculous|absurd|wrong|unfair) (?:that|how)|"
            r"should(?:n't)? be (?:banned|illegal|allowed|free)|i (?:agree|disagree))\b"
        ),
    ),
    (
        Cat.INTEREST,
        _lrx(
            rf"\b(?:i {_INTENSIFIERS}(?:love|like|enjoy|adore)|"
            r"i(?:'ve| have) always (?:loved|liked|enjoyed)|i'?m (?:really )?into|i am into|"
            r"i'?m (?:really )?interested in|i am interested in|my hobby|my hobbies|hobbies|"
            r"i'?m a (?:big |huge )?fan of|i am a (?:big |huge )?fan of|i'?m passionate about|"
            r"i'?m obsessed with|i'?m crazy about|i'?m a (?:[\w'-]+ ){1,3}fan\b|"
            r"i collect|i play (?:the )?\w+|"
            r"i've been (?:learning|reading|watching|playing|listening)|i'm learning)\b"
        ),
    ),
    (
        Cat.EXPERIENCE,
        _lrx(
            r"\b(?:i went|i visited|i was|i had|i did|i saw|i met|i got back|i've been to|"
            r"i have been to|i've (?:never|ever|once|already)|i once|i used to|"
            r"i remember when|when i was|last (?:week|month|year|night|summer|winter|spring|"
            r"autumn|fall|weekend|time)|yesterday|this morning|earlier today|"
            r"(?:years|months|weeks|days) ago|back in \d{4}|i just (?:got|came|finished|had|"
            r"saw|went))\b"
        ),
    ),
]

# Facts that decide the utterance's category when found ("Hi, I'm Sam" is PRESENTATION,
# "I have two sisters" RELATIONSHIP). Opinions do not: "I love jazz" stays an INTEREST.
_CATEGORY_SETTING_FACTS = frozenset({Cat.PRESENTATION, Cat.RELATIONSHIP, Cat.FACT})


def _categorize(cleaned: str, facts: list[CapturedMemory]) -> MemoryCategory:
    lowered = cleaned.lower().translate(_QUOTES)
    fact_categories = {f.category for f in facts} & _CATEGORY_SETTING_FACTS
    for category, pattern in _CATEGORY_RULES:
        if category in fact_categories or pattern.search(lowered):
            return category
    return Cat.FACT


def categorize(text: str) -> MemoryCategory:
    """The category a message's wording points to; FACT when nothing more specific fits."""
    cleaned = _normalize(text)
    return _categorize(cleaned, _facts(_clauses(cleaned)))


_MULTI = "|".join(sorted(vocab.MULTI_RELATIONS))
_KEY_CATEGORIES: tuple[tuple[re.Pattern[str], MemoryCategory], ...] = (
    (re.compile(r"(?:first_|full_|preferred_)?name|nickname|pronouns"), Cat.PRESENTATION),
    (
        re.compile(
            r"home_town|birthplace|lives_in|job|employer|school|age|birthday|birth_year|diet|"
            r"allergy_[a-z0-9_]+"
        ),
        Cat.FACT,
    ),
    (
        re.compile(rf"[a-z0-9_]+_name|has_[a-z0-9_]+|marital_status|(?:{_MULTI})_[a-z0-9_]+"),
        Cat.RELATIONSHIP,
    ),
    (re.compile(r"favorite_[a-z0-9_]+|opinion_of_[a-z0-9_]+"), Cat.PREFERENCE),
)


def stable_key_category(key: str) -> MemoryCategory | None:
    """The category the rules file a stable key under; None for a key they never produce.

    The store replaces a value only within one `(category, key)` slot: another writer (the
    LLM extractor, a "remember this" tool) that files `favorite_color` under FACT instead of
    PREFERENCE would start a second row. Such writers can use this to land in the same slot.
    """
    for pattern, category in _KEY_CATEGORIES:
        if pattern.fullmatch(key):
            return category
    return None


def _log_nothing_kept(cleaned: str, reason: str) -> None:
    if not logger.isEnabledFor(logging.DEBUG):
        return
    logger.debug(
        "capture: nothing kept from a message of %d characters, %d words: %s",
        len(cleaned),
        len(_words(cleaned)),
        reason,
    )


def utterance_key(text: str, now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"utterance_{ms}_{digest}"


def extract_memories(text: str, *, now_ms: int | None = None) -> list[CapturedMemory]:
    """The memories one user message yields: its utterance first, then its stable facts.

    Empty messages, small talk and questions yield nothing (see the module docstring), in
    any language; every other message is kept, whatever its script. Why a message yielded
    nothing is logged at DEBUG (its length and the reason, never its words).
    """
    cleaned = _normalize(text)
    if not cleaned:
        logger.debug("capture: nothing kept from an empty message")
        return []
    if _is_english_small_talk(cleaned):
        _log_nothing_kept(cleaned, "small talk (or no words at all)")
        return []
    clauses = _clauses(cleaned)
    facts = _facts(clauses)
    if not facts and not any(not c.question and not _is_small_talk(c.text) for c in clauses):
        questions = sum(c.question for c in clauses)
        reason = "small talk" if not questions else f"{questions} question(s) and small talk"
        _log_nothing_kept(cleaned, reason)
        return []
    category = _categorize(cleaned, facts)
    utterance = CapturedMemory(
        category, utterance_key(cleaned, now_ms), cleaned, kind=MemoryKind.UTTERANCE
    )
    return [utterance, *facts]
