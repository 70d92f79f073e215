"""Capture: every user message becomes memories in the right category, under the right key.

Real sentences throughout. The end-to-end tests go through the real memory manager and the
real SQLite store, because "a new value replaces the old one" is only true if the keys the
capture produces meet the store's `(user_id, category, key)` upsert.
"""

from __future__ import annotations

import re
import time

import pytest

from caller_memory import memory_manager, session_user
from caller_memory.capture.rule_based import (
    CapturedMemory,
    categorize,
    extract_memories,
    slugify,
    stable_key_category,
)
from caller_memory.types import MemoryCategory, MemoryKind
from caller_memory.validation import MAX_KEY_LENGTH, validate_key, validate_value

C = MemoryCategory
PRES, FACT, REL, PREF = C.PRESENTATION, C.FACT, C.RELATIONSHIP, C.PREFERENCE

UTTERANCE_KEY = re.compile(r"^utterance_\d+_[0-9a-f]{8}$")


def facts(text: str) -> set[tuple[MemoryCategory, str, str]]:
    """The stable facts (not the utterance) a message yields."""
    return {
        (m.category, m.key, m.value)
        for m in extract_memories(text, now_ms=1)
        if m.kind is MemoryKind.FACT
    }


def utterances(text: str) -> list[CapturedMemory]:
    found = [m for m in extract_memories(text, now_ms=1) if m.kind is MemoryKind.UTTERANCE]
    assert all(UTTERANCE_KEY.match(m.key) for m in found)  # the kind and the key agree
    return found


# -- every category is reachable ------------------------------------------------------------

CATEGORY_CASES = [
    # PRESENTATION: never produced by the original rules.
    ("My name is Sam", PRES),
    ("Hi, I'm Sam!", PRES),
    ("Please call me Liz", PRES),
    ("My pronouns are they/them", PRES),
    ("Can you call me Sam?", PRES),
    # CAMPAIGNS
    ("Our D&D campaign starts again on Friday", C.CAMPAIGNS),
    ("I'm the dungeon master for a group of friends", C.CAMPAIGNS),
    ("In our campaign my character is a half-elf rogue", C.CAMPAIGNS),
    # LORE: never produced by the original rules.
    ("In my world, dragons are afraid of salt", C.LORE),
    ("The legend says the kingdom of Eldoria fell in a single night", C.LORE),
    ("Once upon a time there was a fox who could talk", C.LORE),
    # GOAL
    ("My goal is to run a marathon", C.GOAL),
    ("I want to learn Spanish", C.GOAL),
    ("I'm trying to save money for a house", C.GOAL),
    # PLAN
    ("I'm going to visit my parents next weekend", C.PLAN),
    ("I'll call my mum tomorrow", C.PLAN),
    ("We're planning a trip to Japan in May", C.PLAN),
    # RELATIONSHIP
    ("My sister's name is Ana", REL),
    ("I have two kids", REL),
    ("I'm married to Tom", REL),
    ("My dog Rex is asleep on the sofa", REL),
    # FACT
    ("I'm from Leeds", FACT),
    ("I work as a nurse", FACT),
    ("I'm 34", FACT),
    ("I'm a software engineer", FACT),
    ("It rained all day here", FACT),
    # PREFERENCE: "I prefer" was an INTEREST in the original.
    ("I prefer tea", PREF),
    ("I prefer tea to coffee", PREF),
    ("I'd rather you kept your answers short", PREF),
    ("I can't stand cilantro", PREF),
    ("My favourite colour is blue", PREF),
    ("I hate jazz", PREF),
    ("I'm not a big fan of horror films", PREF),
    # OPINION
    ("I think pineapple on pizza is overrated", C.OPINION),
    ("In my opinion the ending was rushed", C.OPINION),
    ("I reckon the new Batman film is underrated", C.OPINION),
    # INTEREST
    ("I love jazz", C.INTEREST),
    ("I'm really into astronomy", C.INTEREST),
    ("My hobby is knitting", C.INTEREST),
    ("I play the guitar", C.INTEREST),
    # EXPERIENCE
    ("Yesterday I went to the beach", C.EXPERIENCE),
    ("I visited Rome last summer", C.EXPERIENCE),
    ("When I was a kid I used to climb trees", C.EXPERIENCE),
]


