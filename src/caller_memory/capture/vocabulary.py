"""The vocabulary `memory_capture` builds its rules from: word lists only, no logic.

Kept apart so the lists can grow without the rules becoming hard to read. Every list is
lower-case; matching is case-insensitive.
"""

from __future__ import annotations

# A message whose words are all in here ("ok", "yes thanks", "hi there") is small talk: it
# yields no memory, since it would only add noise to recall.
FILLER_WORDS = frozenset(
    """
    ok okay okey k kk yes yeah yea ya yah yep yup no nope nah sure thanks thank you ty cheers
    hi hello hey hiya howdy bye goodbye good great cool nice fine alright right hmm hm mm mhm
    um umm uh uhh er erm ah ahh oh ooh wow lol haha hahaha uh-huh got it i see fair enough
    exactly true indeed absolutely definitely perfect awesome sounds that that's it's sure
    please go on morning evening afternoon night there so well and totally same me too really
    interesting amazing wonderful lovely brilliant sweet gotcha understood noted agreed maybe
    kind of sort not bad much very you're welcome a lot and sure yes please thats its what
    why huh pardon sorry excuse eh i'm im doing
    """.split()
)

# Greetings: a self-introduction may follow one ("hi, it's Sam").
GREETINGS = (
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "yo",
    "good morning",
    "good afternoon",
    "good evening",
    "greetings",
)

# Small talk in other languages, as said to a voice agent: greetings, thanks, yes and no,
# "okay", goodbyes, one word at a time ("buenos días" is "buenos" + "días"). Deliberately
# small, not a translation of `FILLER_WORDS`: a message made only of these (or of
# `FILLER_WORDS`) yields no memory, and anything else a caller says, in any language, is kept.
# Chinese and Japanese are written without spaces: a run of such characters is small talk when
# it is made of these words end to end ("はいありがとう"). Lower case, NFC.
SMALL_TALK_WORDS = frozenset(
    """
    hola gracias muchas sí si vale bueno buenos buenas días dias tardes noches claro adiós
    adios chao de nada muy bien perfecto genial
    bonjour bonsoir salut coucou merci beaucoup oui ouais non d'accord au revoir bien très
    hallo danke schön ja nein tschüss tschüs bitte guten tag morgen abend genau gut servus moin
    olá oi obrigado obrigada valeu sim não tchau bom boa dia tarde noite tudo bem
    ciao grazie mille certo buongiorno buonasera arrivederci prego va bene salve
    merhaba selam teşekkürler teşekkür ederim evet hayır tamam
    привет здравствуйте спасибо большое да нет хорошо ок окей пока ага ладно угу понятно
    добрый доброе день утро вечер
    नमस्ते नमस्कार धन्यवाद शुक्रिया हाँ हां जी नहीं ठीक है अच्छा ओके हेलो हैलो बाय अलविदा
    namaste namaskar dhanyavaad dhanyavad shukriya haan han nahi nahin theek thik hai accha
    acha achha
    السلام سلام علیکم وعلیکم شکریہ جی ہاں نہیں ٹھیک ہے اچھا اوکے ہیلو خدا حافظ بہت
    عليكم وعليكم مرحبا مرحباً أهلا أهلاً اهلا شكرا شكراً نعم لا حسنا حسناً تمام طيب مع السلامة
    صباح مساء الخير النور
    こんにちは こんばんは おはよう おはようございます ありがとう ありがとうございます どうも
    ございます ございました はい いいえ うん ええ そう そうです そうですね なるほど わかりました
    了解 さようなら もしもし
    你好 您好 谢谢 謝謝 多谢 是 是的 好 好的 对 對 嗯 不 不是 再见 再見 没问题 行 喂
    안녕하세요 안녕 감사합니다 고마워요 고마워 네 예 아니요 아니 응 좋아요 알겠습니다 여보세요
    """.split()
)

