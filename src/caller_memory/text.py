"""Words in any script: the one rule for what a word is, shared by capture, recall and the
stores' lexical indexes.

A word is a run of letters, digits and the combining marks that belong to them (Unicode
categories Mn, Mc, Me: Devanagari and Bengali vowel signs and viramas, Arabic harakat, Thai
tone marks, ...), so "मेरा पेशा क्या है?" keeps "पेशा" whole instead of falling apart at its
vowel signs. Text is NFC-normalised first, so the same word typed two ways (a precomposed or
a decomposed "í", "क़") is one word.

Chinese, Japanese and Korean are written without spaces between words, so a "word" found
this way is a whole phrase ("私は東京に住んでいます"), which would only ever match the very
same phrase. Such runs become overlapping character bigrams ("東京に" -> "東京", "京に"), as
Lucene's CJK analyzer does: no dictionary, and two-character words (most Chinese and kanji
words) are found inside any sentence, provided the index holds the same bigrams
(`cjk_pairs` gives a store that form of a memory).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator


def _combining_marks() -> str:
    """Every combining mark (Unicode categories Mn, Mc, Me), as the inside of a regex class.

    Python's `\\w` has letters and digits but no marks, so `\\w+` cuts "पेशा" into "प" and
    "श". Built from the running Python's Unicode tables (a few milliseconds, once); all marks
    lie in planes 0 and 1 and in the variation selectors of plane 14.
    """
    ranges: list[tuple[int, int]] = []
    for codepoint in (*range(0x20000), *range(0xE0000, 0xE1000)):
        if unicodedata.category(chr(codepoint))[0] != "M":
            continue
        if ranges and ranges[-1][1] == codepoint - 1:
            ranges[-1] = (ranges[-1][0], codepoint)
        else:
            ranges.append((codepoint, codepoint))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


COMBINING_MARKS = _combining_marks()
# The characters of a word in any script, for use inside a regex class: letters, digits,
# combining marks. (`\w` also has "_", which callers of these patterns replace by a space.)
WORD_CHARS = rf"\w{COMBINING_MARKS}"
# A word: starts with a letter or digit, may hold one inner apostrophe ("don't", "d'accord").
_WORD_RE = re.compile(rf"\w[{WORD_CHARS}]*(?:'[{WORD_CHARS}]+)?")

# Scripts written without spaces between words, for use inside a regex class: Han (CJK
# ideographs and their extensions), Hiragana, Katakana (with its iteration and prolonged-sound
# marks), Hangul.
CJK_CHARS = (
    "\u1100-\u11ff\u3005-\u3007\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uf900-\ufaff"
    "\uff66-\uff9f\U00020000-\U0002fa1f\U00030000-\U0003134f"
)
CJK_RUN = re.compile(f"[{CJK_CHARS}]+")


def normalized(text: str) -> str:
    """NFC (one form for canonically equal text), "_" as a word break, typographic apostrophes
    plain; lower case."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text).replace("’", "'")
    return text.replace("_", " ").lower()


def _cjk_bigrams(run: str) -> Iterator[str]:
    if len(run) == 1:
        yield run
    for index in range(len(run) - 1):
        yield run[index : index + 2]


def _split_cjk(word: str) -> Iterator[str]:
    """`word` with each run of CJK characters in it replaced by that run's bigrams, and the
    rest of it ("tokyo" in "東京tokyo") as words of their own."""
    position = 0
    for run in CJK_RUN.finditer(word):
        if rest := word[position : run.start()].strip("'"):
            yield rest
        yield from _cjk_bigrams(run.group(0))
        position = run.end()
    if rest := word[position:].strip("'"):
        yield rest


def words(text: str) -> list[str]:
    """The words of `text` in any script, lower-cased and NFC, in order, repeats kept; CJK runs
    as their character bigrams."""
    found: list[str] = []
    for match in _WORD_RE.finditer(normalized(text)):
        word = match.group(0)
        if word.isascii():
            found.append(word)
        else:
            found.extend(_split_cjk(word))
    return found


def cjk_bigram_text(text: str) -> str:
    """`text` with every run of Chinese, Japanese or Korean characters written as its
    space-separated character bigrams, everything else as it was.

    For a store's lexical index: FTS5's unicode61 and Postgres' parsers keep such a run
    whole ("私は東京に住んでいます" is one token), so the bigrams `build_search_query` makes of
    a CJK question match nothing unless the index holds this form of the memory too (for
    example indexed beside the value). Text without CJK characters comes back unchanged.
    """
    if text.isascii() or not CJK_RUN.search(text):
        return text
    return CJK_RUN.sub(lambda run: " " + " ".join(_cjk_bigrams(run.group(0))) + " ", text)


def cjk_pairs(*texts: str | None) -> str | None:
    """The character bigrams of every Chinese, Japanese or Korean run in `texts`,
    space-separated, for a store to index beside the memory's own words (None when there are
    none: most memories)."""
    pairs: list[str] = []
    for text in texts:
        if not text or text.isascii():
            continue
        for run in CJK_RUN.finditer(unicodedata.normalize("NFC", text)):
            pairs.extend(_cjk_bigrams(run.group(0)))
    return " ".join(pairs) or None