@pytest.mark.parametrize(("text", "category"), CATEGORY_CASES)
def test_category_of_a_real_sentence(text: str, category: MemoryCategory) -> None:
    assert categorize(text) is category
    [utterance] = utterances(text)
    assert utterance.category is category


def test_every_category_is_reachable() -> None:
    assert {category for _, category in CATEGORY_CASES} == set(MemoryCategory)


# -- stable facts: one rule, one key, one clean value --------------------------------------

STABLE_CASES = [
    # name and pronouns
    ("My name is Sam", {(PRES, "name", "Sam")}),
    ("my name is sam", {(PRES, "name", "Sam")}),
    ("My name's Sam Smith", {(PRES, "name", "Sam Smith")}),
    ("Call me Sam, please", {(PRES, "name", "Sam")}),
    ("You can call me Liz", {(PRES, "name", "Liz")}),
    ("I go by Alex", {(PRES, "name", "Alex")}),
    ("Hi, I'm Sam!", {(PRES, "name", "Sam")}),
    ("I'm Sam", {(PRES, "name", "Sam")}),
    ("Hello, it's Sam", {(PRES, "name", "Sam")}),
    ("This is Sam speaking", {(PRES, "name", "Sam")}),
    ("Maya here, just so you know who you're chatting with", {(PRES, "name", "Maya")}),
    ("I'm Connor, by the way, I don't think I ever said", {(PRES, "name", "Connor")}),
    ("Tom, my name is Sam", {(PRES, "name", "Sam")}),
    ("Could you call me Sam from now on?", {(PRES, "name", "Sam")}),
    ("Remember that my name is Sam.", {(PRES, "name", "Sam")}),
    ("My nickname is Lizzy", {(PRES, "nickname", "Lizzy")}),
    ("My pronouns are she/her", {(PRES, "pronouns", "she/her")}),
    ("my pronouns are they and them", {(PRES, "pronouns", "they/them")}),
    ("I use they/them pronouns", {(PRES, "pronouns", "they/them")}),
    # favourites: British and US spellings, colour/color, film/movie are one key each
    ("My favourite colour is blue", {(PREF, "favorite_color", "blue")}),
    ("my favorite color is red.", {(PREF, "favorite_color", "red")}),
    ("My favourite colours are blue and green", {(PREF, "favorite_color", "blue and green")}),
    ("Blue is my favourite colour", {(PREF, "favorite_color", "Blue")}),
    (
        "Burgundy has been my favourite colour since I was a kid",
        {(PREF, "favorite_color", "Burgundy")},
    ),
    (
        "Mac and cheese is my favourite food in the whole world",
        {(PREF, "favorite_food", "Mac and cheese")},
    ),
    ("My favorite food is sushi", {(PREF, "favorite_food", "sushi")}),
    ("my favourite film is Alien", {(PREF, "favorite_movie", "Alien")}),
    ("My favourite movie is Alien", {(PREF, "favorite_movie", "Alien")}),
    ("my fave kind of music is jazz", {(PREF, "favorite_music", "jazz")}),
    ("My favourite band is The Beatles", {(PREF, "favorite_band", "The Beatles")}),
    ("Well, I think my favourite food is sushi", {(PREF, "favorite_food", "sushi")}),
    # home town, where the caller lives, birthplace
    ("I'm from Leeds", {(FACT, "home_town", "Leeds")}),
    ("I'm originally from Leeds", {(FACT, "home_town", "Leeds")}),
    ("I come from Poland", {(FACT, "home_town", "Poland")}),
    ("I grew up in Porto", {(FACT, "home_town", "Porto")}),
    ("My home town is York", {(FACT, "home_town", "York")}),
    ("My hometown is New York City", {(FACT, "home_town", "New York City")}),
    ("I'm from the Netherlands", {(FACT, "home_town", "the Netherlands")}),
    ("I live in Berlin", {(FACT, "lives_in", "Berlin")}),
    ("I live in Berlin now", {(FACT, "lives_in", "Berlin")}),
    ("I live in Berlin with my wife and kids", {(FACT, "lives_in", "Berlin")}),
    ("I live in London, in Camden", {(FACT, "lives_in", "London")}),
    ("My flat in Auckland is tiny but the view is amazing", {(FACT, "lives_in", "Auckland")}),
    ("We finally moved to Leicester! Boxes everywhere", {(FACT, "lives_in", "Leicester")}),
    ("I moved to Lisbon two years ago", {(FACT, "lives_in", "Lisbon")}),
    ("I've lived in Berlin for ten years", {(FACT, "lives_in", "Berlin")}),
    ("We live in Bosnia and Herzegovina", {(FACT, "lives_in", "Bosnia and Herzegovina")}),
    ("I live in Newcastle upon Tyne", {(FACT, "lives_in", "Newcastle upon Tyne")}),
    ("I'm from the north of England", {(FACT, "home_town", "the north of England")}),
    ("i'm from south london", {(FACT, "home_town", "south london")}),
    (
        "I'm from Leeds originally, but I live in Berlin now",
        {(FACT, "home_town", "Leeds"), (FACT, "lives_in", "Berlin")},
    ),
    (
        "I was born in Leeds in 1990",
        {(FACT, "birthplace", "Leeds"), (FACT, "birth_year", "1990")},
    ),
    # job and employer
    ("I work as a nurse", {(FACT, "job", "nurse")}),
    ("I'm a software engineer", {(FACT, "job", "software engineer")}),
    ("I am an accountant", {(FACT, "job", "accountant")}),
    ("I'm a nurse by trade", {(FACT, "job", "nurse")}),
    ("My job? I'm a journalist, have been for nine years", {(FACT, "job", "journalist")}),
    ("I'm a retired teacher", {(FACT, "job", "retired teacher")}),
    ("I'm retired now", {(FACT, "job", "retired")}),
    ("I just retired", {(FACT, "job", "retired")}),
    ("I'm self-employed", {(FACT, "job", "self-employed")}),
    ("My job title is senior software engineer", {(FACT, "job", "senior software engineer")}),
    ("I work for myself", {(FACT, "job", "self-employed")}),
    ("I work at Acme", {(FACT, "employer", "Acme")}),
    ("I work for the council", {(FACT, "employer", "the council")}),
    (
        "I'm a software engineer at Google",
        {(FACT, "job", "software engineer"), (FACT, "employer", "Google")},
    ),
    (
        "I work as a nurse at St. Mary's hospital",
        {(FACT, "job", "nurse"), (FACT, "employer", "St. Mary's hospital")},
    ),
    (
        "I'm currently working at Acme Corp as a product manager",
        {(FACT, "job", "product manager"), (FACT, "employer", "Acme Corp")},
    ),
    (
        "I'm a student at Leeds University",
        {(FACT, "job", "student"), (FACT, "school", "Leeds University")},
    ),
    # age, birthday, diet, allergies
    ("I'm 34", {(FACT, "age", "34")}),
    ("I'm 34 years old", {(FACT, "age", "34")}),
    ("I'm thirty-four", {(FACT, "age", "34")}),
    ("I just turned 40", {(FACT, "age", "40")}),
    ("I turned 40 last week", {(FACT, "age", "40")}),
    ("My age is 34", {(FACT, "age", "34")}),
    ("I'm 34, married, with two kids", {(FACT, "age", "34")}),
    ("My birthday is March 3rd", {(FACT, "birthday", "March 3rd")}),
    (
        "I was born on the 15th of October, a proper autumn baby",
        {(FACT, "birthday", "15th of October")},
    ),
    ("My birthday's on the 3rd of March", {(FACT, "birthday", "3rd of March")}),
    (
        "I was born on March 3rd, 1990",
        {(FACT, "birthday", "March 3rd"), (FACT, "birth_year", "1990")},
    ),
    ("Just so you know, I'm vegan.", {(FACT, "diet", "vegan")}),
    ("I'm a vegetarian", {(FACT, "diet", "vegetarian")}),
    ("I went vegetarian last year and I feel so much better", {(FACT, "diet", "vegetarian")}),
    ("I have a severe nut allergy", {(FACT, "allergy_nut", "allergic to nut")}),
    (
        "I'm allergic to peanuts and shellfish",
        {
            (FACT, "allergy_peanuts", "allergic to peanuts"),
            (FACT, "allergy_shellfish", "allergic to shellfish"),
        },
    ),
    # people in the caller's life and their names
    ("My sister's name is Ana", {(REL, "sister_name", "Ana")}),
    ("Remember that my sister's name is Ana.", {(REL, "sister_name", "Ana")}),
    ("My wife is called Mia", {(REL, "wife_name", "Mia")}),
    ("My sister is Ana", {(REL, "sister_name", "Ana")}),
    ("My cat's called Luna", {(REL, "cat_name", "Luna")}),
    ("my dog's name is rex", {(REL, "dog_name", "Rex")}),
    ("My dog Rex is asleep on the sofa", {(REL, "dog_name", "Rex")}),
    ("Ana is my sister's name", {(REL, "sister_name", "Ana")}),
    ("My mum's name is Linda", {(REL, "mother_name", "Linda")}),
    ("My older sister is called Ana", {(REL, "older_sister_name", "Ana")}),
    ("My big brother Tom lives in Madrid", {(REL, "older_brother_name", "Tom")}),
    ("My best friend Jake is coming over", {(REL, "best_friend_name", "Jake")}),
    ("My wife, Mia, is a doctor", {(REL, "wife_name", "Mia")}),
    ("Daniel, my younger brother, just got engaged!", {(REL, "younger_brother_name", "Daniel")}),
    ("Milo, my lop-eared bunny, chewed my charger", {(REL, "rabbit_name", "Milo")}),
    ("My lop-eared bunny Milo sleeps on my feet", {(REL, "rabbit_name", "Milo")}),
    (
        "Growing up it was just me and my brother Kwame fighting over the remote",
        {(REL, "brother_name", "Kwame")},
    ),
    (
        "I've got a younger brother, Kwame, who lives abroad",
        {(REL, "has_brother", "has a younger brother"), (REL, "younger_brother_name", "Kwame")},
    ),
    ("My boss Mr Smith is a nightmare", {(REL, "boss_name", "Mr Smith")}),
    (
        "My son Leo and my daughter Mia are at school",
        {(REL, "son_name", "Leo"), (REL, "daughter_name", "Mia")},
    ),
    # friends are keyed per person: a second friend does not replace the first
    (
        "My friend Tom is visiting, and my friend Jake too",
        {(REL, "friend_tom", "Tom"), (REL, "friend_jake", "Jake")},
    ),
    ("I have a sister", {(REL, "has_sister", "has a sister")}),
    ("I have an older brother", {(REL, "has_brother", "has an older brother")}),
    ("I've got two kids", {(REL, "has_children", "has two kids")}),
    (
        "I have two sisters and a brother",
        {(REL, "has_sister", "has two sisters"), (REL, "has_brother", "has a brother")},
    ),
    ("I have a dog called Rex", {(REL, "has_dog", "has a dog"), (REL, "dog_name", "Rex")}),
    ("I have a sister who lives in Spain", {(REL, "has_sister", "has a sister")}),
    ("I don't have any siblings", {(REL, "has_siblings", "has no siblings")}),
    ("I'm an only child", {(REL, "has_siblings", "has no siblings")}),
    ("I have no kids", {(REL, "has_children", "has no kids")}),
    ("I don't have a dog anymore", {(REL, "has_dog", "has no dog")}),
    ("I'm single", {(REL, "marital_status", "single")}),
    ("I'm not married", {(REL, "marital_status", "not married")}),
    (
        "I got engaged to Chris last month",
        {(REL, "marital_status", "engaged"), (REL, "fiance_name", "Chris")},
    ),
    (
        "I'm married to Tom",
        {(REL, "marital_status", "married"), (REL, "spouse_name", "Tom")},
    ),
    # likes and dislikes: one key per item, the value says the current sentiment
    ("I love jazz", {(PREF, "opinion_of_jazz", "loves jazz")}),
    ("I like jazz", {(PREF, "opinion_of_jazz", "likes jazz")}),
    ("I really enjoy jazz", {(PREF, "opinion_of_jazz", "likes jazz")}),
    ("I've always loved jazz", {(PREF, "opinion_of_jazz", "loves jazz")}),
    ("I'm a big fan of jazz", {(PREF, "opinion_of_jazz", "likes jazz")}),
    ("I'm really into jazz", {(PREF, "opinion_of_jazz", "likes jazz")}),
    ("I've really gotten into pottery lately", {(PREF, "opinion_of_pottery", "likes pottery")}),
    ("I hate Mondays, always have", {(PREF, "opinion_of_mondays", "hates Mondays")}),
    ("I hate jazz", {(PREF, "opinion_of_jazz", "hates jazz")}),
    ("I can't stand jazz", {(PREF, "opinion_of_jazz", "hates jazz")}),
    ("I dislike jazz", {(PREF, "opinion_of_jazz", "dislikes jazz")}),
    ("I don't like jazz", {(PREF, "opinion_of_jazz", "dislikes jazz")}),
    ("I don't like jazz anymore", {(PREF, "opinion_of_jazz", "dislikes jazz")}),
    ("I've never liked jazz", {(PREF, "opinion_of_jazz", "dislikes jazz")}),
    ("I'm not a fan of jazz", {(PREF, "opinion_of_jazz", "dislikes jazz")}),
    ("I love the Beatles", {(PREF, "opinion_of_beatles", "loves the Beatles")}),
    ("I'm a huge Taylor Swift fan", {(PREF, "opinion_of_taylor_swift", "likes Taylor Swift")}),
    ("I prefer tea", {(PREF, "opinion_of_tea", "prefers tea")}),
    ("I prefer tea to coffee", {(PREF, "opinion_of_tea", "prefers tea to coffee")}),
    ("I like tea more than coffee", {(PREF, "opinion_of_tea", "likes tea more than coffee")}),
    ("I like to swim", {(PREF, "opinion_of_swim", "likes to swim")}),
    (
        "I love dogs, especially when they're puppies",
        {(PREF, "opinion_of_dogs", "loves dogs")},
    ),
    (
        "I love jazz but hate rap",
        {(PREF, "opinion_of_jazz", "loves jazz"), (PREF, "opinion_of_rap", "hates rap")},
    ),
    (
        "I enjoy reading, cooking, and gardening",
        {
            (PREF, "opinion_of_reading", "likes reading"),
            (PREF, "opinion_of_cooking", "likes cooking"),
            (PREF, "opinion_of_gardening", "likes gardening"),
        },
    ),
    # several facts in one message
    (
        "Hey there! My name's Sam and I'm from Leeds.",
        {(PRES, "name", "Sam"), (FACT, "home_town", "Leeds")},
    ),
    ("I'm Sam and I'm a nurse", {(PRES, "name", "Sam"), (FACT, "job", "nurse")}),
    ("I'm from Leeds, where are you from?", {(FACT, "home_town", "Leeds")}),
    ("My name is Sam, what's yours?", {(PRES, "name", "Sam")}),
]


