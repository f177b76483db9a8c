"""The fixed texts the embedding accuracy check runs on: 2,048 texts, made the same way every time.

`fixed_set()` returns (kind, text) pairs, built from the word lists below with a seeded
generator (no file, no download, identical on every machine and Python version):

| kind | texts | what |
|---|--:|---|
| `short` | 1,000 | English sentences, questions, search queries: 4-30 tokens |
| `odd` | 96 | one word, code, URLs, numbers, emoji, shouting, repeated letters |
| `paragraph` | 250 | English paragraphs of 3-8 sentences: 50-200 tokens |
| `long` | 150 | English texts of 300+ tokens, so the model's 256-token window cuts them |
| `de`, `fr`, `es`, `pt`, `ru`, `zh`, `ja`, `ar` | 69 each | sentences, paragraphs and 4 long texts per language |

The last four scripts are mostly outside all-MiniLM-L6-v2's English vocabulary (single characters
and `[UNK]`): the vectors are poor, and that is where rounding moves them most. `QUERY_STEP` picks
the 100 queries of the neighbour check (every 20th text, so every kind has some).
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

SEED = 21
QUERY_STEP = 20

_SUBJECTS = [
    "The old lighthouse keeper", "A tired nurse", "The city council", "My grandmother", "Our new intern",
    "The football coach", "A group of hikers", "The software team", "The bakery on the corner", "A young violinist",
    "The night train", "Her lawyer", "The weather service", "A stray dog", "The chemistry teacher",
    "The startup's founder", "Two astronauts", "The village doctor", "A retired pilot", "The museum curator",
    "The delivery driver", "An anxious student", "The hotel manager", "Local farmers", "The orchestra",
    "A security researcher", "The mayor", "The bookshop owner", "A marathon runner", "The insurance company",
    "The park ranger", "A famous chef", "The support engineer", "The school librarian", "An elderly couple",
    "The fire brigade", "A travelling salesman", "The research group", "The landlord", "A street musician",
]
_VERBS = [
    "explained", "questioned", "described", "ignored", "celebrated", "predicted", "repaired", "cancelled",
    "postponed", "criticised", "photographed", "measured", "rebuilt", "translated", "sold", "painted",
    "investigated", "announced", "forgot", "recommended", "borrowed", "delivered", "tested", "designed",
    "rejected", "approved", "cleaned", "studied", "discovered", "reported", "defended", "compared",
    "organised", "printed", "returned", "stole", "found", "lost", "reviewed", "planned",
]
_OBJECTS = [
    "the broken water pipe", "a forgotten password", "the history of the printing press", "the price of fresh bread",
    "the annual budget", "an unusual noise in the engine", "the new vaccine", "a map of the old harbour",
    "the results of the election", "the recipe for apple pie", "a leaking roof", "the refund policy",
    "the migration of birds", "a rare butterfly", "the quarterly sales report", "the train timetable",
    "the latest smartphone", "a stolen bicycle", "the rules of chess", "the damaged bridge",
    "a contract with the supplier", "the school's heating system", "the causes of inflation", "a poem about the sea",
    "the database backup", "the climate summit", "a wedding dress", "the hospital's waiting list",
    "a crack in the wall", "the football match", "the memory leak", "an ancient coin", "the tax return",
    "the solar panels", "the bus strike", "a jar of honey", "the noise complaint", "the vaccination schedule",
    "a missing cat", "the exam results",
]
_TAILS = [
    "", "", "", "yesterday", "last week", "before lunch", "in the spring of 2019", "after a long meeting",
    "without telling anyone", "for the third time", "on Monday morning", "during the storm", "according to the manual",
    "with great care", "in front of the press", "despite the rain", "at 7:45 a.m.", "for 120 euros",
    "in under ten minutes", "near the station", "while everyone was asleep", "because nobody else would",
]
_ACTIONS = [
    "reset my password", "change the oil in a car", "bake sourdough bread", "cancel my subscription",
    "speed up a slow laptop", "learn to play the guitar", "write a cover letter", "remove a red wine stain",
    "get a refund for a late train", "keep basil alive indoors", "fix a leaking tap", "train a puppy",
    "index a large table", "back up my phone", "lower my electricity bill", "read a nutrition label",
]
_TOPICS = [
    "cheap flights to Lisbon", "best running shoes 2024", "python list comprehension example",
    "symptoms of vitamin D deficiency", "how far is the moon", "train times London to Leeds",
    "error 404 page not found", "weather tomorrow Berlin", "vegetarian lasagne recipe", "used bikes for sale",
    "mortgage interest rates", "capital of Australia", "rust borrow checker explained", "open pharmacies near me",
]
_ADJECTIVES = ["expensive", "slow", "loud", "popular", "dangerous", "confusing", "late", "cold", "rare", "useful"]
_CONNECTORS = ["", "", "Later, ", "However, ", "Meanwhile, ", "As a result, ", "In the end, ", "Surprisingly, ",
               "Then ", "A day later, "]
_ODD = [
    "hello", "Thanks!", "?", "ok", "URGENT: THE SERVER IS DOWN AGAIN!!!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "def add(a, b):\n    return a + b", "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "https://example.com/search?q=embeddings&page=2", "3.14159 2.71828 1.41421 1.73205",
    "Call +44 20 7946 0958 before 17:00", "🙂🚀🔥 great launch", "ERROR 0x80070005: access denied",
    "<div class=\"card\"><p>Price: $19.99</p></div>", "TODO: fix the flaky test before Friday",
    "ISBN 978-3-16-148410-0", "lol that was soooo funny 😂😂", "#include <stdio.h>", "e = mc^2",
    "naïve café résumé", "The The The The The", "2024-06-01T12:00:00Z", "user@example.org", "N/A",
]

# Per language: subjects, verbs (agreeing with every subject), objects, tails, and how a sentence is built.
_LANGUAGES = {
    "de": (["Der alte Leuchtturmwärter", "Die junge Ärztin", "Unser neuer Praktikant", "Der Stadtrat",
            "Die Chemielehrerin", "Der Museumsdirektor", "Der Busfahrer", "Ein berühmter Koch"],
           ["erklärte", "beschrieb", "reparierte", "verschob", "fotografierte", "prüfte", "fand", "verkaufte"],
           ["den Preis des Brotes", "ein vergessenes Passwort", "die Geschichte des Buchdrucks", "das Jahresbudget",
            "das undichte Dach", "die Ergebnisse der Wahl", "das Rezept für Apfelkuchen", "den neuen Impfstoff"],
           ["", "gestern", "letzte Woche", "vor dem Mittagessen", "trotz des Regens", "am Montagmorgen"],
           "{s} {v} {o} {t}."),
    "fr": (["Le vieux gardien du phare", "La jeune médecin", "Notre nouveau stagiaire", "Le conseil municipal",
            "La professeure de chimie", "Le directeur du musée", "Le chauffeur de bus", "Un chef célèbre"],
           ["a expliqué", "a décrit", "a réparé", "a reporté", "a photographié", "a vérifié", "a trouvé", "a vendu"],
           ["le prix du pain", "un mot de passe oublié", "l'histoire de l'imprimerie", "le budget annuel",
            "le toit qui fuit", "les résultats des élections", "la recette de la tarte aux pommes", "le nouveau vaccin"],
           ["", "hier", "la semaine dernière", "avant le déjeuner", "malgré la pluie", "lundi matin"],
           "{s} {v} {o} {t}."),
    "es": (["El viejo farero", "La joven médica", "Nuestro nuevo becario", "El ayuntamiento",
            "La profesora de química", "El director del museo", "El conductor del autobús", "Un cocinero famoso"],
           ["explicó", "describió", "reparó", "aplazó", "fotografió", "revisó", "encontró", "vendió"],
           ["el precio del pan", "una contraseña olvidada", "la historia de la imprenta", "el presupuesto anual",
            "el tejado con goteras", "los resultados de las elecciones", "la receta de la tarta de manzana",
            "la nueva vacuna"],
           ["", "ayer", "la semana pasada", "antes del almuerzo", "a pesar de la lluvia", "el lunes por la mañana"],
           "{s} {v} {o} {t}."),
    "pt": (["O velho faroleiro", "A jovem médica", "O nosso novo estagiário", "A câmara municipal",
            "A professora de química", "O diretor do museu", "O motorista do autocarro", "Um cozinheiro famoso"],
           ["explicou", "descreveu", "consertou", "adiou", "fotografou", "verificou", "encontrou", "vendeu"],
           ["o preço do pão", "uma palavra-passe esquecida", "a história da imprensa", "o orçamento anual",
            "o telhado com goteiras", "os resultados das eleições", "a receita de tarte de maçã", "a nova vacina"],
           ["", "ontem", "na semana passada", "antes do almoço", "apesar da chuva", "na segunda-feira de manhã"],
           "{s} {v} {o} {t}."),
    "ru": (["Старый смотритель маяка", "Молодой врач", "Наш новый стажёр", "Городской совет",
            "Учитель химии", "Директор музея", "Водитель автобуса", "Известный повар"],
           ["объяснил", "описал", "отремонтировал", "отменил", "сфотографировал", "проверил", "нашёл", "продал"],
           ["цену хлеба", "забытый пароль", "историю книгопечатания", "годовой бюджет", "протечку в крыше",
            "результаты выборов", "рецепт яблочного пирога", "новую вакцину"],
           ["", "вчера", "на прошлой неделе", "перед обедом", "несмотря на дождь", "в понедельник утром"],
           "{s} {t} {v} {o}."),
    "zh": (["老灯塔看守人", "年轻的医生", "我们的新实习生", "市议会", "化学老师", "博物馆馆长", "公交车司机",
            "一位著名的厨师"],
           ["解释了", "描述了", "修理了", "取消了", "拍摄了", "检查了", "发现了", "卖掉了"],
           ["面包的价格", "忘记的密码", "印刷术的历史", "年度预算", "屋顶的漏水", "选举结果", "苹果派的食谱", "新疫苗"],
           ["", "昨天", "上周", "午饭前", "冒着雨", "星期一早上"],
           "{s}{t}{v}{o}。"),
    "ja": (["灯台守の老人", "若い医者", "新しい研修生", "市議会", "化学の先生", "博物館の館長", "バスの運転手",
            "有名な料理人"],
           ["説明した", "書いた", "修理した", "取り消した", "撮影した", "確認した", "見つけた", "売った"],
           ["パンの値段", "忘れたパスワード", "印刷の歴史", "年間予算", "屋根の雨漏り", "選挙の結果",
            "アップルパイのレシピ", "新しいワクチン"],
           ["", "昨日", "先週", "昼食の前に", "雨の中で", "月曜日の朝に"],
           "{s}は{t}{o}を{v}。"),
    "ar": (["حارس المنارة العجوز", "الطبيب الشاب", "المتدرب الجديد", "مجلس المدينة", "مدرس الكيمياء",
            "مدير المتحف", "سائق الحافلة", "الطاهي المشهور"],
           ["شرح", "وصف", "أصلح", "ألغى", "صوّر", "فحص", "وجد", "باع"],
           ["سعر الخبز", "كلمة المرور المنسية", "تاريخ الطباعة", "الميزانية السنوية", "تسرب المياه في السقف",
            "نتائج الانتخابات", "وصفة فطيرة التفاح", "اللقاح الجديد"],
           ["", "أمس", "الأسبوع الماضي", "قبل الغداء", "رغم المطر", "صباح الاثنين"],
           "{s} {v} {o} {t}."),
}
_PER_LANGUAGE = {"sentence": 50, "paragraph": 15, "long": 4}
# Characters after which a text surely runs past 256 tokens (English: ~4.5 characters a token;
# the other scripts tokenize into more, shorter pieces).
_LONG_CHARS = {"en": 1800, "de": 1300, "fr": 1300, "es": 1300, "pt": 1300, "ru": 650, "zh": 300, "ja": 300, "ar": 650}


def _tidy(sentence: str) -> str:
    return " ".join(sentence.split()).replace(" .", ".").replace(" 。", "。")


def _english(rng: random.Random) -> str:
    tail = rng.choice(_TAILS)
    return _tidy(f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {tail}.")


def _short(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        return _english(rng)
    if kind < 0.7:
        return f"How do I {rng.choice(_ACTIONS)}?"
    if kind < 0.8:
        return f"Why is {rng.choice(_OBJECTS)} so {rng.choice(_ADJECTIVES)}?"
    if kind < 0.9:
        return rng.choice(_TOPICS) + rng.choice(["", "", " " + str(rng.randint(1, 99))])
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}, and {rng.choice(_OBJECTS)} too."


def _joined(rng: random.Random, sentence, count: int, sep: str = " ") -> str:
    parts = []
    for _ in range(count):
        text = sentence(rng)
        connector = rng.choice(_CONNECTORS) if sep == " " else ""
        parts.append(connector + (text[0].lower() + text[1:] if connector else text))
    return sep.join(parts)


def _long(rng: random.Random, sentence, language: str) -> str:
    sep = "" if language in ("zh", "ja") else " "
    text = ""
    while len(text) < _LONG_CHARS[language]:
        text += (sep if text else "") + _joined(rng, sentence, 4, sep)
    return text


def _foreign_sentence(language: str):
    subjects, verbs, objects, tails, pattern = _LANGUAGES[language]

    def sentence(rng: random.Random) -> str:
        return _tidy(pattern.format(s=rng.choice(subjects), v=rng.choice(verbs), o=rng.choice(objects),
                                    t=rng.choice(tails)))

    return sentence


def _distinct(rng: random.Random, make, count: int, seen: set[str]) -> list[str]:
    out = []
    while len(out) < count:
        text = make(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


@lru_cache(maxsize=1)
def fixed_set() -> tuple[tuple[str, str], ...]:
    """Every (kind, text), in a fixed order; the same on every call and every machine."""
    rng, seen = random.Random(SEED), set()
    items = [("short", t) for t in _distinct(rng, _short, 1000, seen)]
    seen.update(_ODD)
    odd = _ODD + _distinct(rng, lambda r: f"{r.choice(_TOPICS)} {r.choice(_ODD)}", 96 - len(_ODD), seen)
    items += [("odd", t) for t in odd]
    items += [("paragraph", t) for t in _distinct(rng, lambda r: _joined(r, _english, r.randint(3, 8)), 250, seen)]
    items += [("long", t) for t in _distinct(rng, lambda r: _long(r, _english, "en"), 150, seen)]
    for language in _LANGUAGES:
        sentence = _foreign_sentence(language)
        sep = "" if language in ("zh", "ja") else " "
        items += [(language, t) for t in _distinct(rng, sentence, _PER_LANGUAGE["sentence"], seen)]
        items += [(language, t) for t in _distinct(rng, lambda r: _joined(r, sentence, r.randint(3, 6), sep),
                                                   _PER_LANGUAGE["paragraph"], seen)]
        items += [(language, t) for t in _distinct(rng, lambda r: _long(r, sentence, language),
                                                   _PER_LANGUAGE["long"], seen)]
    return tuple(items)


def texts() -> list[str]:
    return [text for _, text in fixed_set()]


_SMALL = {"short": 6, "odd": 3, "paragraph": 2, "long": 2}  # and one of each other language


def small_set() -> list[str]:
    """A fast subset for a test: every kind, two texts cut at 256 tokens (21 texts)."""
    by_kind: dict[str, list[str]] = {}
    for kind, text in fixed_set():
        by_kind.setdefault(kind, []).append(text)
    picked = []
    for kind, members in by_kind.items():
        count = _SMALL.get(kind, 1)
        picked += members[:: len(members) // count][:count]
    return picked


def fingerprint() -> str:
    """SHA-256 of the whole set: changes if any text changes."""
    digest = hashlib.sha256()
    for kind, text in fixed_set():
        digest.update(f"{kind}\t{text}\n".encode("utf-8"))
    return digest.hexdigest()
