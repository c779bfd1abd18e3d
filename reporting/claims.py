"""Claim extraction from one sentence of report text (English or Russian).

Rule-based on purpose: the grounding check must be auditable and deterministic, and every
rule errs on the side of flagging (a wrongly removed sentence costs some prose; a wrongly
kept one would put an unsupported claim in front of a clinician).

What is extracted from a sentence:

- zone mentions: each is a set of zone ids of which at least one must be supported
  ("right mid zone" -> {right_mid}; "left lung" -> all left zones; "bilateral" -> one set
  per side; "basilar" without a side -> {right_lower, left_lower});
- polarity: whether it states an abnormality, or states normality / absence of disease;
- out-of-scope terms: pathologies and structures the descriptors say nothing about
  (effusion, mediastinum, fracture, named diagnoses...);
- cardiac claims (a clause naming the heart or the cardiothoracic ratio): normal size,
  enlarged, a plain mention, or a statement about the measurement (too close to 0.5 to call,
  not reliable); judged against the measured CTR, never against the lungs;
- a borderline / indeterminate statement (allowed only inside the borderline band);
- a statement that Grad-CAM and LIME agree (or disagree), with the zones it names: an
  agreement claim is judged against the zones where both maps are strong, never assumed;
- dismissive advice ("no further action is required", "не требуется"): a model cannot clear
  a patient, so it is out of scope;
- decimal numbers and percentages, which must match an evidence value, and bare integers
  (follow-up intervals, sizes, counts), which no evidence supports.

Negation (NegEx-like): an English cue up to six words before a term, or "is not seen" /
"absent" after it, negates it; a Russian cue anywhere in the clause negates it (Russian
negation is often post-posed: "инфильтрации не выявлено").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from reporting.evidence import ZONE_IDS, ZoneId

_CLAUSE = re.compile(r"[,;:()]|\b(?:but|however|whereas|although|однако|но|а)\b", re.I)
_WORD = re.compile(r"[a-zа-яё]+", re.I)
_DECIMAL = re.compile(r"(?<![\d.,])(\d+[.,]\d+)(?![\d])")
_PERCENT = re.compile(r"(\d+(?:[.,]\d+)?)\s*%")
_INTEGER = re.compile(r"(?<![\d.,])\d+(?![\d.,]*\d)(?!\s*%)")

SIDES: dict[str, tuple[str, ...]] = {"right": ("right", "прав"), "left": ("left", "лев")}
LEVELS: dict[str, tuple[str, ...]] = {
    "upper": ("upper", "apical", "apex", "apices", "верхн", "верхушк"),
    "mid": ("mid", "middle", "perihilar", "hilar", "lingula", "lingular", "средн", "прикорнев"),
    "lower": ("lower", "base", "bases", "basal", "basilar", "нижн", "базальн"),
}
_BOTH_SIDES = ("bilateral", "bilaterally", "both", "двусторон", "обоих", "обеих", "оба", "обе")
_BIBASAL = ("bibasilar", "bibasal")
_SIDE_NOUNS = ("lung", "lungs", "hemithorax", "side", "лёгк", "легк", "гемиторакс", "сторон")
_LOBE_ABBREV: dict[str, tuple[ZoneId, ...]] = {
    "rul": ("right_upper",),
    "rml": ("right_mid",),
    "rll": ("right_lower",),
    "lul": ("left_upper", "left_mid"),
    "lll": ("left_lower",),
}

# English negation is pre-posed ("no opacity", "without consolidation") and scoped to a few
# words; Russian negation is often post-posed ("инфильтрации не выявлено"), so it is scoped
# to the clause.
NEGATION_EN = (
    "no",
    "not",
    "cannot",
    "never",
    "without",
    "negative",
    "free",
    "none",
    "neither",
    "nor",
)
NEGATION_RU = ("не", "нет", "без", "отсутств")
_PRE_WINDOW = 6
# "X is not seen", "X is absent"
_POST_NEG_EN = (
    "seen",
    "identified",
    "present",
    "evident",
    "visible",
    "noted",
    "demonstrated",
    "detected",
    "found",
    "appreciated",
)
NORMAL = (
    "normal",
    "unremarkable",
    "clear",
    "healthy",
    "норм",
    "чист",
    "здоров",
    "особенност",
)
ABNORMAL = (
    "opacity",
    "opacities",
    "opacification",
    "consolidation",
    "consolidations",
    "infiltrate",
    "infiltrates",
    "infiltration",
    "airspace",
    "abnormality",
    "abnormalities",
    "abnormal",
    "density",
    "lesion",
    "lesions",
    "positive",
    "disease",
    "diseases",
    "pathology",
    "pathological",
    "затемнен",
    "инфильтр",
    "консолидац",
    "уплотнен",
    "патолог",
    "изменени",
    "заболеван",
)
# Generic words that, when negated, mean "nothing wrong" ("no acute disease").
_NEGATABLE = (
    "process",
    "finding",
    "findings",
    "change",
    "changes",
    "находок",
    "находк",
)
OUT_OF_SCOPE = (
    "effusion",
    "effusions",
    "pleural",
    "pneumothorax",
    "cardiomediastinal",
    "mediastinum",
    "mediastinal",
    "nodule",
    "nodules",
    "nodular",
    "mass",
    "masses",
    "tumor",
    "tumour",
    "cancer",
    "malignancy",
    "carcinoma",
    "metastases",
    "metastasis",
    "fracture",
    "fractures",
    "rib",
    "ribs",
    "bone",
    "bony",
    "osseous",
    "edema",
    "oedema",
    "atelectasis",
    "emphysema",
    "fibrosis",
    "granuloma",
    "granulomas",
    "tuberculosis",
    "covid",
    "diagnosis",
    "diagnosed",
    "диагноз",
    "pneumonia",
    "infection",
    "bronchitis",
    "diaphragm",
    "hemidiaphragm",
    "costophrenic",
    "trachea",
    "aorta",
    "aortic",
    "spine",
    "pacemaker",
    "catheter",
    "tube",
    "scarring",
    "calcification",
    "calcified",
    "hyperinflation",
    "interstitial",
    "vascular",
    "vasculature",
    "cavitation",
    "abscess",
    "lymph",
    "lymphadenopathy",
    "adenopathy",
    "sarcoidosis",
    "covid",
    # procedures and treatment: nothing in the evidence can call for them (the v2.5 evaluation
    # had "review ... and possibly a biopsy is recommended" for a borderline film)
    "biopsy",
    "biopsies",
    "bronchoscopy",
    "surgery",
    "surgical",
    "antibiotic",
    "antibiotics",
    "treatment",
    "therapy",
    "биопси",
    "бронхоскоп",
    "хирург",
    "операци",
    "антибиот",
    "лечени",
    "терапи",
    "выпот",
    "плевр",
    "пневмоторакс",
    "средостен",
    "узел",
    "узл",
    "узелк",
    "очаг",
    "образован",
    "опухол",
    "метастаз",
    "перелом",
    "ребр",
    "кост",
    "отёк",
    "отек",
    "ателектаз",
    "эмфизем",
    "фиброз",
    "туберкул",
    "пневмони",
    "инфекц",
    "бронхит",
    "диафрагм",
    "синус",
    "трахе",
    "аорт",
    "позвон",
    "кальцин",
    "злокачеств",
    "интерстиц",
    "сосуд",
    "абсцесс",
    "лимф",
    "ковид",
)

# The heart is in scope only through the measured cardiothoracic ratio: a clause naming it
# makes a cardiac claim (normal size / enlarged / a mention), judged against that measurement,
# and its polarity words say nothing about the lungs.
CARDIAC = (
    "heart",
    "cardiac",
    "cardiothoracic",
    "cardiomegaly",
    "ctr",
    "сердц",
    "сердеч",
    "кардиоторакал",
    "кардиомегал",
    "кти",
)
ENLARGED = ("enlarged", "enlargement", "cardiomegaly", "increased", "увелич", "кардиомегал")
BORDERLINE = (
    "borderline",
    "indeterminate",
    "equivocal",
    "inconclusive",
    "пограничн",
    "неопределённ",
    "неопределенн",
)
# Clause-level uncertainty: "whether an abnormality is present", "cannot be excluded",
# "possible", "есть ли патология", "не исключены".
_HEDGE = re.compile(
    r"\bwhether\b|\bpossibl[ey]\b|\bmay\b|\bmight\b|\b(?:cannot|can ?not|not) (?:be )?"
    r"(?:excluded|ruled out)|\bли\b|не исключ|возможн",
    re.I,
)
_RATIO = ("ratio", "cardiothoracic", "ctr", "индекс", "кардиоторакал", "кти")
# "heart size is not assessed" / "размер сердца не оценивается": a neutral statement.
_ASSESS = ("assessed", "judged", "evaluated", "called", "call", "оценива", "оцен", "суд")
# "too close to 0.5 to call" and "not reliable on this image" are claims about the measurement:
# each is true of one state of the CTR only (a small model copied the worked example's "too close
# to 0.5" onto a CTR of 0.37). Sentence-level, because the clause split cuts them off the ratio.
_CLOSE = re.compile(r"\b(?:too close|close to|near(?:ly)? 0[.,]5)\b|\bблиз\w*")
_UNRELIABLE = re.compile(r"\b(?:not reliable|unreliable)\b|недостовер\w*|ненадёжн\w*|ненадежн\w*")
CardiacClaim = Literal["normal", "enlarged", "ratio", "close", "unreliable", "other"]

# "Grad-CAM and LIME agree on ...", "both methods point to ...", "Grad-CAM и LIME согласованно
# указывают на ...". A statement about the two maps, not "consistent with an abnormality".
_METHODS = re.compile(
    r"grad-?cam|\blime\b|\bboth (?:methods|maps|explanations)\b|\bmethods\b"
    r"|оба метода|обоих метод\w*|методы|метод\w* объяснени\w*"
)
_AGREE = re.compile(
    r"\b(?:agree\w*|concordan\w*|concur\w*|coincid\w*|overlap\w*)\b"
    r"|\bboth (?:methods|maps|explanations) (?:\w+ )?(?:point|show|highlight|indicate)\w*"
    r"|согласова\w*|согласу\w*|согласны\b|совпада\w*|совпал\w*|оба указыва\w*"
)
_DISAGREE = re.compile(
    r"\b(?:disagree\w*|discordan\w*|differ\w*|do not agree|does not agree|don't agree)\b"
    r"|расход\w*|не согласу\w*|не совпада\w*|не согласова\w*"
)
AgreementClaim = Literal["agree", "disagree"]


@dataclass(frozen=True)
class Agreement:
    """A statement that the two maps agree or disagree, with the zones named in its part of
    the sentence (up to a semicolon: "X and, weaker, Y; Grad-CAM and LIME agree on X")."""

    claim: AgreementClaim
    zone_requirements: tuple[frozenset[ZoneId], ...]


# Sources of information the report does not have: no history, no examination, no prior study.
_STUDY = r"(?:study|studies|exam\w*|imaging|radiograph\w*|film\w*)"
_UNSUPPORTED_SOURCES = re.compile(
    r"\b(clinical (?:data|examination|history|findings)|physical examination"
    r"|(?:medical|patient) history|laborator\w*|lab results"
    rf"|prior {_STUDY}|previous {_STUDY}|compared (?:with|to)|since the (?:prior|previous)"
    r"|unchanged|stable|анамнез\w*|предыдущ\w*|сравнени\w*)",
)
# A decision-support model cannot clear a patient: "no further action is required" and the like
# are claims no evidence supports (a "no finding" does not exclude disease).
_DISMISSIVE = re.compile(
    r"\bno (?:further |additional )?(?:action|follow-up|evaluation|imaging|review|treatment|"
    r"workup|intervention)s? (?:is |are )?(?:required|needed|necessary|indicated|warranted)"
    r"|\bnot (?:required|needed|necessary|indicated|warranted)\b"
    r"|не\s+требу\w*|не\s+нужн\w*|нет\s+необходимост\w*|не\s+показан\w*",
)


def _has(word: str, stems: tuple[str, ...]) -> bool:
    """English stems match whole words; Cyrillic stems match word prefixes (inflection)."""
    for stem in stems:
        if stem.isascii():
            if word == stem:
                return True
        elif word.startswith(stem):
            return True
    return False


@dataclass(frozen=True)
class Claims:
    """What one sentence asserts. See the module docstring."""

    zone_requirements: tuple[frozenset[ZoneId], ...]
    states_abnormal: bool
    states_normal: bool
    out_of_scope: tuple[str, ...]
    decimals: tuple[float, ...]
    percents: tuple[float, ...]
    integers: tuple[int, ...]
    cardiac: tuple[CardiacClaim, ...] = ()
    states_borderline: bool = False
    agreements: tuple[Agreement, ...] = ()


def _zones(side: str | None, level: str | None) -> frozenset[ZoneId]:
    sides = [side] if side else ["right", "left"]
    levels = [level] if level else ["upper", "mid", "lower"]
    return frozenset(z for z in ZONE_IDS if z.split("_")[0] in sides and z.split("_")[1] in levels)


def _classify(words: list[str]) -> tuple[list[str | None], list[str | None]]:
    sides = [next((s for s, stems in SIDES.items() if _has(w, stems)), None) for w in words]
    levels = [next((lv for lv, stems in LEVELS.items() if _has(w, stems)), None) for w in words]
    return sides, levels


def _nearest(items: list[str | None], i: int, window: int) -> int | None:
    """Index of the closest non-None item within ``window`` of ``i`` (ties: the left one)."""
    for d in range(0, window + 1):
        for j in (i - d, i + d):
            if 0 <= j < len(items) and items[j] is not None:
                return j
    return None


def zone_requirements(clause_words: list[str]) -> list[frozenset[ZoneId]]:
    """Zone-mention requirements in one clause (lower-case words)."""
    words = clause_words
    reqs: list[frozenset[ZoneId]] = []
    sides, levels = _classify(words)
    paired_sides: set[int] = set()
    for i, level in enumerate(levels):
        if level is None:
            continue
        j = _nearest(sides, i, 4)
        if j is not None:
            paired_sides.add(j)
            reqs.append(_zones(sides[j], level))
        elif any(_has(w, _BOTH_SIDES) for w in words):
            reqs += [_zones("right", level), _zones("left", level)]
        else:
            reqs.append(_zones(None, level))
    for i, side in enumerate(sides):
        if side is not None and i not in paired_sides:
            near = words[i + 1 : i + 3]
            if any(_has(w, _SIDE_NOUNS) for w in near):
                reqs.append(_zones(side, None))
    for w in words:
        if w in _BIBASAL:
            reqs += [_zones("right", "lower"), _zones("left", "lower")]
        elif w in _LOBE_ABBREV:
            reqs.append(frozenset(_LOBE_ABBREV[w]))
    if any(_has(w, _BOTH_SIDES) for w in words) and not reqs:
        reqs += [_zones("right", None), _zones("left", None)]
    return reqs


_BOTH_PAIR = re.compile(
    r"\b(?:right and left|left and right|right or left|left or right)\b"
    r"|(?:прав\w* и лев\w*|лев\w* и прав\w*)"
)


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def _negated(words: list[str], i: int) -> bool:
    """Whether words[i] is negated (see NEGATION_EN / NEGATION_RU)."""
    if not words[i].isascii():
        return any(_has(w, NEGATION_RU) for w in words)
    if any(w in NEGATION_EN for w in words[max(0, i - _PRE_WINDOW) : i]):
        return True
    after = words[i + 1 : i + 6]
    if "absent" in after:
        return True
    return any(a == "not" and b in _POST_NEG_EN for a, b in zip(after, after[1:], strict=False))


def _cardiac(words: list[str]) -> CardiacClaim:
    """What a clause naming the heart says: its size, the ratio itself, or something else
    (a border, a shape...: nothing measured supports that)."""
    for i, w in enumerate(words):
        if _has(w, ENLARGED):
            return "normal" if _negated(words, i) else "enlarged"
    for i, w in enumerate(words):
        if _has(w, NORMAL):
            return "enlarged" if _negated(words, i) else "normal"
    if any(_has(w, _RATIO) for w in words):
        return "ratio"
    assessed = [i for i, w in enumerate(words) if _has(w, _ASSESS)]
    if assessed and any(_negated(words, i) for i in assessed):
        return "ratio"
    return "other"


def _part_zones(part: str) -> tuple[frozenset[ZoneId], ...]:
    return tuple(r for c in _CLAUSE.split(part) for r in zone_requirements(_WORD.findall(c or "")))


def _agreements(text: str) -> tuple[Agreement, ...]:
    """Agreement statements with the zones they speak of: those named in their own part of the
    sentence or, naming none there ("...; Grad-CAM and LIME agree on these zones"), those named
    in the rest of the sentence."""
    found: list[Agreement] = []
    parts = text.split(";")
    for i, part in enumerate(parts):
        if not _METHODS.search(part):
            continue
        claim: AgreementClaim | None = (
            "disagree" if _DISAGREE.search(part) else "agree" if _AGREE.search(part) else None
        )
        if claim is not None:
            reqs = _part_zones(part) or tuple(
                r for j, other in enumerate(parts) if j != i for r in _part_zones(other)
            )
            found.append(Agreement(claim, reqs))
    return tuple(found)


def extract_claims(sentence: str) -> Claims:
    """Claims made by ``sentence`` (any case, English or Russian)."""
    # "right and left lower zones" names both sides: rewrite to the both-sides cue first.
    text = _BOTH_PAIR.sub(" both ", sentence.replace("_", " ").lower())
    reqs: list[frozenset[ZoneId]] = []
    abnormal = normal = False
    scope: list[str] = []
    cardiac: list[CardiacClaim] = []
    borderline = False
    hedged_abnormal = hedged_normal = False
    for clause in _CLAUSE.split(text):
        words = _WORD.findall(clause or "")
        if not words:
            continue
        reqs += zone_requirements(words)
        borderline |= any(_has(w, BORDERLINE) for w in words)
        hedged = any(_has(w, BORDERLINE) for w in words) or bool(_HEDGE.search(clause or ""))
        was = (abnormal, normal)
        scope += [w for w in words if _has(w, OUT_OF_SCOPE)]
        heart = any(_has(w, CARDIAC) for w in words)
        if heart:
            cardiac.append(_cardiac(words))
        for i, w in enumerate(words):
            neg = _negated(words, i)
            if _has(w, ABNORMAL):
                normal |= neg
                abnormal |= not neg
            elif heart:
                continue  # "normal" in a heart clause is about the heart (see CARDIAC)
            elif _has(w, NORMAL):
                abnormal |= neg
                normal |= not neg
            elif _has(w, _NEGATABLE) and neg:
                normal = True
        if hedged:  # what this clause says is hedged: set it aside (see below)
            hedged_abnormal |= abnormal and not was[0]
            hedged_normal |= normal and not was[1]
            abnormal, normal = was
    if cardiac:
        cardiac += ["close"] if _CLOSE.search(text) else []
        cardiac += ["unreliable"] if _UNRELIABLE.search(text) else []
    if not borderline:
        # Outside a borderline sentence a hedge still leans one way ("an abnormality cannot be
        # excluded" after a no-finding decision contradicts it): keep what it said.
        abnormal |= hedged_abnormal
        normal |= hedged_normal
    # In a borderline sentence the hedged clauses ("borderline; an abnormality cannot be
    # excluded") assert neither side, but a clause of its own that does ("the model found an
    # abnormality ...; it is borderline", v2.5 evaluation) still makes a definite claim.
    scope += [m.group(0) for m in _UNSUPPORTED_SOURCES.finditer(text)]
    scope += [m.group(0) for m in _DISMISSIVE.finditer(text)]
    decimals = tuple(_number(m) for m in _DECIMAL.findall(text))
    percents = tuple(_number(m) / 100.0 for m in _PERCENT.findall(text))
    integers = tuple(int(m) for m in _INTEGER.findall(text))
    return Claims(
        tuple(reqs),
        abnormal,
        normal,
        tuple(dict.fromkeys(scope)),
        decimals,
        percents,
        integers,
        tuple(cardiac),
        borderline,
        _agreements(text),
    )