@pytest.mark.parametrize(("text", "expected"), STABLE_CASES)
def test_stable_facts_of_a_real_sentence(
    text: str, expected: set[tuple[MemoryCategory, str, str]]
) -> None:
    assert facts(text) == expected


# -- what must not match ----------------------------------------------------------------------

NO_FACT_CASES = [
    # "I'm X" is a name only in a clear self-introduction
    "I'm tired",
    "I'm going",
    "I'm going to the shops",
    "I'm British",
    "I'm Italian",
    "I'm Sam's mum",
    "It's Monday",
    "I'm a bit tired",
    # a job needs a job: these are not one
    "I'm a morning person",
    "I'm a mother of two",
    "I'm a Leo",
    "I'm a big reader",
    "I think I'm a pretty good cook",
    "My job is a nightmare",
    "my job is boring",
    "I'm not a nurse",
    # negations
    "I'm not from London",
    "my name isn't Bob",
    "My name is not Bob",
    "my favourite colour isn't blue anymore",
    "My favourite colour is not blue",
    "I don't live in Berlin anymore",
    "I no longer live in Berlin",
    "I'm not allergic to anything",
    # the past, hedges, reported speech
    "I used to live in Berlin",
    "I used to love jazz",
    "my favourite colour used to be blue",
    "Maybe I like jazz",
    "My friend says my name is Bob",
    "When I was young I loved jazz",
    # places that are not places, employers that are not employers
    "I'm from a big family",
    "I'm from around here",
    "I work from home",
    "I work at home",
    "I'm staying in Paris this week",
    # "call me" that is not a name
    "call me back",
    "Call me crazy",
    "I go by bus",
    # likes about things that are not a taste
    "I love you",
    "I like it when you sing",
    "I love that idea",
    "I like your voice",
    "I love talking to you",
    "I hate to say it but you're right",
    "I love my wife",
    "I'd like a coffee",
    # dates that are not a birthday
    "My birthday is next week",
    # ages that are not an age
    "I'm 5 minutes away",
    "I'm 150",
    # a relation followed by something that is not a name
    "my wife is Italian",
    "I'm visiting my mum Sunday",
    "I'm a role model",
    "I'm from the bank calling about your account",
    "I moved to the sofa",
    "I hate people who chew loudly",
    "I like the sound of that",
    "I like a lot of things",
    "my favourite thing about you is your voice",
    "The orc charges. I'm Aragorn, son of Arathorn!",
    "Same here",
    "My favourite actor is in a terrible advert now",
    "Sometimes, my sister drives me mad",
    "my friend's dog Rex is cute",
    "my mum, Dad and I went out",
    "I have a question",
]


