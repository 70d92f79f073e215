"""The data of the retrieval benchmark: a generated conversational set and hand-written sets,
each split by caller into a tuning split and a held-out split, frozen before any tuning.

The generated set is described below. The hand-written sets (paraphrase, multilingual, updates)
live in bench/retrieval_data/ (their format: bench/retrieval_data/paraphrase.txt; what each
holds: bench/retrieval_data/README.md) and are read by `load_handwritten`. Every set becomes
`Caller`s: what a caller said (`Turn`s, with the agent's line before and the call it was said
in), the language, the split, and questions labelled with the turns that answer them and, for a
fact that changed, the turns that state its superseded value.

The generated set:

Every user gets one long chat (what they said to the assistant, one utterance per turn): small
talk, filler, opinions and little stories, with 15-25 personal facts scattered through it (name,
home town, job, pets, family, favourites, plans, goals, past experiences...). Each fact is stated
in one utterance (sometimes restated later in other words), worded from one of several
templates. Each fact gets one or two questions, phrased the way someone would ask about it
later ("what do I do for a living?", "what's my dog called?") and not the way it was said, each
labelled with the utterance(s) that answer it. Some facts change over time (a move to another
city, a new employer, a new job, a new favourite artist): the question's evidence is then the
latest statement only, and the stale one stays in the chat as a trap. Distractor utterances
share words with the questions without answering them ("the neighbour's dog barked all night",
"my colleague is allergic to cats").

The data is written without looking at the memory system's extraction rules or its query
synonyms, so that the benchmark measures the system rather than fitting it. Generation is
deterministic for a given seed (`random.Random` seeded with a string is stable across runs and
platforms): `generate_dataset(users=30, seed=2024)` always yields the same chats and questions.
That default set is frozen all the same (bench/retrieval_data/conversational_split.txt: its
checksum and each caller's split), so that a change to the generator cannot silently change the
data the numbers are measured on.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEED = 2024

# ------------------------------------------------------------------------------------------
# Data types
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    fact_type: str
    evidence: tuple[int, ...]  # indexes into the user's utterances; any one answers it
    changed: bool = False  # the fact was restated differently over time (latest wins)
    stale: tuple[int, ...] = ()  # when changed: the utterance(s) stating the superseded value


@dataclass(frozen=True, slots=True)
class UserChat:
    identity: str
    utterances: tuple[str, ...]
    roles: tuple[str, ...]  # per utterance: filler | evidence | stale | distractor
    questions: tuple[Question, ...]


@dataclass(frozen=True, slots=True)
class Dataset:
    seed: int
    users: tuple[UserChat, ...]

    @property
    def n_utterances(self) -> int:
        return sum(len(u.utterances) for u in self.users)

    @property
    def n_questions(self) -> int:
        return sum(len(u.questions) for u in self.users)

    def role_count(self, role: str) -> int:
        return sum(r == role for u in self.users for r in u.roles)

    @property
    def fact_types(self) -> list[str]:
        return sorted({q.fact_type for u in self.users for q in u.questions})


# ------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------

# fmt: off
FEMALE_NAMES = (
    "Priya", "Maya", "Aisha", "Sofia", "Olivia", "Hannah", "Ingrid", "Yuki", "Fatima", "Leila",
    "Amara", "Nadia", "Elena", "Greta", "Beatriz", "Zara", "Mei", "Ruth", "Chloe", "Freya",
    "Noor", "Ines", "Martha", "Layla", "Rosa", "Bridget", "Signe", "Lucia", "Maeve", "Esi",
)
MALE_NAMES = (
    "Tom", "Daniel", "Lukas", "Marcus", "Chen", "Mateo", "Kwame", "Rafael", "Oscar", "Connor",
    "Felix", "Jonah", "Samir", "Tariq", "Ewan", "Henrik", "Dmitri", "Anil", "Idris", "Pablo",
    "Callum", "Kofi", "Viktor", "Theo", "Arjun", "Omar", "Gideon", "Ravi", "Jasper", "Kenji",
)
FIRST_NAMES = FEMALE_NAMES + MALE_NAMES
CITIES = (
    "Leeds", "Bristol", "Denver", "Portland", "Glasgow", "Manchester", "Austin", "Toronto",
    "Melbourne", "Dublin", "Cardiff", "Edinburgh", "Brighton", "Sheffield", "Seattle", "Boston",
    "Nottingham", "Vancouver", "Auckland", "Adelaide", "Norwich", "Halifax", "Pittsburgh",
    "Minneapolis", "Galway", "Cork", "Belfast", "York", "Exeter", "Liverpool", "Newcastle",
    "Calgary", "Ottawa", "Perth", "Boise", "Tucson", "Sacramento", "Leicester", "Swansea",
    "Aberdeen",
)
DESTINATIONS = (
    "Lisbon", "Kyoto", "Reykjavik", "Marrakech", "Crete", "Barcelona", "Vienna", "Bali", "Sicily",
    "Croatia", "Vietnam", "Mexico City", "New Zealand", "the Scottish Highlands", "Cape Town",
    "Buenos Aires", "Norway", "Sri Lanka", "Montreal", "the Amalfi coast",
)
COUNTRIES = (
    "Japan", "South Korea", "Spain", "Chile", "Germany", "Thailand", "Australia", "Canada",
    "France", "Italy", "Brazil", "Norway", "Peru", "Ghana", "Argentina", "Poland",
)
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
SEASON_OF_MONTH = {
    "January": "winter", "February": "winter", "March": "spring", "April": "spring",
    "May": "spring", "June": "summer", "July": "summer", "August": "summer", "September": "autumn",
    "October": "autumn", "November": "autumn", "December": "winter",
}
# fmt: on
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
# fmt: off
NUMBER_WORDS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "fifteen",
)
# fmt: on
# (with article, what a day of it looks like)
JOBS = (
    ("a nurse", "looking after patients on a busy ward"),
    ("an electrician", "rewiring old houses and fixing fuse boxes"),
    ("a software developer", "writing code and chasing bugs"),
    ("a primary school teacher", "teaching a class of seven-year-olds to read"),
    ("an accountant", "doing tax returns and audits for small businesses"),
    ("a chef", "running a kitchen through dinner service"),
    ("a graphic designer", "making logos and posters for clients"),
    ("a paramedic", "racing an ambulance to emergencies"),
    ("a plumber", "fixing boilers and leaking pipes"),
    ("a pharmacist", "checking prescriptions and doses behind a counter"),
    ("an architect", "drawing up plans for houses that may or may not get built"),
    ("a solicitor", "drafting contracts and calming down clients"),
    ("a dental hygienist", "scraping tartar off strangers' teeth"),
    ("a journalist", "chasing stories for the local paper"),
    ("a firefighter", "on call for fires and crashes"),
    ("a librarian", "cataloguing books and running the kids' reading hour"),
    ("a data analyst", "building spreadsheets and dashboards nobody reads"),
    ("a vet", "treating sick cats and dogs"),
    ("a car mechanic", "under cars changing brake pads"),
    ("a physiotherapist", "helping people get back on their feet after injuries"),
    ("an airline pilot", "flying short-haul routes around Europe"),
    ("a carpenter", "building kitchen cabinets and hanging doors"),
    ("a social worker", "supporting families through tough times"),
    ("a hairdresser", "cutting and colouring hair all day"),
)
# fmt: off
COMPANY_HEADS = (
    "Northwind", "Brightpath", "Bluestone", "Redwood", "Silverline", "Harbour", "Keystone",
    "Meridian", "Lakeside", "Summit", "Greenleaf", "Ironbridge", "Oakridge", "Pinecrest",
    "Starling", "Copperfield", "Westgate", "Ashdown",
)
COMPANY_TAILS = (
    "Logistics", "Insurance", "Health", "Software", "Foods", "Energy", "Media", "Bank", "Labs",
    "Retail", "Engineering", "Telecom",
)
# fmt: on
PETS = {
    # species: (breeds, something it did)
    "dog": (
        ("beagle", "labrador", "border collie", "dachshund", "greyhound", "spaniel", "pug"),
        "dug up the whole flowerbed again",
    ),
    "cat": (
        ("tabby", "Siamese", "ginger tom", "Maine Coon", "little black moggy"),
        "knocked my coffee off the table on purpose",
    ),
    "rabbit": (("lop-eared bunny", "dwarf bunny"), "chewed through my laptop charger"),
    "bird": (("budgie", "cockatiel", "African grey"), "learned to copy the microwave beep"),
    "tortoise": (("tortoise", "old Greek tortoise"), "escaped under the garden fence again"),
}
# fmt: off
PET_NAMES = (
    "Biscuit", "Pepper", "Milo", "Luna", "Bramble", "Ziggy", "Noodle", "Waffles", "Juniper",
    "Pickles", "Otis", "Clementine", "Mochi", "Rufus", "Hazel", "Pretzel", "Sprout", "Banjo",
)
FOODS = (
    "ramen", "pad thai", "lasagne", "chicken tikka masala", "sushi", "fish and chips", "tacos",
    "paella", "pho", "mac and cheese", "shepherd's pie", "dumplings", "mushroom risotto",
    "falafel wraps", "jollof rice", "pierogi", "a proper Sunday roast", "katsu curry",
)
DISLIKED_FOODS = (
    "coriander", "olives", "blue cheese", "liver", "anchovies", "beetroot", "marzipan", "okra",
    "mayonnaise", "kidney beans", "celery", "raisins",
)
ALLERGENS = (
    "peanuts", "shellfish", "penicillin", "bee stings", "sesame", "latex", "tree nuts", "kiwi",
)
# fmt: on
HOBBIES = (
    ("pottery", "Spent all Saturday at the wheel throwing bowls, only one survived the kiln"),
    ("bouldering", "Went to the climbing wall again after work, my forearms are dead"),
    ("knitting", "Finished the scarf I started in March, three months for one scarf"),
    ("woodworking", "Built a little bookshelf in the garage this weekend, sawdust everywhere"),
    ("birdwatching", "Got up at dawn with the binoculars and finally spotted a woodpecker"),
    ("baking sourdough", "My starter is finally bubbling, two loaves came out of the oven"),
    ("chess", "Played blitz online until 2am and lost four games in a row"),
    ("photography", "Took the camera down to the harbour to shoot the sunrise"),
    ("gardening", "Spent the afternoon weeding the veg patch and planting leeks"),
    ("playing guitar", "Practising barre chords every night, my fingertips are raw"),
    ("watercolour painting", "Painted a little watercolour of the lake, quite proud of it"),
    ("sea swimming", "Went for a dip in the sea at seven this morning, freezing but glorious"),
)
# fmt: off
SPORTS = (
    "five-a-side football", "netball", "tennis", "squash", "hockey", "volleyball", "badminton",
    "basketball", "ultimate frisbee", "water polo",
)
BANDS = (
    "Radiohead", "Fleetwood Mac", "Taylor Swift", "Arctic Monkeys", "ABBA", "Kendrick Lamar",
    "Bon Iver", "Beyoncé", "The Cure", "Daft Punk", "Adele", "Nirvana", "Dolly Parton",
    "Little Simz", "Fontaines D.C.", "Stevie Wonder",
)
FILMS = (
    "Spirited Away", "The Godfather", "Paddington 2", "Mamma Mia", "Alien", "Amélie",
    "Jurassic Park", "The Princess Bride", "Heat", "Moonlight", "Back to the Future", "Toy Story",
    "Arrival", "Hot Fuzz",
)
COLOURS = (
    "teal", "mustard yellow", "burgundy", "forest green", "navy blue", "lilac", "coral",
    "burnt orange", "sage green", "emerald",
)
CARS = (
    "Volvo estate", "Ford Fiesta", "VW Golf", "Toyota Prius", "Mini Cooper", "Land Rover",
    "Honda Civic", "Nissan Leaf", "Fiat Panda", "Skoda Octavia", "camper van",
)
# fmt: on
CAR_COLOURS = ("red", "silver", "white", "black", "dark green", "blue", "rusty orange")
# fmt: off
LANGUAGES = (
    "Spanish", "Japanese", "Italian", "Portuguese", "German", "Korean", "Welsh", "Mandarin",
    "Greek", "Dutch",
)
FEARS = (
    "spiders", "heights", "deep water", "flying", "clowns", "needles", "the dark", "thunderstorms",
    "moths", "lifts",
)
SUBJECTS = (
    "chemistry", "history", "economics", "civil engineering", "philosophy", "marine biology",
    "French", "computer science", "geography", "music", "psychology", "mathematics",
)
UNIVERSITIES = (
    "Bristol", "Leeds", "Edinburgh", "McGill", "UCL", "Warwick", "Trinity", "Durham", "Toronto",
    "Manchester", "Cardiff", "Glasgow",
)
PARENT_JOBS = (
    "teacher", "postman", "nurse", "engineer", "baker", "bus driver", "police officer", "farmer",
    "hairdresser", "welder", "bank manager", "midwife",
)
# fmt: on


# ------------------------------------------------------------------------------------------
# Fact types
# ------------------------------------------------------------------------------------------


_FEMALE_RELS = frozenset({"sister", "wife", "girlfriend", "daughter", "mum", "mom"})
_MALE_RELS = frozenset({"brother", "husband", "boyfriend", "son", "dad"})


class _Draw:
    """Per-user random draws that never repeat a name, city, food... within one user."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._used: set[str] = set()

    def pick(self, pool: tuple[str, ...]) -> str:
        choices = [p for p in pool if p not in self._used]
        value = self.rng.choice(choices or list(pool))
        self._used.add(value)
        return value

    def name(self, rel: str = "") -> str:
        """A first name fitting `rel` (sister, husband, son...; anything else: any name)."""
        if rel in _FEMALE_RELS:
            return self.pick(FEMALE_NAMES)
        if rel in _MALE_RELS:
            return self.pick(MALE_NAMES)
        return self.pick(FIRST_NAMES)

    def company(self) -> str:
        while True:
            value = f"{self.rng.choice(COMPANY_HEADS)} {self.rng.choice(COMPANY_TAILS)}"
            if value not in self._used:
                self._used.add(value)
                return value


