"""How a caller's message becomes a memory search: one rule, used by every store.

The words of the message are lower-cased, stop words ("what", "is", "my", ...) dropped, and a
few synonyms added, so that "where do I work?" finds `job` and `employer` facts and "what's
my wife called?" finds `wife_name`. Every store receives the resulting plain words, joined by
spaces, and ORs them itself with its own stemmer (SQLite FTS5 porter, Postgres `english`).
A message with no content words gives an empty query: nothing is relevant, nothing is
recalled.
"""

from __future__ import annotations

import re

MAX_TERMS = 24
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

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

# Word -> extra words that mean the same thing in how callers talk about themselves.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "work": ("job", "employer", "occupation"),
    "job": ("work", "occupation", "employer"),
    "occupation": ("job", "work"),
    "profession": ("job", "work"),
    "live": ("lives_in", "home"),
    "lives": ("lives_in", "home"),
    "living": ("lives_in", "home"),
    "home": ("home_town", "lives_in"),
    "hometown": ("home_town",),
    "grow": ("home_town",),
    "grew": ("home_town",),
    "born": ("home_town", "birthday"),
    "birthday": ("born",),
    "called": ("name",),
    "call": ("name",),
    "name": ("called",),
    "colour": ("color",),
    "color": ("colour",),
    "favourite": ("favorite",),
    "favorite": ("favourite",),
    "wife": ("spouse", "partner"),
    "husband": ("spouse", "partner"),
    "spouse": ("wife", "husband", "partner"),
    "partner": ("wife", "husband", "spouse"),
    "kids": ("children", "son", "daughter"),
    "children": ("kids", "son", "daughter"),
    "mom": ("mother",),
    "mum": ("mother", "mom"),
    "mother": ("mom",),
    "dad": ("father",),
    "father": ("dad",),
    "pet": ("dog", "cat"),
    "pets": ("dog", "cat"),
    "food": ("eat", "dish", "cuisine"),
    "eat": ("food",),
    "drink": ("coffee", "tea"),
    "music": ("band", "song", "listen"),
    "hobby": ("hobbies", "enjoy", "love"),
    "hobbies": ("hobby", "enjoy", "love"),
    "old": ("age",),
    "age": ("old",),
}


def content_words(text: str) -> list[str]:
    """The message's words minus stop words, lower-cased, in order, without repeats."""
    words: list[str] = []
    seen: set[str] = set()
    for match in _WORD_RE.finditer(text.lower().replace("’", "'")):
        word = match.group(0)
        if word.endswith("'s"):
            word = word[:-2]
        if word in STOP_WORDS or word in seen or (len(word) < 2 and not word.isdigit()):
            continue
        seen.add(word)
        words.append(word)
    return words


def build_search_query(text: str) -> str:
    """The store-neutral query for `text`: content words plus synonyms, space-separated."""
    terms: list[str] = []
    seen: set[str] = set()
    for word in content_words(text):
        for term in (word, *SYNONYMS.get(word, ())):
            for part in term.split("_"):
                if part not in seen:
                    seen.add(part)
                    terms.append(part)
    return " ".join(terms[:MAX_TERMS])