@pytest.mark.parametrize("text", NO_FACT_CASES)
def test_no_stable_fact(text: str) -> None:
    assert facts(text) == set()
    # a statement is still kept as an utterance
    assert len(utterances(text)) == 1


@pytest.mark.parametrize(
    ("text", "forbidden_key"),
    [
        ("I'm a fan of jazz", "job"),
        ("I'm a big fan of the Beatles", "job"),
        ("I'm a vegetarian", "job"),
        ("I'm from Leeds", "name"),
        ("I'm 34", "name"),
        ("I prefer they/them", "opinion_of_they_them"),
        ("I'm a fan of jazz, but I'm a nurse by trade", "name"),
    ],
)
def test_rule_does_not_misfire(text: str, forbidden_key: str) -> None:
    assert forbidden_key not in {key for _, key, _ in facts(text)}


QUESTION_AND_SMALL_TALK = [
    "What's my name?",
    "what is my name",
    "Do you remember my favourite colour?",
    "do you remember my sister Ana?",
    "Is my favourite colour blue?",
    "so my favourite colour is blue?",
    "Where do I live?",
    "how old am I",
    "Am I from Leeds?",
    "I'm from Leeds?",
    "Tell me my favourite colour",
    "What do you know about me?",
    "Hi! What's my name?",
    "ok",
    "Okay.",
    "yes",
    "Yeah, sure",
    "thanks!",
    "Thank you so much",
    "hi",
    "Hello there",
    "I see",
    "I'm fine, thanks",
    "Hmm",
    "👍",
    "",
    "   ",
]