Slots = dict[str, object]


@dataclass(frozen=True)
class ChangeSpec:
    """How a fact is later restated differently; the new statement is the evidence."""

    probability: float
    make: Callable[[_Draw, Slots], Slots]  # new slots from the old ones
    statements: tuple[str, ...]
    extra_questions: tuple[str, ...] = ()


@dataclass(frozen=True)
class FactSpec:
    """One kind of personal fact: how it is said, how it is asked about, what it is confused with.

    `make` draws the slot values for one user; it may also return "_statements" and/or
    "_questions" to replace the spec's templates (facts whose wording depends on the value).
    """

    name: str
    make: Callable[[_Draw], Slots]
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    distractors: tuple[str, ...]
    change: ChangeSpec | None = None
    weight: float = 1.0  # how likely a user is to mention this kind of fact


def _years(d: _Draw) -> str:
    return d.rng.choice(NUMBER_WORDS)


def _make_name(d: _Draw) -> Slots:
    return {"name": d.name(), "other_name": d.name()}


def _make_city(d: _Draw) -> Slots:
    return {"city": d.pick(CITIES), "other_city": d.pick(CITIES), "other_name": d.name()}


def _change_city(d: _Draw, old: Slots) -> Slots:
    return {**old, "old_city": old["city"], "city": d.pick(CITIES)}


def _make_job(d: _Draw) -> Slots:
    a_job, activity = d.rng.choice(JOBS)
    other = d.rng.choice([j for j, _ in JOBS if j != a_job])
    return {"a_job": a_job, "activity": activity, "years": _years(d), "other_job": other}


def _change_job(d: _Draw, old: Slots) -> Slots:
    a_job, activity = d.rng.choice([j for j in JOBS if j[0] != old["a_job"]])
    return {**old, "old_a_job": old["a_job"], "a_job": a_job, "activity": activity}


def _make_employer(d: _Draw) -> Slots:
    return {"company": d.company(), "years": _years(d)}


def _change_employer(d: _Draw, old: Slots) -> Slots:
    return {**old, "old_company": old["company"], "company": d.company()}


def _make_pet(d: _Draw) -> Slots:
    species = d.rng.choice(sorted(PETS))
    breeds, antic = PETS[species]
    return {
        "species": species,
        "breed": (breed := d.rng.choice(breeds)),
        "a_breed": ("an " if breed[0].lower() in "aeiou" else "a ") + breed,
        "antic": antic,
        "pet": d.pick(PET_NAMES),
        "other_pet": d.pick(PET_NAMES),
        "other_name": d.name(),
    }


