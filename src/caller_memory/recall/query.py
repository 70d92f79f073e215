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

# Topics callers talk about when they talk about themselves, each a group of words that ask
# or tell about the same thing. A query word in a group brings the whole group along, so
# "what do I do for a living?" meets "I work as a nurse", and "any phobias?" meets "I'm
# terrified of spiders". Words are matched after stemming, so one form of each is enough.
TOPICS: tuple[tuple[str, ...], ...] = (
    ("job", "work", "occupation", "profession", "career", "living", "employed"),
    ("employer", "company", "firm", "work", "employed", "office"),
    ("live", "lives_in", "living", "based", "home", "moved", "house", "flat", "apartment"),
    ("home_town", "hometown", "grew", "grow", "raised", "born", "from", "birthplace"),
    ("name", "called", "call", "named", "nickname"),
    ("pronouns", "pronoun"),
    ("birthday", "born", "birth", "age", "old"),
    ("color", "colour"),
    ("favorite", "favourite", "best", "love"),
    ("partner", "wife", "husband", "spouse", "girlfriend", "boyfriend", "married", "fiance"),
    ("married", "marital", "spouse", "single", "divorced"),
    ("children", "child", "kids", "kid", "son", "daughter"),
    ("mother", "mom", "mum", "parents"),
    ("father", "dad", "parents"),
    ("sibling", "siblings", "brother", "sister"),
    ("pet", "pets", "dog", "cat", "puppy", "kitten"),
    ("food", "eat", "eating", "dish", "meal", "cuisine", "cook"),
    ("diet", "vegetarian", "vegan", "meat", "gluten"),
    ("allergy", "allergic", "allergies"),
    ("drink", "coffee", "tea"),
    ("music", "band", "song", "singer", "artist", "album", "listen"),
    ("film", "movie", "cinema", "watch"),
    ("book", "read", "reading", "novel", "author"),
    ("hobby", "hobbies", "pastime", "free", "spare", "weekend", "enjoy"),
    ("sport", "sports", "play", "team", "gym", "exercise", "training"),
    ("fear", "afraid", "scared", "terrified", "phobia", "frightened"),
    ("car", "vehicle", "drive", "driving"),
    ("study", "studied", "degree", "major", "university", "college", "school", "graduated"),
    ("language", "speak", "fluent"),
    ("trip", "travel", "holiday", "vacation", "visit", "going"),
    ("goal", "dream", "hope", "aim", "ambition"),
    ("abroad", "overseas", "country", "lived"),
)

SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in TOPICS:
    for _word in _group:
        SYNONYMS[_word] = tuple(
            dict.fromkeys((*SYNONYMS.get(_word, ()), *(w for w in _group if w != _word)))
        )


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
                # "lives_in" must not bring "in" along: a store without a stop-word list
                # would match nearly every memory on it.
                if part not in seen and part not in STOP_WORDS:
                    seen.add(part)
                    terms.append(part)
    return " ".join(terms[:MAX_TERMS])