@pytest.mark.parametrize("text", QUESTION_AND_SMALL_TALK)
def test_questions_and_small_talk_yield_nothing(text: str) -> None:
    """A question is not a statement, and small talk is only noise in recall."""
    assert extract_memories(text, now_ms=1) == []


def test_a_statement_next_to_a_question_is_kept() -> None:
    memories = extract_memories("I'm bored. What should we talk about?", now_ms=1)
    assert [(m.category, m.value) for m in memories] == [
        (FACT, "I'm bored. What should we talk about?")
    ]


# -- the utterance memory ---------------------------------------------------------------------


def test_utterance_comes_first_and_keeps_the_message() -> None:
    text = "  My   favourite colour is\tblue  "
    memories = extract_memories(text, now_ms=1_700_000_000_123)
    utterance, *rest = memories
    assert utterance.category is PREF
    assert utterance.kind is MemoryKind.UTTERANCE
    assert UTTERANCE_KEY.match(utterance.key)
    assert utterance.key.startswith("utterance_1700000000123_")
    assert utterance.value == "My favourite colour is blue"
    assert rest == [CapturedMemory(PREF, "favorite_color", "blue")]


def test_different_messages_get_different_utterance_keys() -> None:
    a = utterances("I love jazz")[0].key
    b = utterances("I love rock")[0].key
    assert a != b
    assert utterances("I love jazz")[0].key == a  # same message, same moment: same key


