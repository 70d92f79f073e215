"""How a caller's message becomes a memory search: one rule, used by every store.

The message's words are found in any script (`caller_memory.text`: combining marks kept,
NFC, Chinese/Japanese/Korean runs as character bigrams). English stop words ("what", "is",
"my", ...) are dropped from ASCII words only; every other word passes through as the caller
said it (lower-cased): no stop words and no stemming are guessed for a language we have not
identified. Stable facts are stored under keys spelled in American English
(`favorite_color`) and callers say either, so a word English spells two ways ("favourite
colour") also searches its other spelling.

There is no synonym table: meaning is what the embeddings are for. (A table of topic groups
used to widen English queries; on the retrieval benchmark's tuning split it added 0.004 to
recall@10 with embeddings on and took 0.035 from it with embeddings off, so it went.)

Every store receives the resulting plain words, joined by spaces, and ORs them itself with
its own tokenizer. A message with no content words gives an empty query: nothing is
relevant, nothing is recalled.
"""

from __future__ import annotations

import re

from caller_memory.text import CJK_RUN, words

MAX_TERMS = 24
_HIRAGANA = re.compile("[\u3040-\u309f]+")

STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have
    haven't having he he'd he'll he's her here here's hers herself him himself his how how's i
    i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my
    myself no nor not of off on once only or other ought our ours ourselves out over own same
    shan't she she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're they've this
    those through to too under until up very was wasn't we we'd we'll we're we've were weren't
    what what's when when's where where's which while who who's whom why why's with won't
    would wouldn't you you'd you'll you're you've your yours yourself yourselves
    remember know tell told say said think recall again please also really just like
    ok okay yes yeah hi hello hey thanks thank
    """.split()
)

# Words spelled two ways in English: fact keys use the American spelling (`favorite_color`),
# callers either; a message with one spelling also searches the other.
_SPELLING_PAIRS = (
    ("favourite", "favorite"),
    ("favourites", "favorites"),
    ("colour", "color"),
    ("colours", "colors"),
    ("neighbour", "neighbor"),
    ("neighbours", "neighbors"),
    ("theatre", "theater"),
    ("programme", "program"),
)
OTHER_SPELLING = {a: b for a, b in _SPELLING_PAIRS} | {b: a for a, b in _SPELLING_PAIRS}


def _is_english_stop_word(word: str) -> bool:
    return word.isascii() and word in STOP_WORDS


def content_words(text: str) -> list[str]:
    """The message's words minus English stop words, lower-cased, in order, without repeats.

    A single letter is no word worth searching for in an alphabetic script ("a", "y", "в",
    "و"); a single CJK character is (most are words or word stems), and so is a digit.
    Japanese pairs of hiragana alone ("です", "どこ", "ます") are grammar far more often than
    content, and would match every polite sentence: they are left out when the message has
    other words to search for, as English stop words are.
    """
    found: list[str] = []
    seen: set[str] = set()
    candidates = words(text)
    if any(not _HIRAGANA.fullmatch(w) for w in candidates):
        candidates = [w for w in candidates if len(w) > 2 or not _HIRAGANA.fullmatch(w)]
    for word in candidates:
        if word.endswith("'s"):
            word = word[:-2]
        if (
            _is_english_stop_word(word)
            or word in seen
            or (len(word) < 2 and not word.isdigit() and not CJK_RUN.match(word))
        ):
            continue
        seen.add(word)
        found.append(word)
    return found


def build_search_query(text: str) -> str:
    """The store-neutral query for `text`: its content words (its last `MAX_TERMS`), in any
    language, then the other spelling of words English spells two ways, space-separated.

    The last ones, as the query's embedding keeps its last tokens: a caller who rambles asks
    last ("...anyway, what was my sister's dog called?")."""
    own = content_words(text)[-MAX_TERMS:]
    spelled = [OTHER_SPELLING[w] for w in own if OTHER_SPELLING.get(w, w) not in own]
    return " ".join([*own, *spelled][:MAX_TERMS])
