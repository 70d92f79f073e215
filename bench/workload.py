"""The synthetic callers' data the storage and turn-latency benchmarks fill their stores with.

- `build_vocabulary()`: a 4,000-word vocabulary with a Zipf(-Mandelbrot) distribution: common
  function words first, then everyday content words, then rarer made-up words, so the
  commonest words are in nearly half of all memories and most words in very few. It is built
  from a fixed seed: every benchmark and every run draws from the same words.
- `bulk_insert()`: profiles and memory rows written in one transaction straight into a
  `SQLiteMemoryStore`'s tables, through the store's own connection (setup, not measured).
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from search_query import STOP_WORDS

__all__ = [
    "BASE_TIME",
    "MemoryRow",
    "Vocabulary",
    "build_vocabulary",
    "bulk_insert",
    "sqlite_timestamp",
]

VOCABULARY_SIZE = 4_000
ZIPF_EXPONENT = 1.0
ZIPF_OFFSET = 2.7  # Zipf-Mandelbrot: flattens the very top a little, as in real text
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)  # every generated memory is older than this

# ------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------

# The most frequent words of casual speech, most frequent first (most are search stop words).
FUNCTION_WORDS = """
i the and to a it my was that of in we so you is but just like he she they had for on me
with at this have be our all what her his about then there one when out up got them really
went if do not no get would from know been are some well an were going can did him said as
think because by or still us their into time back over again after much even more could
""".split()

# Everyday content words of people talking about their lives.
COMMON_WORDS = """
work job office boss team meeting project deadline email client colleague shift hospital
school class teacher student exam homework university degree lecture library book novel
story poem film movie show series episode music song band concert guitar piano record album
dog cat puppy kitten vet walk park garden tree flower grass rain snow sun weather summer
winter spring autumn morning evening night weekend holiday vacation trip flight airport hotel
beach mountain lake river forest city town village street house apartment flat room kitchen
bedroom bathroom sofa table chair window door car bike bus train ticket station road traffic
coffee tea breakfast lunch dinner pizza pasta bread cheese soup salad rice noodles chicken
fish steak cake chocolate cookie wine beer juice water restaurant cafe bakery market shop
supermarket money bill rent budget salary price sale gift present birthday party wedding
anniversary christmas family mother father mom dad sister brother son daughter wife husband
partner friend neighbour cousin aunt uncle grandma grandpa baby kids children parents
doctor nurse dentist medicine headache cold flu fever sleep dream tired energy gym run
running marathon yoga swim swimming football soccer tennis basketball game match score
win lose training coach player fan ticket stadium phone laptop computer app website game
camera photo picture video podcast news article newspaper magazine radio television
painting drawing art museum gallery theatre dance dancing singing cooking baking recipe
knitting sewing fishing hiking camping climbing cycling surfing skiing travel language
spanish french german japanese lesson course practice hobby collection stamps coins plants
tomatoes vegetables fruit apples strawberries oranges lemons garlic onion pepper spice
birthday cake candles balloon letter card postcard message call chat visit dinner guests
moving boxes furniture paint wall roof repair plumber electrician landlord neighbourhood
noise quiet busy crowded calm happy sad angry nervous excited worried proud bored lonely
grateful surprised relaxed stressed anxious hopeful curious annoyed funny serious strange
beautiful ugly huge tiny old new young early late fast slow cheap expensive easy hard
difficult simple warm hot cold cool wet dry dark bright loud soft sweet salty bitter sour
fresh green blue red yellow purple orange black white grey brown pink golden silver
remembering forgetting learning teaching building fixing cleaning washing shopping driving
walking talking reading writing listening watching playing waiting working studying
planning saving spending borrowing lending sharing helping calling visiting meeting
promotion interview contract retirement pension insurance tax bank loan mortgage savings
election politics government council mayor law court police fire accident hospital surgery
recovery therapy diet vitamins allergy glasses haircut shoes jacket dress shirt scarf hat
umbrella backpack suitcase passport visa border island ocean ship ferry boat sailing harbour
castle church temple bridge tower square festival carnival parade fireworks concert opera
jazz rock blues classical folk pop choir orchestra drums violin trumpet saxophone
""".split()


def _made_up_words(count: int, exclude: set[str], rng: random.Random) -> list[str]:
    """Pronounceable invented words (`brasotel`, `kimura`): the long tail of rare words."""
    onsets = "b d f g k l m n p r s t v z br st tr pl gr sh ch kl dr fl".split()
    vowels = "a e i o u ai ou ea".split()
    codas = ["", "", "", *"n r l s t m nd rk".split()]
    words: list[str] = []
    seen = set(exclude)
    while len(words) < count:
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
            for _ in range(rng.choice((2, 2, 3)))
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]  # by rank: the most frequent first
    cum_weights: tuple[float, ...]  # Zipf weights, cumulated, for random.choices
    content: tuple[str, ...]  # words a search can use (not stop words), by rank
    content_cum_weights: tuple[float, ...]

    def content_word(self, rng: random.Random) -> str:
        """One content word (no stop word), drawn with the Zipf distribution."""
        return rng.choices(self.content, cum_weights=self.content_cum_weights)[0]


def build_vocabulary(size: int = VOCABULARY_SIZE) -> Vocabulary:
    rng = random.Random("storage-benchmark-vocabulary")
    common: list[str] = []
    for word in FUNCTION_WORDS + COMMON_WORDS:
        if word not in common:
            common.append(word)
    words = common + _made_up_words(max(size - len(common), 0), set(common), rng)
    weights = [1.0 / (rank + ZIPF_OFFSET) ** ZIPF_EXPONENT for rank in range(len(words))]
    content = [(w, wt) for w, wt in zip(words, weights, strict=True) if w not in STOP_WORDS]
    content = [(w, wt) for w, wt in content if w not in FUNCTION_WORDS]
    return Vocabulary(
        words=tuple(words),
        cum_weights=tuple(itertools.accumulate(weights)),
        content=tuple(w for w, _ in content),
        content_cum_weights=tuple(itertools.accumulate(wt for _, wt in content)),
    )


# ------------------------------------------------------------------------------------------
# Filling a SQLite store in bulk
# ------------------------------------------------------------------------------------------


def sqlite_timestamp(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")  # the SQLite store's own format


PROFILES_CREATED = sqlite_timestamp(BASE_TIME - timedelta(days=500))

# (user_id, category, key, value, created_at, updated_at), as the memories table holds them
MemoryRow = tuple[str, str, str, str, str, str]


def bulk_insert(
    conn: sqlite3.Connection,
    profiles: Iterable[tuple[str, str | None]],
    memories: Iterable[MemoryRow],
    *,
    optimize: bool = False,
) -> None:
    """Write `profiles` (user id, original identity) and `memories` (user id, category, key,
    value, created_at, updated_at) in one transaction, then checkpoint the WAL (after
    `PRAGMA optimize` with `optimize`). Runs on the store's connection, in its thread."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO profiles(id, original_identity, is_first_login, created_at, updated_at)"
        " VALUES (?, ?, 0, ?, ?)",
        [(user_id, identity, PROFILES_CREATED, PROFILES_CREATED) for user_id, identity in profiles],
    )
    conn.executemany(
        "INSERT INTO memories(user_id, category, key, value, created_at, updated_at, kind, "
        "captured_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
        "CASE WHEN ?3 LIKE 'utterance\\_%' ESCAPE '\\' THEN 'utterance' ELSE 'fact' END, "
        "(julianday(?6) - 2440587.5) * 86400.0)",
        memories,
    )
    conn.execute("COMMIT")
    if optimize:
        conn.execute("PRAGMA optimize")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