def _make_sibling(d: _Draw) -> Slots:
    rel = d.rng.choice(("sister", "brother"))
    return {
        "rel": rel,
        "sib": d.name(rel),
        "age_adj": (adj := d.rng.choice(("older", "younger", "little", "big"))),
        "a_age_adj": ("an " if adj[0] in "aeiou" else "a ") + adj,
        "other_name": d.name(),
    }


def _make_partner(d: _Draw) -> Slots:
    rel = d.rng.choice(("husband", "wife", "girlfriend", "boyfriend", "partner"))
    return {"rel": rel, "partner": d.name(rel), "years": _years(d)}


def _make_child(d: _Draw) -> Slots:
    rel = d.rng.choice(("son", "daughter"))
    return {"rel": rel, "kid": d.name(rel), "age": d.rng.choice(NUMBER_WORDS[:9])}


def _make_parent(d: _Draw) -> Slots:
    rel, qrel, poss = d.rng.choice(
        (("mum", "mother", "her"), ("mom", "mother", "her"), ("dad", "father", "his"))
    )
    return {"rel": rel, "qrel": qrel, "poss": poss, "pjob": d.pick(PARENT_JOBS)}


def _make_food(d: _Draw) -> Slots:
    return {"food": d.pick(FOODS), "other_food": d.pick(FOODS)}


def _make_disliked(d: _Draw) -> Slots:
    return {"dfood": d.pick(DISLIKED_FOODS)}


def _make_allergy(d: _Draw) -> Slots:
    return {"allergen": d.pick(ALLERGENS)}


def _make_hobby(d: _Draw) -> Slots:
    hobby, activity = d.rng.choice(HOBBIES)
    return {"hobby": hobby, "hobby_story": activity}


def _make_sport(d: _Draw) -> Slots:
    sport = d.pick(SPORTS)
    return {"sport": sport, "other_sport": d.pick(SPORTS), "day": d.rng.choice(WEEKDAYS)}


def _make_trip(d: _Draw) -> Slots:
    dest = d.pick(DESTINATIONS)
    return {
        "dest": dest,
        "month": d.rng.choice(MONTHS),
        "other_dest": d.pick(DESTINATIONS),
        "other_name": d.name(),
    }


_GOALS = (
    (
        "I want to run a marathon before I turn forty",
        "Did an eighteen-mile training run this morning, the big race is in April",
        "Signed up for my first marathon, absolutely terrified",
    ),
    (
        "I'm determined to finish writing my novel this year",
        "Wrote another chapter of the book last night, only twelve to go",
    ),
    (
        "I've always wanted to learn the piano properly, so I've started lessons",
        "Practising scales every evening so I can play Chopin one day",
    ),
    (
        "We're saving every penny for a deposit on a house",
        "Cut out takeaways completely so we can buy our own place by next year",
    ),
    (
        "One day I'm going to open my own bakery",
        "Spent the evening drawing up a business plan for my little café idea",
    ),
    (
        "I'm aiming to do ten pull-ups by the summer, I can do three right now",
        "Hung off the bar in the park until my arms shook, pull-up number four is close",
    ),
    (
        "I really want to get my pilot's licence in the next couple of years",
        "Booked my first flying lesson at the airfield, a little Cessna",
    ),
)


def _make_goal(d: _Draw) -> Slots:
    return {"_statements": d.rng.choice(_GOALS)}


def _make_abroad(d: _Draw) -> Slots:
    return {"country": d.pick(COUNTRIES), "years": d.rng.choice(("two", "three", "four"))}


def _make_education(d: _Draw) -> Slots:
    return {"subject": d.pick(SUBJECTS), "uni": d.pick(UNIVERSITIES)}


_OPINIONS = (
    (
        (
            "Honestly, being at home all week is so much better than commuting to an office",
            "I'd go mad without the office, I need people around me to get anything done",
        ),
        ("how do I feel about remote work?", "do I prefer working from home or in the office?"),
    ),
    (
        (
            "Pineapple on pizza is delicious and I refuse to apologise",
            "Putting fruit on a pizza should be against the law",
        ),
        ("what do I think about Hawaiian pizza?",),
    ),
    (
        (
            "I deleted Instagram last month, all that scrolling was making me miserable",
            "I love that I can keep up with old school friends through my feeds",
        ),
        ("what's my opinion of social media?", "how do I feel about apps like TikTok?"),
    ),
    (
        (
            "Battery cars are the future, I'd never go back to petrol",
            "I don't trust those battery cars, charging them is a nightmare",
        ),
        ("what do I think of electric vehicles?", "am I a fan of EVs?"),
    ),
    (
        (
            "Most of the stuff in modern galleries is pretentious nonsense if you ask me",
            "I could spend a whole day at the Tate Modern, I adore it",
        ),
        ("what's my take on contemporary art?",),
    ),
    (
        (
            "Winter is the best time of year, give me cold and dark and cosy",
            "I dread the cold months every single year, I'm a summer person through and through",
        ),
        ("which season do I like best?", "how do I feel about winter?"),
    ),
)


def _make_opinion(d: _Draw) -> Slots:
    stances, questions = d.rng.choice(_OPINIONS)
    return {"_statements": (d.rng.choice(stances),), "_questions": questions}


def _make_car(d: _Draw) -> Slots:
    return {"car": d.rng.choice(CARS), "car_colour": d.rng.choice(CAR_COLOURS)}


def _make_language(d: _Draw) -> Slots:
    return {"lang": d.pick(LANGUAGES)}


def _make_birthday(d: _Draw) -> Slots:
    month = d.rng.choice(MONTHS)
    day = d.rng.randint(1, 28)
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return {
        "date": f"the {day}{suffix} of {month}",
        "season": SEASON_OF_MONTH[month],
        "age": d.rng.choice(("thirty", "forty", "twenty-five", "fifty", "thirty-five")),
    }


def _make_fear(d: _Draw) -> Slots:
    return {"fear": d.pick(FEARS)}


_DIETS = (
    (
        "I went vegetarian last year and I feel so much better for it",
        "No meat for me anymore, haven't touched it in ages",
    ),
    (
        "I've been vegan since 2019",
        "Nothing from an animal for me, not even honey",
    ),
    (
        "I gave up meat but I still eat fish, so pescatarian I suppose",
        "Seafood is fine but no chicken or beef for me",
    ),
    (
        "I'm coeliac, so anything with gluten is off the menu",
        "Bread, pasta, regular beer, all banned since the diagnosis",
    ),
)


def _make_diet(d: _Draw) -> Slots:
    return {"_statements": d.rng.choice(_DIETS)}


_DRINKS = (
    ("I drink my coffee black, no sugar, strong enough to stand a spoon in",),
    ("Can't function until I've had an oat flat white",),
    ("I'm a green tea person, coffee makes me jittery",),
    ("Two mugs of builder's tea before I can speak to anyone",),
    ("First thing I do after waking up is make a pot of mint tea",),
    ("A double espresso at seven sharp, then I'm human",),
)


def _make_drink(d: _Draw) -> Slots:
    return {"_statements": d.rng.choice(_DRINKS)}


def _make_band(d: _Draw) -> Slots:
    return {"band": d.pick(BANDS)}


def _change_band(d: _Draw, old: Slots) -> Slots:
    return {**old, "old_band": old["band"], "band": d.pick(BANDS)}


def _make_film(d: _Draw) -> Slots:
    return {"film": d.pick(FILMS)}


def _make_colour(d: _Draw) -> Slots:
    return {"colour": d.pick(COLOURS)}