def test_utterance_is_bounded_and_nul_free() -> None:
    [utterance] = utterances("I went hiking\x00 " + "and it was lovely " * 500)
    assert "\x00" not in utterance.value
    assert len(utterance.value) == 2000


def test_a_later_statement_in_one_message_wins() -> None:
    assert facts("I love jazz. Actually no, I hate jazz.") == {
        (PREF, "opinion_of_jazz", "hates jazz")
    }


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "slug"),
    [
        ("the Beatles", "beatles"),
        ("Beatles", "beatles"),
        ("The Rolling Stones", "rolling_stones"),
        ("Café Olé", "cafe_ole"),
        ("rock & roll", "rock_roll"),
        ("AC/DC", "ac_dc"),
        ("Guns N' Roses", "guns_n_roses"),
    ],
)
def test_slugs_are_stable_ascii_words(said: str, slug: str) -> None:
    assert slugify(said) == slug


def test_slugs_are_bounded_and_never_empty() -> None:
    long = slugify("the most wonderful extraordinarily long name of a band anyone ever heard")
    assert len(long) <= 48
    assert re.fullmatch(r"[a-z0-9_]+", long)
    assert not long.endswith("_")
    other_script = slugify("寿司")
    assert re.fullmatch(r"x[0-9a-f]{8}", other_script)
    assert slugify("寿司") == other_script