# Greetings in other languages that may open a message before what it states ("Hola, me
# llamo Lucía"): stripped like the English `GREETINGS`, and like them they make a following
# "soy Lucía" a self-introduction. Lower case, NFC.
OTHER_GREETINGS = (
    "hola",
    "buenos días",
    "buenas tardes",
    "buenas noches",
    "buenas",
    "bonjour",
    "bonsoir",
    "salut",
    "coucou",
    "hallo",
    "guten tag",
    "guten morgen",
    "guten abend",
    "servus",
    "moin",
    "olá",
    "oi",
    "bom dia",
    "boa tarde",
    "boa noite",
    "ciao",
    "buongiorno",
    "buonasera",
    "salve",
    "merhaba",
    "привет",
    "здравствуйте",
    "добрый день",
    "доброе утро",
    "добрый вечер",
    "नमस्ते",
    "नमस्कार",
    "namaste",
    "namaskar",
    "السلام علیکم",
    "السلام عليكم",
    "سلام",
    "مرحبا",
    "مرحباً",
    "أهلا",
    "اهلا",
    "assalam o alaikum",
    "assalamu alaikum",
    "assalamualaikum",
    "salam",
)

# Words in other languages that may open a clause, followed by a comma or a stop ("Sí, me
# llamo Lucía", "Bueno, soy Ana", "Oui, je m'appelle Marc"): stripped before the rules run.
OTHER_LEADING_WORDS = (
    "sí",
    "si",
    "bueno",
    "pues",
    "vale",
    "claro",
    "oui",
    "bon",
    "alors",
    "ja",
    "na",
    "sim",
    "bem",
    "então",
    "sì",
    "allora",
    "да",
    "ну",
    "ладно",
    "जी",
    "हाँ",
    "हां",
    "अच्छा",
    "جی",
    "ہاں",
    "اچھا",
)

# Words that may open a clause without changing what it states; stripped before the
# anchored rules run ("well, actually, I'm from Leeds" states "I'm from Leeds").
LEADING_FILLERS = (
    "well",
    "oh",
    "ah",
    "so",
    "um+",
    "uh+",
    "er+m?",
    "hmm+",
    "yeah",
    "yes",
    "yep",
    "no",
    "nope",
    "ok",
    "okay",
    "alright",
    "right",
    "and",
    "but",
    "also",
    "plus",
    "actually",
    "anyway",
    "anyways",
    "honestly",
    "basically",
    "oh well",
    "by the way",
    "btw",
    "just so you know",
    "fyi",
    "for the record",
    "for your information",
    "please remember that",
    "please remember",
    "remember that",
    "remember",
    "note that",
    "please note that",
    "you know what",
    "you should know that",
    "i should mention that",
    "i wanted to say that",
    "i wanted to tell you that",
    "i want you to know that",
    "i forgot to mention that",
    "i think",
    "i guess",
    "i suppose",
    "i'd say",
    "i would say",
    "fun fact",
    "like i said",
    "as i said",
    "as i mentioned",
    "like i told you",
    "as i told you",
    "to be honest",
    "tbh",
    "listen",
    "look",
    "correction",
    "sorry",
    "wait",
    "oops",
    "right now",
    "now",
    "currently",
    "these days",
    "nowadays",
    "at the moment",
    *GREETINGS,
)

# Capitalised words that follow "I'm" without being a name ("I'm British", "I'm OK").
NOT_NAMES = frozenset(
    """
    i ok okay fine good great english british scottish irish welsh american canadian
    australian french german spanish italian portuguese dutch belgian swiss austrian polish
    russian ukrainian chinese japanese korean indian pakistani bangladeshi mexican brazilian
    argentinian chilean colombian peruvian turkish greek swedish norwegian danish finnish
    icelandic czech slovak hungarian romanian bulgarian serbian croatian nigerian kenyan
    ghanaian egyptian moroccan south african israeli iranian iraqi syrian lebanese filipino
    vietnamese thai indonesian malaysian european asian african latino latina hispanic
    catholic christian jewish muslim hindu buddhist sikh atheist agnostic protestant mormon
    monday tuesday wednesday thursday friday saturday sunday christmas easter here there
    back home sorry sure new not the a an and but so just still also really very too
    """.split()
)