FACT_SPECS: tuple[FactSpec, ...] = (
    FactSpec(
        "name",
        _make_name,
        (
            "My name's {name}",
            "I'm {name}, by the way, I don't think I ever said",
            "Everyone calls me {name}",
            "{name} here, just so you know who you're chatting with",
        ),
        (
            "what's my name?",
            "what should you call me?",
            "do you remember what I'm called?",
            "who am I?",
        ),
        (
            "I can never remember people's names at parties",
            "What's the name of that film with the shark?",
            "My friend {other_name} says hi",
        ),
    ),
    FactSpec(
        "hometown",
        _make_city,
        (
            "I grew up in {city}",
            "Born and raised in {city}, never thought I'd leave",
            "When I was a kid in {city} we used to sledge down the hill behind the church",
            "{city} will always be home to me, even though I left at eighteen",
        ),
        (
            "where am I from originally?",
            "what's my hometown?",
            "which town was I raised in?",
            "where did I spend my childhood?",
        ),
        (
            "Our tomatoes grew like crazy this summer",
            "The town hall is hosting a craft market on Sunday",
            "Kids grow up so fast, my nephew is already taller than me",
            "My cousin {other_name} moved to {other_city} and keeps sending me photos",
        ),
    ),
    FactSpec(
        "residence",
        _make_city,
        (
            "I live in {city} these days",
            "My flat in {city} is tiny but the view is amazing",
            "Been renting in {city} for a few years now",
            "I love living in {city}, there's always something going on",
        ),
        (
            "where do I live?",
            "what city am I based in?",
            "where's home for me at the moment?",
        ),
        (
            "The city council dug up our road again",
            "I'd love to live somewhere warmer one day",
            "At the moment I'm just trying to get through the week",
            "My friend {other_name} lives in {other_city} and won't stop going on about it",
        ),
        change=ChangeSpec(
            0.5,
            _change_city,
            (
                "We finally moved to {city}! Boxes everywhere",
                "Just unpacked the last box in our new place in {city}",
                "Left {old_city} behind for good, {city} is where we are now",
            ),
            ("where do I live now?",),
        ),
        weight=1.5,
    ),
    FactSpec(
        "job",
        _make_job,
        (
            "I work as {a_job}",
            "My job? I'm {a_job}, have been for {years} years",
            "I spend my days {activity}, that's what pays the bills",
            "Some days I wonder why I became {a_job}, the hours are brutal",
        ),
        (
            "what do I do for a living?",
            "what's my profession?",
            "what line of work am I in?",
            "what's my occupation?",
            "what's my job?",
        ),
        (
            "We spent the whole evening in the living room watching telly",
            "I keep asking myself what I actually want to do with my life",
            "My friend is thinking of retraining as {other_job}",
            "Work was absolutely exhausting today",
        ),
        change=ChangeSpec(
            0.25,
            _change_job,
            (
                "I finally quit being {old_a_job} and retrained, I'm {a_job} now",
                "New career, new me: as of this month I'm officially {a_job}",
            ),
            ("what's my job now?",),
        ),
        weight=1.5,
    ),
    FactSpec(
        "employer",
        _make_employer,
        (
            "I've been at {company} for {years} years now",
            "{company} finally gave me a pay rise, only took three years of asking",
            "The place I work, {company}, is moving offices again",
            "I joined {company} straight out of college",
        ),
        ("who's my employer?", "which company do I work for?", "who pays my salary?"),
        (
            "My brother-in-law works for a huge company and hates every minute",
            "Who knew salary negotiations could be this awkward",
            "The company that fixed our roof did a terrible job",
        ),
        change=ChangeSpec(
            0.35,
            _change_employer,
            (
                "Handed in my notice, I start at {company} on Monday",
                "First week at {company} done, so much better than {old_company}",
            ),
            ("who do I work for now?",),
        ),
    ),
    FactSpec(
        "pet",
        _make_pet,
        (
            "We have {a_breed} called {pet}",
            "{pet}, my {breed}, {antic}",
            "I adopted {a_breed} from the rescue centre and named it {pet}",
            "My {breed} {pet} sleeps on my feet every night",
            "Our {species} {pet} is the real boss of the house",
        ),
        (
            "what's my {species} called?",
            "what's the name of my pet?",
            "what kind of animal do I have at home?",
        ),
        (
            "My friend {other_name}'s {species} is called {other_pet}, cutest thing ever",
            "There's a stray {species} hanging around the bins outside",
            "Watched a video of a {species} on a skateboard, made my day",
            "I can never remember the name of that actor from the heist film",
        ),
        weight=1.5,
    ),
    FactSpec(
        "sibling",
        _make_sibling,
        (
            "My {rel} {sib} is coming to stay for the weekend",
            "I've got {a_age_adj} {rel}, {sib}, who lives abroad",
            "{sib}, my {age_adj} {rel}, just got engaged!",
            "Growing up it was just me and my {rel} {sib} fighting over the TV remote",
        ),
        ("what's my {rel}'s name?", "do I have any siblings?"),
        (
            "My colleague's {rel} runs a bakery in town",
            "I can never remember names, it's embarrassing",
            "{other_name} from work has five siblings, can you imagine",
        ),
    ),
    FactSpec(
        "partner",
        _make_partner,
        (
            "My {rel} {partner} made the most amazing curry tonight",
            "{partner} and I have been together {years} years now",
            "I met {partner} at a friend's barbecue, love at first sight",
            "{partner} snores like a chainsaw but I wouldn't swap them",
        ),
        (
            "what's my {rel}'s name?",
            "who's my other half?",
            "who am I in a relationship with?",
        ),
        (
            "My best friend just broke up with her boyfriend",
            "Relationships are hard work sometimes",
            "Half the office is away, it's so quiet",
        ),
    ),
    FactSpec(
        "child",
        _make_child,
        (
            "My {rel} {kid} just turned {age}",
            "{kid} started at a new school this week, my {rel} is growing up too fast",
            "Took {kid} to the dentist today, my poor {rel} was so brave",
            "Parenting is exhausting, my {rel} {kid} never stops asking questions",
        ),
        ("what's my kid called?", "do I have any children?", "what's my {rel}'s name?"),
        (
            "The kids next door were screaming all afternoon",
            "Children's birthday parties are absolute chaos",
            "My friend's {rel} is off to university in September",
        ),
    ),
    FactSpec(
        "parent_job",
        _make_parent,
        (
            "My {rel} was a {pjob} for thirty years before retiring",
            "My {rel} spent {poss} whole career as a {pjob}",
            "My {rel} still tells stories about {poss} days as a {pjob}",
        ),
        (
            "what did my {qrel} do for work?",
            "what was my {qrel}'s job?",
            "what did my {qrel} do before retirement?",
        ),
        (
            "My friend's dad just retired and doesn't know what to do with himself",
            "Work was chaos, I did three people's jobs today",
        ),
    ),
    FactSpec(
        "favourite_food",
        _make_food,
        (
            "Nothing beats {food} on a Friday night",
            "I could eat {food} every single day",
            "My ultimate comfort meal is {food}, no contest",
            "If I get to choose what's for dinner, it's {food}, every time",
            "{food} is my favourite food in the whole world",
        ),
        (
            "what's my favourite food?",
            "what dish do I love most?",
            "what should you cook if you want to make me happy?",
        ),
        (
            "My favourite part of Sunday is the lie-in",
            "Food shopping took forever today",
            "The new café does {other_food}, it was fine, nothing special",
            "I had a sad sandwich at my desk for lunch",
        ),
    ),
    FactSpec(
        "disliked_food",
        _make_disliked,
        (
            "I can't stand {dfood}",
            "{dfood}? Disgusting, I pick it out of everything",
            "Anything with {dfood} in it goes straight back to the kitchen",
        ),
        (
            "what food do I hate?",
            "is there anything I refuse to eat?",
            "what should you never put on my plate?",
        ),
        (
            "I hate Mondays, always have",
            "My housemate refuses to eat anything green",
            "I ate way too much at the buffet",
        ),
    ),
    FactSpec(
        "allergy",
        _make_allergy,
        (
            "I'm allergic to {allergen}",
            "Even a tiny bit of {allergen} and I end up in A&E",
            "I carry an EpiPen everywhere because of the {allergen} thing",
        ),
        (
            "what am I allergic to?",
            "do I have any allergies?",
            "what could give me a bad reaction?",
            "what should I avoid for medical reasons?",
        ),
        (
            "My colleague is allergic to cats, so the office is a no-pet zone",
            "I avoid the motorway at rush hour",
            "The reaction to my new haircut at work was hilarious",
        ),
    ),
    FactSpec(
        "hobby",
        _make_hobby,
        (
            "I've really gotten into {hobby} lately",
            "{hobby_story}",
            "{hobby} is the only thing that switches my brain off after work",
        ),
        (
            "what do I do in my spare time?",
            "what's my hobby?",
            "how do I unwind at the weekend?",
            "what do I do for fun?",
        ),
        (
            "I never have any free time these days",
            "For fun my friends dragged me to karaoke, never again",
            "Spare keys are under the plant pot, note to self",
        ),
        weight=1.5,
    ),
    FactSpec(
        "sport",
        _make_sport,
        (
            "I play {sport} on {day}s with a few mates",
            "Twisted my ankle at {sport} last night, typical",
            "{day} nights are sacred, that's {sport} night",
        ),
        ("what sport do I play?", "how do I keep fit?", "what game do I play every week?"),
        (
            "Watched the {other_sport} on telly, what a match",
            "I really should do more exercise",
            "{day} is bin day, must not forget",
        ),
    ),
    FactSpec(
        "trip_plan",
        _make_trip,
        (
            "We're flying to {dest} in {month}!",
            "Booked two weeks in {dest} for {month}, can't wait",
            "Need to renew my passport before we go to {dest}",
        ),
        (
            "where am I going on holiday?",
            "what trip do I have coming up?",
            "what are my vacation plans?",
            "where am I flying off to?",
        ),
        (
            "My boss is going on holiday so the office will be quiet",
            "The trip to the dentist was painful",
            "{other_name} just got back from {other_dest} and loved it",
        ),
        weight=1.5,
    ),
    FactSpec(
        "goal",
        _make_goal,
        (),
        (
            "what am I working towards?",
            "what's my big goal at the moment?",
            "what am I trying to achieve this year?",
        ),
        (
            "My goal today is just to survive until five",
            "The match was decided by a goal in the last minute",
            "I'm working late tomorrow, ugh",
        ),
        weight=1.5,
    ),
    FactSpec(
        "lived_abroad",
        _make_abroad,
        (
            "I lived in {country} for {years} years teaching English",
            "Back when I worked on a farm in {country} I learned to drive a tractor",
            "My year in {country} after university changed my whole outlook",
        ),
        (
            "have I ever lived overseas?",
            "which country did I spend time in when I was younger?",
        ),
        (
            "My neighbour just emigrated, the house is up for sale",
            "I lived on instant noodles at uni",
            "Watched a documentary about {country}, it looked beautiful",
        ),
    ),
    FactSpec(
        "education",
        _make_education,
        (
            "I studied {subject} at {uni}",
            "My degree was in {subject}, not that I use it",
            "Did {subject} at {uni}, spent most of it in the pub",
            "I still have nightmares about my {subject} finals",
        ),
        ("what did I major in?", "what was my subject at uni?", "what did I study?"),
        (
            "I'm studying the new train timetable like it's an exam",
            "My nephew is choosing his university courses, so stressful",
        ),
    ),
    FactSpec(
        "opinion",
        _make_opinion,
        (),
        (),
        (
            "My opinion doesn't count for much at work",
            "How do people feel about the new bus lanes, I wonder",
        ),
        weight=1.5,
    ),
    FactSpec(
        "car",
        _make_car,
        (
            "I drive a {car_colour} {car}",
            "My old {car} failed its MOT again",
            "The {car} is making a weird rattling noise, garage on Monday",
        ),
        ("what car do I have?", "what vehicle do I own?", "what do I drive?"),
        (
            "The car park at the supermarket was rammed",
            "My neighbour's car alarm went off at 3am",
        ),
    ),
    FactSpec(
        "language",
        _make_language,
        (
            "I'm learning {lang} on Duolingo, 200-day streak",
            "My {lang} lessons are on Thursday evenings",
            "Trying to get my {lang} good enough to order dinner without pointing",
        ),
        (
            "which language am I studying?",
            "what foreign language am I trying to pick up?",
            "what language am I learning?",
        ),
        (
            "The language in that film was so crude",
            "Learning to use the new coffee machine at work is a whole course",
        ),
    ),
    FactSpec(
        "birthday",
        _make_birthday,
        (
            "My birthday's on {date}",
            "I was born on {date}, a proper {season} baby",
            "I'm turning {age} on {date}, don't remind me",
        ),
        ("when's my birthday?", "what date should you wish me many happy returns?"),
        (
            "It's my friend's birthday next week and I have no idea what to get her",
            "The date night was a disaster",
        ),
    ),
    FactSpec(
        "fear",
        _make_fear,
        (
            "I'm terrified of {fear}",
            "Anything to do with {fear} makes my heart race",
            "I've had a thing about {fear} since I was little, can't help it",
        ),
        ("what am I scared of?", "do I have any phobias?", "what frightens me?"),
        (
            "That horror film was so scary I slept with the light on",
            "My nephew is scared of the hoover",
        ),
    ),
    FactSpec(
        "diet",
        _make_diet,
        (),
        ("do I eat meat?", "what diet do I follow?", "are there foods I avoid on principle?"),
        (
            "My diet has been terrible this week, so many biscuits",
            "The butcher on the high street is closing down",
        ),
    ),
    FactSpec(
        "morning_drink",
        _make_drink,
        (),
        ("what's my usual morning drink?", "what do I like to have when I wake up?"),
        (
            "I woke up at four and couldn't get back to sleep",
            "Drinks after work on Friday, are you coming? Oh wait, you can't",
        ),
    ),
    FactSpec(
        "favourite_music",
        _make_band,
        (
            "I've had {band} on repeat all week",
            "Saw {band} live last year, best night of my life",
            "No one comes close to {band} for me",
            "Put {band} on in the car and sang the whole way home",
        ),
        ("what music am I into?", "who's my favourite artist?", "which musician do I love?"),
        (
            "The music at that wedding was awful",
            "My favourite podcast just ended, gutted",
            "Listened to an audiobook on the train instead of music for once",
        ),
        change=ChangeSpec(
            0.2,
            _change_band,
            (
                "Honestly I've gone off {old_band}, I'm all about {band} now",
                "{band} has completely taken over from {old_band} in my headphones",
            ),
        ),
    ),
    FactSpec(
        "favourite_film",
        _make_film,
        (
            "I've rewatched {film} like ten times",
            "{film} is the best thing ever put on screen, fight me",
            "Whenever I'm feeling low I put on {film}",
        ),
        ("what's my favourite movie?", "what film do I keep going back to?"),
        (
            "The cinema near us is closing down",
            "We watched some rubbish film on the plane",
            "My favourite actor is in a terrible advert now",
        ),
    ),
    FactSpec(
        "favourite_colour",
        _make_colour,
        (
            "I've always loved {colour}",
            "Half my wardrobe is {colour}, can't help myself",
            "Painted the bedroom {colour} and I'm obsessed",
            "If it comes in {colour}, I'm buying it",
            "{colour} has been my favourite colour since I was a kid",
        ),
        (
            "what's my favourite colour?",
            "what shade should you pick if you're buying me a jumper?",
        ),
        (
            "The colour of the sky this evening was unreal",
            "My favourite mug broke this morning",
        ),
    ),
)