def test_same_item_said_differently_shares_one_key() -> None:
    keys = {key for text in ("I love the Beatles", "I hate Beatles") for _, key, _ in facts(text)}
    assert keys == {"opinion_of_beatles"}
    keys = {
        key
        for text in ("my favourite colour is red", "My favorite color is blue")
        for _, key, _ in facts(text)
    }
    assert keys == {"favorite_color"}


def test_each_stable_key_has_one_category() -> None:
    """Replacement happens per (category, key): a key filed under two categories would pile up."""
    for _, expected in STABLE_CASES:
        for category, key, _ in expected:
            assert stable_key_category(key) is category, key
    assert stable_key_category("favorite_color") is PREF
    assert stable_key_category("utterance_1_abcdef01") is None
    assert stable_key_category("something_else") is None


ALL_SENTENCES = (
    [text for text, _ in CATEGORY_CASES]
    + [text for text, _ in STABLE_CASES]
    + NO_FACT_CASES
    + QUESTION_AND_SMALL_TALK
)


def test_every_memory_passes_the_memory_managers_validation() -> None:
    for text in ALL_SENTENCES:
        for memory in extract_memories(text):
            assert validate_key(memory.key) == memory.key
            assert len(memory.key) <= MAX_KEY_LENGTH
            assert re.fullmatch(r"[a-z0-9_]+", memory.key), memory.key
            assert validate_value(memory.value) == memory.value
            assert memory.value == memory.value.strip()
            assert isinstance(memory.category, MemoryCategory)


def test_capture_is_well_under_a_millisecond_per_message() -> None:
    for text in ALL_SENTENCES:  # warm up
        extract_memories(text)
    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        for text in ALL_SENTENCES:
            extract_memories(text)
    per_message = (time.perf_counter() - start) / (rounds * len(ALL_SENTENCES))
    assert per_message < 0.0005, f"{per_message * 1e6:.0f} µs per message"


def test_long_adversarial_messages_stay_fast() -> None:
    """Capture runs inline in the voice turn: no rule may be quadratic in the message."""
    for text in (
        "my favourite " + "a " * 1000,
        "I love " + "jazz and " * 300,
        "my " * 700,
        "I'm " + "really " * 400 + "tired",
        "where " + "x " * 900 + "is",
        "I have " + "a sister, " * 200,
        "Ana, my sister, " * 120,
        "my " + "big " * 600 + "sister Ana",
    ):
        start = time.perf_counter()
        extract_memories(text)
        assert time.perf_counter() - start < 0.05