# Words that cannot be a name after "my name is" / "call me" ("call me crazy, but ...").
NAME_STOP_WORDS = frozenset(
    """
    a an the and but or so if when whenever what whatever which who that this it its it's
    not never no yes later back tomorrow tonight today now soon sometime anytime again first
    once twice crazy old-fashioned old silly stupid paranoid naive lazy weird hard difficult
    long short unusual common spelled spelt pronounced unique boring funny strange
    complicated easy simple same different also too just really actually kind sort like on
    at in to from for by with of out up over about please maybe anything nothing something
    nobody somebody everybody
    someone anyone everyone names name here there whatever you me him her them us i my your
    his our their is are was were be been being bus train car bike foot plane taxi boat
    tube subway metro
    """.split()
)

# Words after "my name is Sam" that still leave "Sam" a clean name.
NAME_TRAILERS = (
    "please",
    "by the way",
    "btw",
    "from now on",
    "instead",
    "for short",
    "here",
    "speaking",
    "now",
    "actually",
    "thanks",
    "thank you",
    "though",
    "then",
    "if you like",
    "if you want",
    "if you don't mind",
    "at work",
    "to my friends",
    "by my friends",
    "nice to meet you",
)

# Spoken relation word -> canonical key stem. Keys are `<stem>_name` (one per caller).
RELATIONS: dict[str, str] = {
    "wife": "wife",
    "husband": "husband",
    "partner": "partner",
    "spouse": "spouse",
    "boyfriend": "boyfriend",
    "girlfriend": "girlfriend",
    "fiance": "fiance",
    "fiancé": "fiance",
    "fiancee": "fiance",
    "fiancée": "fiance",
    "ex": "ex",
    "ex-wife": "ex_wife",
    "ex-husband": "ex_husband",
    "ex-boyfriend": "ex_boyfriend",
    "ex-girlfriend": "ex_girlfriend",
    "mom": "mother",
    "mum": "mother",
    "mother": "mother",
    "mommy": "mother",
    "mummy": "mother",
    "mam": "mother",
    "dad": "father",
    "father": "father",
    "daddy": "father",
    "papa": "father",
    "stepmom": "stepmother",
    "stepmum": "stepmother",
    "stepmother": "stepmother",
    "stepdad": "stepfather",
    "stepfather": "stepfather",
    "son": "son",
    "daughter": "daughter",
    "stepson": "stepson",
    "stepdaughter": "stepdaughter",
    "brother": "brother",
    "sister": "sister",
    "stepbrother": "stepbrother",
    "stepsister": "stepsister",
    "twin": "twin",
    "grandma": "grandmother",
    "grandmother": "grandmother",
    "granny": "grandmother",
    "gran": "grandmother",
    "nan": "grandmother",
    "nana": "grandmother",
    "nanna": "grandmother",
    "grandpa": "grandfather",
    "grandfather": "grandfather",
    "granddad": "grandfather",
    "grandad": "grandfather",
    "aunt": "aunt",
    "auntie": "aunt",
    "aunty": "aunt",
    "uncle": "uncle",
    "niece": "niece",
    "nephew": "nephew",
    "grandson": "grandson",
    "granddaughter": "granddaughter",
    "best friend": "best_friend",
    "bestie": "best_friend",
    "boss": "boss",
    "roommate": "roommate",
    "flatmate": "roommate",
    "housemate": "roommate",
    "therapist": "therapist",
    "doctor": "doctor",
    "dog": "dog",
    "puppy": "dog",
    "cat": "cat",
    "kitten": "cat",
    "hamster": "hamster",
    "rabbit": "rabbit",
    "bunny": "rabbit",
    "parrot": "parrot",
    "horse": "horse",
    "pony": "pony",
    "tortoise": "tortoise",
    "turtle": "turtle",
    "guinea pig": "guinea_pig",
    "snake": "snake",
    "lizard": "lizard",
    # Relations a caller usually has several of: keyed per person (`friend_<name>`).
    "friend": "friend",
    "colleague": "colleague",
    "coworker": "colleague",
    "co-worker": "colleague",
    "cousin": "cousin",
    "neighbour": "neighbor",
    "neighbor": "neighbor",
    "classmate": "classmate",
    "teammate": "teammate",
    "kid": "child",
    "child": "child",
}