# ------------------------------------------------------------------------------------------
# Filler: small talk, errands, opinions, little stories, questions to the assistant
# ------------------------------------------------------------------------------------------

# fmt: off
_F_SHORT = (
    "Morning!", "Hey, you there?", "Haha fair enough", "Ok cool", "Sorry, I got distracted",
    "Hang on, someone's at the door", "Right, where were we", "Yeah that makes sense",
    "Thanks, that helps", "Hmm, not sure about that", "Ha, nice one", "Anyway",
    "Let me think about it", "Good point actually", "Oh wow, really?", "No way", "That's so weird",
    "I'll be back in a bit", "Ugh, long day", "Night night",
)
_F_WEATHER = (
    "raining sideways", "weirdly warm", "grey and miserable", "freezing", "gorgeous and sunny",
    "so windy the bins blew over", "foggy all morning", "muggy and horrible",
)
_F_TIME = (
    "this morning", "today", "last night", "yesterday", "at lunchtime", "this afternoon",
    "on the way home", "earlier",
)
_F_PLACES = (
    "the supermarket", "the post office", "the gym", "the bus stop", "the bank", "the chemist",
    "the train station", "the park", "the garden centre", "the petrol station", "the library",
    "the corner shop",
)
_F_EVENTS = (
    "a man tried to pay with a voucher from 2009",
    "the self-checkout kept telling me there was an unexpected item",
    "I bumped into an old teacher of mine", "a toddler had a full meltdown over a balloon",
    "I got stuck behind the slowest queue in history",
    "the card machine was broken so I had to find cash",
    "someone complimented my jacket, made my day",
    "a pigeon walked straight in through the automatic doors",
    "I left my shopping list at home and forgot half of it",
    "the guy in front of me was paying entirely in coins",
    "I dropped a jar of pasta sauce and it went everywhere",
    "there was a busker playing the same song on a loop",
)
_F_THINGS = (
    "the new series of that baking show", "the price of bread", "the bus timetable",
    "self-checkouts", "open-plan offices", "true crime podcasts", "reality TV",
    "the new shopping centre", "group chats", "smart speakers", "fancy candles",
    "those electric scooters", "the local football club", "the new bike lanes", "oat milk",
    "online banking apps",
)
_F_VERDICTS = (
    "overrated", "underrated", "getting ridiculous", "actually quite nice", "a total scam",
    "brilliant", "fine I suppose", "more annoying than it needs to be", "strangely addictive",
)
_F_MEALS = (
    "beans on toast", "leftover curry", "a jacket potato", "cereal", "a cheese sandwich",
    "soup from a tin", "a massive salad", "instant noodles", "scrambled eggs", "a bagel",
)
# fmt: on
_F_MEALTIMES = ("lunch", "dinner", "breakfast", "tea")
# fmt: off
_F_CHORES = (
    "call the dentist", "put the bins out", "pay the electricity bill", "book an MOT",
    "buy more washing-up liquid", "return that parcel", "defrost the freezer",
    "send the birthday card", "water the plants", "renew the parking permit", "clean the oven",
    "back up my phone",
)
_F_SHOWS = (
    "a documentary about octopuses", "the new detective drama", "a cooking competition",
    "a nature programme about penguins", "an old episode of a quiz show", "a stand-up special",
    "some sci-fi thing everyone's talking about", "a property makeover show",
)
_F_REACTIONS = (
    "it was surprisingly good", "it was a bit slow", "I fell asleep halfway through",
    "the ending made no sense", "I cried, not going to lie", "it was pure rubbish but fun",
)
_F_TRIVIA = (
    "octopuses have three hearts", "honey never goes off", "bananas are berries",
    "a group of crows is called a murder", "wombat poo is cube-shaped",
    "the Eiffel Tower grows in summer", "sharks are older than trees",
    "sloths can hold their breath longer than dolphins", "Scotland's national animal is a unicorn",
    "there are more chess games than atoms in the universe",
)
_F_ASKS = (
    "Can you remind me what a haiku is?", "What's a good way to get rid of hiccups?",
    "How long should I boil an egg for?", "Is it normal for a boiler to make that noise?",
    "What's the difference between a crocodile and an alligator?",
    "How do I get red wine out of a carpet?", "Why is the sky blue again?",
    "What's a good word for someone who talks too much?", "How many teaspoons in a tablespoon?",
    "What rhymes with orange?", "Give me a fun fact", "Tell me a joke",
    "What day is it, I've lost track", "How far away is the moon?",
    "Any tips for falling asleep faster?",
)
_F_FEELINGS = (
    "I'm so tired, I slept really badly", "Feeling a bit low today, not sure why",
    "In a great mood for once", "My back is killing me", "I've got a headache coming on",
    "Bit stressed, lots going on", "Feeling weirdly productive today",
    "I think I'm coming down with a cold", "Had a lovely relaxing evening",
    "Can't concentrate on anything today",
)
_F_NEIGHBOURS = (
    "the neighbours", "the guy upstairs", "the people across the road", "the couple next door",
)
_F_NEIGHBOUR_DOINGS = (
    "are having their kitchen redone, the drilling never stops",
    "had a party until three in the morning", "left a passive-aggressive note about the recycling",
    "brought round a cake, which was nice", "are painting their fence a very bright yellow",
    "keep parking across our drive",
)
# fmt: on
_F_STORIES = (
    "So {time} at {place}, {event}",
    "You won't believe it, {time} at {place} {event}",
    "Funny thing happened at {place} {time}: {event}",
)