# -- replace, not pile up: end to end through the memory manager and the SQLite store ---------


async def _say(*messages: str) -> None:
    for index, text in enumerate(messages):
        for m in extract_memories(text, now_ms=1_000 + index):
            await memory_manager.astore(m.category, m.key, m.value, kind=m.kind)


async def _stable_rows() -> list[tuple[str, str, str]]:
    return sorted(
        (m.category, m.key, m.value) for m in await memory_manager.alist() if not m.is_utterance
    )


async def _utterance_values() -> list[str]:
    return sorted(m.value for m in await memory_manager.alist() if m.is_utterance)


REPLACEMENTS = [
    (
        ["my favourite colour is blue", "my favorite color is red"],
        [("PREFERENCE", "favorite_color", "red")],
    ),
    (["My name is Sam", "Actually, call me Alex"], [("PRESENTATION", "name", "Alex")]),
    (["I'm from Leeds", "I grew up in Porto"], [("FACT", "home_town", "Porto")]),
    (["I live in Berlin", "I moved to Lisbon last year"], [("FACT", "lives_in", "Lisbon")]),
    (["I work as a nurse", "I'm a software engineer now"], [("FACT", "job", "software engineer")]),
    (["I work at Acme", "I work for Globex"], [("FACT", "employer", "Globex")]),
    (["I'm 34", "I just turned 35"], [("FACT", "age", "35")]),
    (
        ["My sister's name is Ana", "my sister is called Bea"],
        [("RELATIONSHIP", "sister_name", "Bea")],
    ),
    (["My dog Rex is asleep", "my dog's name is Max"], [("RELATIONSHIP", "dog_name", "Max")]),
    (["I love jazz", "I hate jazz"], [("PREFERENCE", "opinion_of_jazz", "hates jazz")]),
    (
        ["I can't stand the Beatles", "I love Beatles"],
        [("PREFERENCE", "opinion_of_beatles", "loves Beatles")],
    ),
    (["I have a dog", "I don't have a dog anymore"], [("RELATIONSHIP", "has_dog", "has no dog")]),
]


@pytest.mark.parametrize(("messages", "expected"), REPLACEMENTS)
async def test_a_new_value_replaces_the_old_one_in_the_store(
    installed_sqlite_store: object, messages: list[str], expected: list[tuple[str, str, str]]
) -> None:
    with session_user("x@example.com"):
        await _say(*messages)
        assert await _stable_rows() == expected
        # every statement is still kept as its own utterance
        assert await _utterance_values() == sorted(messages)


async def test_a_whole_conversation_leaves_one_row_per_fact(installed_sqlite_store: object) -> None:
    conversation = [
        "Hi, I'm Sam!",
        "my favourite colour is blue",
        "I'm from Leeds",
        "I work as a nurse",
        "My sister's name is Ana",
        "I love jazz",
        "What's my name?",  # a question: nothing stored
        "ok",  # small talk: nothing stored
        "I'm not from London",  # a negation: home town stays Leeds
        "Actually my name is Samantha",
        "My favorite color is red",
        "I grew up in Porto",
        "I'm a software engineer now",
        "my sister is called Bea",
        "I hate jazz",
        "do you remember my favourite colour?",
    ]
    with session_user("x@example.com"):
        await _say(*conversation)
        assert await _stable_rows() == [
            ("FACT", "home_town", "Porto"),
            ("FACT", "job", "software engineer"),
            ("PREFERENCE", "favorite_color", "red"),
            ("PREFERENCE", "opinion_of_jazz", "hates jazz"),
            ("PRESENTATION", "name", "Samantha"),
            ("RELATIONSHIP", "sister_name", "Bea"),
        ]
        stored_utterances = await _utterance_values()
        assert "What's my name?" not in stored_utterances
        assert "ok" not in stored_utterances
        assert len(stored_utterances) == len(conversation) - 3
        assert await memory_manager.aretrieve("PREFERENCE", "favorite_color") == "red"

    with session_user("y@example.com"):
        assert await memory_manager.alist() == []