# Canonical stems a caller usually has several of: one key per named person, so a second
# friend does not replace the first.
MULTI_RELATIONS = frozenset(
    {"friend", "colleague", "cousin", "neighbor", "classmate", "teammate", "child"}
)

PETS = frozenset(
    {
        "dog",
        "cat",
        "hamster",
        "rabbit",
        "parrot",
        "horse",
        "pony",
        "tortoise",
        "turtle",
        "guinea_pig",
        "snake",
        "lizard",
    }
)

# Modifiers kept in the key for siblings, children and partners ("older_sister_name").
RELATION_MODIFIERS: dict[str, str] = {
    "older": "older",
    "elder": "older",
    "eldest": "older",
    "oldest": "older",
    "big": "older",
    "younger": "younger",
    "youngest": "younger",
    "little": "younger",
    "baby": "younger",
    "twin": "twin",
    "half": "half",
    "step": "step",
}

# Plural forms said in "I have two sisters" -> the relation word.
RELATION_PLURALS: dict[str, str] = {
    "sisters": "sister",
    "brothers": "brother",
    "sons": "son",
    "daughters": "daughter",
    "kids": "children",
    "children": "children",
    "kid": "children",
    "child": "children",
    "siblings": "siblings",
    "sibling": "siblings",
    "dogs": "dog",
    "cats": "cat",
    "puppies": "dog",
    "kittens": "cat",
    "grandchildren": "grandchildren",
    "grandkids": "grandchildren",
    "grandchild": "grandchildren",
    "grandkid": "grandchildren",
    "pets": "pets",
    "pet": "pets",
    "hamsters": "hamster",
    "rabbits": "rabbit",
    "horses": "horse",
    "parrots": "parrot",
}

# Relations one "has" (`has_<stem>`): family, partners, pets. Not friends or colleagues.
HAS_RELATIONS = frozenset(
    {
        "sister",
        "brother",
        "son",
        "daughter",
        "children",
        "siblings",
        "twin",
        "grandchildren",
        "wife",
        "husband",
        "partner",
        "boyfriend",
        "girlfriend",
        "fiance",
        "pets",
        *PETS,
    }
)

COUNT_WORDS = (
    "a",
    "an",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "a couple of",
    "several",
    "\\d{1,2}",
)

# The last word of "I'm a <job>" must be one of these ("I'm a software engineer" is a job;
# "I'm a fan of jazz", "I'm a bit tired" and "I'm a morning person" are not).
JOB_NOUNS = frozenset(
    """
    accountant actor actress administrator analyst architect artist assistant attorney
    auditor baker banker barber barista bartender biologist bookkeeper builder butcher
    carer caregiver carpenter cashier chef chemist cleaner clerk coach consultant cook
    counsellor counselor courier curator dancer dentist designer detective developer
    dietitian director doctor driver economist editor electrician engineer entrepreneur
    farmer firefighter fisherman florist founder freelancer gardener geologist
    hairdresser historian housekeeper illustrator influencer instructor interpreter
    investor janitor journalist judge labourer laborer lawyer lecturer librarian
    lifeguard linguist locksmith manager mechanic midwife miner model musician nanny
    nurse officer optician painter paralegal paramedic pharmacist photographer
    physician physicist physiotherapist pilot plumber podcaster poet policeman
    policewoman politician postman producer professor programmer psychiatrist
    psychologist publisher radiographer realtor receptionist recruiter reporter
    researcher salesman saleswoman salesperson scientist secretary singer soldier
    solicitor specialist statistician streamer student surgeon surveyor tailor teacher
    technician therapist trader translator tutor vet veterinarian waiter waitress
    welder writer youtuber ceo cto cfo coder copywriter marketer dev sailor rabbi priest
    pastor vicar minister imam monk nun carpenter roofer plasterer bricklayer
    decorator joiner machinist operator supervisor coordinator representative rep
    agent broker planner strategist inspector investigator guard ranger sergeant
    lieutenant captain marine airman pensioner retiree intern apprentice trainee
    undergrad undergraduate postgrad graduate phd practitioner paramedic carer cleaner
    dj comedian filmmaker animator drummer guitarist pianist composer conductor
    """.split()
)