# Filler that is a template with slots: (up to this roll, the templates, each slot's pool in
# the order they are drawn).
_F_TEMPLATED: tuple[tuple[float, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]], ...]
_F_TEMPLATED = (
    (0.22, _F_STORIES, (("time", _F_TIME), ("place", _F_PLACES), ("event", _F_EVENTS))),
    (
        0.32,
        (
            "I think {thing} is {verdict}",
            "Honestly {thing}? {verdict}",
            "Is it just me or is {thing} {verdict}?",
        ),
        (("thing", _F_THINGS), ("verdict", _F_VERDICTS)),
    ),
    (
        0.42,
        (
            "Had {meal} for {mealtime}, living the dream",
            "Just {meal} for {mealtime} {time}, couldn't be bothered cooking",
            "{meal} for {mealtime} again, I need to go shopping",
        ),
        (("meal", _F_MEALS), ("mealtime", _F_MEALTIMES), ("time", _F_TIME)),
    ),
    (
        0.52,
        (
            "I need to remember to {chore}",
            "Note to self: {chore}",
            "Completely forgot to {chore} {time}",
            "Must {chore} before the weekend",
        ),
        (("chore", _F_CHORES), ("time", _F_TIME)),
    ),
    (
        0.62,
        ("Watched {show} {time}, {reaction}", "Put on {show} {time} and {reaction}"),
        (("show", _F_SHOWS), ("time", _F_TIME), ("reaction", _F_REACTIONS)),
    ),
    (
        0.70,
        ("The weather's been {w} all week", "Ugh, it's {w} again", "It was {w} {time}"),
        (("w", _F_WEATHER), ("time", _F_TIME)),
    ),
    (0.77, ("Did you know {t}?", "Apparently {t}, who knew"), (("t", _F_TRIVIA),)),
)