# "I'm retired", "I'm self-employed": whole-phrase jobs without an article.
JOB_STATES = (
    "retired",
    "unemployed",
    "self-employed",
    "self employed",
    "between jobs",
    "out of work",
    "a stay-at-home mom",
    "a stay-at-home mum",
    "a stay-at-home dad",
    "a stay-at-home parent",
    "a stay at home mom",
    "a stay at home mum",
    "a stay at home dad",
    "a stay at home parent",
    "a full-time student",
    "freelance",
    "a freelancer",
)

DIETS = ("vegetarian", "vegan", "pescatarian", "pescetarian", "kosher", "halal", "keto")

MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
)

# "my favourite film" and "my favourite movie" are one fact.
FAVORITE_THING_SYNONYMS: dict[str, str] = {
    "colour": "color",
    "colours": "color",
    "colors": "color",
    "film": "movie",
    "films": "movie",
    "movies": "movie",
    "tv show": "tv_show",
    "tv shows": "tv_show",
    "television show": "tv_show",
    "show on tv": "tv_show",
    "telly programme": "tv_show",
    "series": "tv_show",
    "tv series": "tv_show",
    "programme": "tv_show",
    "program": "tv_show",
    "footy team": "football_team",
    "soccer team": "football_team",
    "football club": "football_team",
    "meal": "food",
    "dish": "food",
    "cuisine": "food",
    "music": "music",
    "kind of music": "music",
    "type of music": "music",
    "genre": "music_genre",
    "musician": "artist",
    "singer": "artist",
    "author": "author",
    "writer": "author",
    "book": "book",
    "novel": "book",
    "sport": "sport",
    "sports": "sport",
    "animal": "animal",
    "season": "season",
    "holiday": "holiday",
}

# Plural words that must not lose their final "s" in a key.
PLURAL_EXCEPTIONS = frozenset(
    """
    series news clothes glasses species shorts jeans pants trousers sports chess physics
    maths mathematics politics economics athletics gymnastics lens bus gas
    """.split()
)

# Objects of "I love ..." / "I hate ..." that are not a taste worth keeping.
OPINION_OBJECT_REJECTS = frozenset(
    """
    it it's its that that's this these those you your you're yours them him her us me
    myself yourself what when how where why who which if whether something anything
    everything nothing someone anyone everyone nobody somebody everybody one some all
    both so too very about not no
    """.split()
)

# "I hate to say ...", "I like to think ...": a turn of phrase, not a taste.
OPINION_INFINITIVE_REJECTS = frozenset(
    """
    say admit think believe imagine know tell bother be ask interrupt break hear see
    disappoint complain point mention
    """.split()
)

# First words that make a "from"/"in" phrase something other than a place.
PLACE_REJECTS = frozenset(
    """
    a an my your his her our their this that these those it here there around nowhere
    everywhere all work school home bed somewhere anywhere out inside outside trouble love
    fear denial hiding hope debt pain shock line charge touch time
    """.split()
) | {"the future", "the past", "the moment", "the middle", "the same"}

# Objects of "I work at/for ..." that are not an employer.
EMPLOYER_REJECTS = frozenset(
    """
    home night nights weekends free it that this you him her them money hours least most
    all
    """.split()
) | {
    "the weekend",
    "the weekends",
    "the moment",
    "a living",
    "a while",
    "the minute",
    "my own pace",
    "my own",
}