def _filler(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.10:
        return rng.choice(_F_SHORT)
    for up_to, templates, slots in _F_TEMPLATED:
        if kind < up_to:
            template = rng.choice(templates)  # drawn before the slots, in their order
            return template.format(**{name: rng.choice(pool) for name, pool in slots})
    if kind < 0.86:
        return rng.choice(_F_ASKS)
    if kind < 0.94:
        return rng.choice(_F_FEELINGS) + rng.choice(("", ", anyway", ", just saying", ", sorry"))
    return f"{rng.choice(_F_NEIGHBOURS).capitalize()} {rng.choice(_F_NEIGHBOUR_DOINGS)}"


# ------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _fmt(template: str, slots: Slots) -> str:
    return _cap(template.format(**slots))


@dataclass
class _Event:
    text: str
    role: str  # evidence | stale | distractor
    fact: int  # index into the user's facts, or -1
    lo: float  # where in the chat it may land (fraction of its length)
    hi: float


def _templates(value: object) -> tuple[str, ...]:
    assert isinstance(value, tuple) and all(isinstance(t, str) for t in value)
    return value


def _weighted_sample(rng: random.Random, specs: tuple[FactSpec, ...], k: int) -> list[FactSpec]:
    pool = list(specs)
    chosen: list[FactSpec] = []
    while pool and len(chosen) < k:
        spec = rng.choices(pool, weights=[s.weight for s in pool])[0]
        pool.remove(spec)
        chosen.append(spec)
    return chosen


def generate_user(
    index: int,
    seed: int = DEFAULT_SEED,
    *,
    utterances: tuple[int, int] = (200, 400),
    facts: tuple[int, int] = (15, 25),
) -> UserChat:
    rng = random.Random(f"retrieval-bench:{seed}:{index}")
    draw = _Draw(rng)
    specs = _weighted_sample(rng, FACT_SPECS, rng.randint(*facts))
    events: list[_Event] = []
    pending_questions: list[tuple[int, str, str, bool]] = []  # fact, text, type, changed
    for fact_no, spec in enumerate(specs):
        slots = spec.make(draw)
        statements = _templates(slots.pop("_statements", spec.statements))
        questions = _templates(slots.pop("_questions", spec.questions))
        changed = spec.change is not None and rng.random() < spec.change.probability
        order = rng.sample(range(len(statements)), len(statements))
        if changed:
            assert spec.change is not None
            events.append(_Event(_fmt(statements[order[0]], slots), "stale", fact_no, 0.02, 0.45))
            slots = spec.change.make(draw, slots)
            new = rng.choice(spec.change.statements)
            events.append(_Event(_fmt(new, slots), "evidence", fact_no, 0.55, 0.98))
            questions = questions + spec.change.extra_questions
        else:
            events.append(
                _Event(_fmt(statements[order[0]], slots), "evidence", fact_no, 0.02, 0.98)
            )
            if len(order) > 1 and rng.random() < 0.3:  # restated later, in other words
                text = _fmt(statements[order[1]], slots)
                events.append(_Event(text, "evidence", fact_no, 0.02, 0.98))
        if spec.distractors:
            n = min(len(spec.distractors), rng.randint(1, 2))
            for template in rng.sample(spec.distractors, n):
                events.append(_Event(_fmt(template, slots), "distractor", -1, 0.02, 0.98))
        n_q = min(len(questions), 1 if rng.random() < 0.5 else 2)
        for template in rng.sample(questions, n_q):
            pending_questions.append((fact_no, template.format(**slots), spec.name, changed))

    # Drop any event that repeats an earlier text (values must identify utterances).
    seen: set[str] = set()
    unique_events: list[_Event] = []
    for ev in events:
        if ev.text not in seen:
            seen.add(ev.text)
            unique_events.append(ev)
    events = unique_events

    length = max(rng.randint(*utterances), len(events) + 5)
    for ev in events:
        ev.lo = rng.uniform(ev.lo, ev.hi)  # reuse lo as the drawn position
    events.sort(key=lambda ev: ev.lo)
    positions = sorted(rng.sample(range(length), len(events)))
    texts: list[str] = [""] * length
    roles: list[str] = ["filler"] * length
    evidence: dict[int, list[int]] = {}
    stale: dict[int, list[int]] = {}
    for pos, ev in zip(positions, events, strict=True):
        texts[pos] = ev.text
        roles[pos] = ev.role
        if ev.role == "evidence":
            evidence.setdefault(ev.fact, []).append(pos)
        elif ev.role == "stale":
            stale.setdefault(ev.fact, []).append(pos)
    for pos in range(length):
        if roles[pos] != "filler":
            continue
        for _ in range(50):
            text = _filler(rng)
            if text not in seen:
                break
        else:
            text = f"{_filler(rng)} ({pos})"
        seen.add(text)
        texts[pos] = text

    questions_out = tuple(
        Question(
            text=_cap(text),
            fact_type=ftype,
            evidence=tuple(evidence[fact]),
            changed=chg,
            stale=tuple(stale.get(fact, ())) if chg else (),
        )
        for fact, text, ftype, chg in pending_questions
        if fact in evidence
    )
    return UserChat(
        identity=f"bench-user-{seed}-{index:03d}",
        utterances=tuple(texts),
        roles=tuple(roles),
        questions=questions_out,
    )


def generate_dataset(
    users: int = 30,
    seed: int = DEFAULT_SEED,
    *,
    utterances: tuple[int, int] = (200, 400),
    facts: tuple[int, int] = (15, 25),
) -> Dataset:
    """`users` chats with labelled questions; the same arguments always give the same data."""
    return Dataset(
        seed=seed,
        users=tuple(
            generate_user(i, seed, utterances=utterances, facts=facts) for i in range(users)
        ),
    )


# ------------------------------------------------------------------------------------------
# Describing the data
# ------------------------------------------------------------------------------------------

_STOP = frozenset(
    """a an the i i'm im me my mine you your yours we our us it its is am are was were be been
    do does did doing have has had what what's whats who who's whos where where's wheres when
    when's whens which how why of in on at to for from with by about as and or but if so that
    this these those there any some anything s ve ll d re m t not no can could should would
    will just at up out""".split()
)
_WORD = re.compile(r"\w+")


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def lexical_overlap_share(dataset: Dataset) -> float:
    """Share of questions sharing at least one content word with one of their evidence."""
    total = shared = 0
    for user in dataset.users:
        for q in user.questions:
            total += 1
            qw = content_words(q.text)
            if any(qw & content_words(user.utterances[i]) for i in q.evidence):
                shared += 1
    return shared / total if total else 0.0


# ------------------------------------------------------------------------------------------
# The benchmark's data: the generated set and the hand-written sets, split by caller
# ------------------------------------------------------------------------------------------

DATA_DIR = Path(__file__).resolve().parent / "retrieval_data"
TUNING = "tuning"
HELD_OUT = "held-out"
SPLITS = (TUNING, HELD_OUT)

CONVERSATIONAL = "conversational"
PARAPHRASE = "paraphrase"
MULTILINGUAL = "multilingual"
UPDATES = "updates"
SET_NAMES = (CONVERSATIONAL, PARAPHRASE, MULTILINGUAL, UPDATES)
# The hand-written sets and their files in bench/retrieval_data/ (the format: see
# bench/retrieval_data/paraphrase.txt).
HANDWRITTEN_FILES: dict[str, tuple[str, ...]] = {
    PARAPHRASE: ("paraphrase.txt",),
    MULTILINGUAL: (
        "multilingual_es.txt",
        "multilingual_hi.txt",
        "multilingual_ur.txt",
        "multilingual_ru.txt",
    ),
    UPDATES: ("updates.txt",),
}
# The generated set as the benchmark uses it by default, frozen: its parameters, the checksum
# of what the generator gives for them, and each caller's split.
FROZEN_SPLIT_FILE = "conversational_split.txt"
DEFAULT_USERS = 30
DEFAULT_UTTERANCES = (200, 400)
DEFAULT_FACTS = (15, 25)
_SPLIT_SALT = "issue-11 retrieval split v1:"


@dataclass(frozen=True, slots=True)
class Turn:
    """One thing the caller said."""

    text: str
    role: str  # fact | smalltalk | distractor
    fact: str = ""  # the fact it states (its label without the version), for role "fact"
    context: str = ""  # what the agent said just before (empty: nothing, or not recorded)
    call: int = 0  # which of the caller's calls it was said in, from 0


@dataclass(frozen=True, slots=True)
class CallerQuestion:
    """A question the caller asks later, and the turns that answer it."""

    text: str
    qtype: str
    answers: tuple[int, ...]  # indexes into the caller's turns; any one answers it
    superseded: tuple[int, ...] = ()  # turns stating an older value of the fact (updates)


@dataclass(frozen=True, slots=True)
class Caller:
    set_name: str
    identity: str
    language: str  # ISO 639-1
    split: str  # tuning | held-out
    turns: tuple[Turn, ...]
    questions: tuple[CallerQuestion, ...]


def generated_split(identity: str) -> str:
    """The split of a generated caller: a hash of its identity alone (so it never depends on
    which other callers were generated), fixed before any tuning for issue 11."""
    digest = hashlib.sha256((_SPLIT_SALT + identity).encode()).digest()
    return HELD_OUT if digest[0] & 1 else TUNING


def callers_from_generated(dataset: Dataset) -> tuple[Caller, ...]:
    """The generated chats as callers of the benchmark: English, one call each."""
    roles = {"filler": "smalltalk", "evidence": "fact", "stale": "fact", "distractor": "distractor"}
    callers = []
    for user in dataset.users:
        callers.append(
            Caller(
                set_name=CONVERSATIONAL,
                identity=user.identity,
                language="en",
                split=generated_split(user.identity),
                turns=tuple(
                    Turn(text=text, role=roles[role])
                    for text, role in zip(user.utterances, user.roles, strict=True)
                ),
                questions=tuple(
                    CallerQuestion(
                        text=q.text, qtype=q.fact_type, answers=q.evidence, superseded=q.stale
                    )
                    for q in user.questions
                ),
            )
        )
    return tuple(callers)


# -- the hand-written format -------------------------------------------------------------------


class DataFormatError(ValueError):
    """A hand-written data file does not follow the format (bench/retrieval_data/paraphrase.txt)."""


_CALLER_LINE = re.compile(r"^@caller (\S+) lang=([a-z]{2}) split=(tuning|held-out)$")
_LABEL = r"[a-z_]+(?:\.\d+)?"
_FACT_LINE = re.compile(rf"^({_LABEL})(?:@(\d+))?: (.+)$")
_QUESTION_LINE = re.compile(rf"^\? ({_LABEL}(?: {_LABEL})*): (.+)$")


@dataclass
class _CallerDraft:
    identity: str
    language: str
    split: str
    turns: list[Turn] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # per turn: its fact's version, or 0
    questions: list[tuple[int, tuple[str, ...], str]] = field(default_factory=list)
    call: int = 0
    context: str = ""

    def add_turn(self, turn: Turn, version: int = 0) -> None:
        self.turns.append(turn)
        self.versions.append(version)
        self.context = ""


def _answers_of(draft: _CallerDraft, labels: tuple[str, ...], where: str) -> CallerQuestion:
    answers: list[int] = []
    superseded: list[int] = []
    for label in labels:
        turns = [i for i, t in enumerate(draft.turns) if t.fact == label]
        if not turns:
            raise DataFormatError(f"{where}: no line states the fact {label!r}")
        versions = {draft.versions[i] for i in turns}
        if versions != {0} and 0 in versions:
            raise DataFormatError(f"{where}: the fact {label!r} mixes versioned lines and not")
        latest = max(versions)
        answers += [i for i in turns if draft.versions[i] == latest]
        superseded += [i for i in turns if draft.versions[i] != latest]
    return CallerQuestion(
        text="",
        qtype=labels[0].split(".")[0],
        answers=tuple(sorted(answers)),
        superseded=tuple(sorted(superseded)),
    )


def _finish(draft: _CallerDraft, set_name: str, where: str) -> Caller:
    if draft.context:
        raise DataFormatError(f"{where}: an agent line (>) ends caller {draft.identity}")
    texts = [t.text for t in draft.turns]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise DataFormatError(f"{where}: caller {draft.identity} says {repeated[0]!r} twice")
    questions = []
    for line_no, labels, text in draft.questions:
        question = _answers_of(draft, labels, f"{where}:{line_no}")
        questions.append(
            CallerQuestion(text, question.qtype, question.answers, question.superseded)
        )
    if not questions:
        raise DataFormatError(f"{where}: caller {draft.identity} asks no question")
    return Caller(
        set_name=set_name,
        identity=draft.identity,
        language=draft.language,
        split=draft.split,
        turns=tuple(draft.turns),
        questions=tuple(questions),
    )


def parse_handwritten(text: str, set_name: str, *, source: str = "<data>") -> tuple[Caller, ...]:
    """The callers of one hand-written data file (format: bench/retrieval_data/paraphrase.txt)."""
    callers: list[Caller] = []
    draft: _CallerDraft | None = None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = unicodedata.normalize("NFC", raw.strip())
        where = f"{source}:{line_no}"
        if not line or line.startswith("#"):
            continue
        if m := _CALLER_LINE.match(line):
            if draft is not None:
                callers.append(_finish(draft, set_name, source))
            draft = _CallerDraft(identity=m.group(1), language=m.group(2), split=m.group(3))
            continue
        if draft is None:
            raise DataFormatError(f"{where}: a line before the first @caller")
        if line == "== call":
            draft.call += 1
        elif line.startswith("> "):
            draft.context = line[2:].strip()
        elif line.startswith("- ") or line.startswith("~ "):
            role = "smalltalk" if line[0] == "-" else "distractor"
            draft.add_turn(Turn(line[2:].strip(), role, "", draft.context, draft.call))
        elif m := _QUESTION_LINE.match(line):
            draft.questions.append((line_no, tuple(m.group(1).split()), m.group(2).strip()))
        elif m := _FACT_LINE.match(line):
            version = int(m.group(2) or 0)
            turn = Turn(m.group(3).strip(), "fact", m.group(1), draft.context, draft.call)
            draft.add_turn(turn, version)
        else:
            raise DataFormatError(f"{where}: not a line of the format: {line[:60]!r}")
    if draft is not None:
        callers.append(_finish(draft, set_name, source))
    identities = [c.identity for c in callers]
    if len(set(identities)) != len(identities):
        raise DataFormatError(f"{source}: a caller id is used twice")
    return tuple(callers)


def load_handwritten(set_name: str, data_dir: Path = DATA_DIR) -> tuple[Caller, ...]:
    """Every caller of one hand-written set, in file order."""
    callers: list[Caller] = []
    for name in HANDWRITTEN_FILES[set_name]:
        path = data_dir / name
        callers += parse_handwritten(path.read_text(encoding="utf-8"), set_name, source=name)
    return tuple(callers)


# -- freezing ----------------------------------------------------------------------------------


def callers_digest(callers: Sequence[Caller]) -> str:
    """sha256 of everything the benchmark reads from `callers` (texts, labels, splits)."""
    h = hashlib.sha256()
    for c in callers:
        h.update(f"C\t{c.set_name}\t{c.identity}\t{c.language}\t{c.split}\n".encode())
        for t in c.turns:
            h.update(f"T\t{t.role}\t{t.fact}\t{t.call}\t{t.context}\t{t.text}\n".encode())
        for q in c.questions:
            h.update(f"Q\t{q.qtype}\t{q.answers}\t{q.superseded}\t{q.text}\n".encode())
    return h.hexdigest()


def split_digest(callers: Sequence[Caller]) -> str:
    """sha256 of which caller of which set is in which split (order-independent)."""
    lines = sorted(f"{c.set_name}\t{c.identity}\t{c.split}" for c in callers)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FrozenSplit:
    """The generated set as frozen in bench/retrieval_data/conversational_split.txt."""

    seed: int
    users: int
    utterances: tuple[int, int]
    facts: tuple[int, int]
    digest: str  # callers_digest of the generated callers
    splits: dict[str, str]  # identity -> split


def read_frozen_split(data_dir: Path = DATA_DIR) -> FrozenSplit:
    params: dict[str, str] = {}
    splits: dict[str, str] = {}
    for raw in (data_dir / FROZEN_SPLIT_FILE).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            params[key.strip()] = value.strip()
        else:
            identity, split = line.split()
            splits[identity] = split

    def pair(text: str) -> tuple[int, int]:
        lo, hi = text.split("-")
        return int(lo), int(hi)

    return FrozenSplit(
        seed=int(params["seed"]),
        users=int(params["users"]),
        utterances=pair(params["utterances"]),
        facts=pair(params["facts"]),
        digest=params["sha256"],
        splits=splits,
    )


def write_frozen_split(callers: Sequence[Caller], path: Path, *, seed: int) -> None:
    """Write the frozen split of the default generated set (done once, before any tuning)."""
    lines = [
        "# The generated conversational set of the retrieval benchmark, frozen on 2026-11-30",
        "# BEFORE any tuning of search for issue 11. Rule: never changed once tuning starts.",
        "# The split of a caller is a hash of its identity (bench/retrieval_dataset.py,",
        "# generated_split); sha256 is the checksum of what the generator gives for these",
        "# parameters (callers_digest): the benchmark refuses to run on the default set when the",
        "# generator no longer gives it. Held-out callers are never used to choose anything.",
        f"seed = {seed}",
        f"users = {len(callers)}",
        f"utterances = {DEFAULT_UTTERANCES[0]}-{DEFAULT_UTTERANCES[1]}",
        f"facts = {DEFAULT_FACTS[0]}-{DEFAULT_FACTS[1]}",
        f"sha256 = {callers_digest(callers)}",
        "",
    ]
    lines += [f"{c.identity} {c.split}" for c in callers]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class FrozenDataChanged(RuntimeError):
    """The default generated set is no longer what was frozen before tuning."""


def conversational_callers(
    users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    *,
    utterances: tuple[int, int] = DEFAULT_UTTERANCES,
    facts: tuple[int, int] = DEFAULT_FACTS,
    data_dir: Path = DATA_DIR,
) -> tuple[tuple[Caller, ...], bool]:
    """The generated callers, and whether they are the frozen default set (checked against its
    checksum and its split file; raises `FrozenDataChanged` when they no longer match)."""
    callers = callers_from_generated(
        generate_dataset(users, seed, utterances=utterances, facts=facts)
    )
    frozen = read_frozen_split(data_dir)
    if (seed, users, utterances, facts) != (
        frozen.seed,
        frozen.users,
        frozen.utterances,
        frozen.facts,
    ):
        return callers, False
    if (
        callers_digest(callers) != frozen.digest
        or {c.identity: c.split for c in callers} != frozen.splits
    ):
        raise FrozenDataChanged(
            "the generator no longer gives the conversational set frozen in "
            f"bench/retrieval_data/{FROZEN_SPLIT_FILE} (seed {seed}, {users} users): restore the "
            "generator; the frozen set and its split must not change once tuning starts"
        )
    return callers, True
