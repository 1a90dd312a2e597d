"""Seeded synthetic LaMP-format data whose users have real latent preferences.

Three generators, each writing official-format examples (one user per example, as in LaMP's
user-based split; train/dev users are disjoint):

* **LaMP-2 (movie tagging)**: every movie description mixes the keywords of two tags, so the input
  alone cannot tell which of the two the user will pick.  Each user has a few favourite tags and
  picks a favourite when one is among the two (else the tag ranked higher in their private order),
  with ``noise`` probability of the other.  A profile-blind rule is right about half the time; a rule
  that counts the user's past tags is right ~90%.
* **LaMP-3 (product rating)**: review text states a product quality 1..5 through graded phrases;
  each user adds a personal bias (harsh ... generous) before rounding to 1..5.  A profile-blind
  reading of the text is off by the bias; a rule that estimates the user's bias from their history
  is not.
* **LaMP-7 (tweet paraphrasing)**: neutral tweets re-written in the user's style (signature words,
  text-speak abbreviations, dropped "I am", elongations).  Copying the input misses the style; a rule
  that reads the style off the history recovers most of it.

:func:`profile_aware_rule` and :func:`profile_blind_rules` are the reference rules whose measured gap
(``tagpr data synth`` prints it; ``tests/test_synthetic.py`` pins it) shows that personalization pays.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tagpr.data.loading import Example
from tagpr.pipeline.style import LOWERCASE_SHARE, lowercase_texts
from tagpr.tasks import MOVIE_TAGS, get_task

SYNTHETIC_TASKS = ("LaMP-2", "LaMP-3", "LaMP-7")

# --------------------------------------------------------------------------------------- LaMP-2
TAG_WORDS: dict[str, tuple[str, ...]] = {
    "sci-fi": ("spaceship", "alien", "galaxy", "robot", "laser", "starship", "android"),
    "based on a book": ("novel", "author", "chapter", "bestseller", "adaptation", "manuscript", "library"),
    "comedy": ("hilarious", "prank", "jokes", "laughs", "clown", "sitcom", "goofy"),
    "action": ("explosion", "chase", "gunfight", "stunt", "mercenary", "heist", "showdown"),
    "twist ending": ("secret", "reveal", "shocking", "deception", "unexpected", "mystery", "hidden"),
    "dystopia": ("regime", "surveillance", "rebellion", "wasteland", "oppression", "curfew", "ration"),
    "dark comedy": ("morbid", "funeral", "absurd", "cynical", "grim", "satire", "macabre"),
    "classic": ("timeless", "golden", "vintage", "legendary", "masterpiece", "monochrome", "iconic"),
    "psychology": ("mind", "therapist", "obsession", "trauma", "memory", "paranoia", "identity"),
    "fantasy": ("dragon", "wizard", "kingdom", "sorcery", "elves", "quest", "enchanted"),
    "romance": ("love", "wedding", "kiss", "heartbreak", "couple", "passion", "sweetheart"),
    "thought-provoking": ("philosophy", "meaning", "question", "existence", "ethics", "reflection", "truth"),
    "social commentary": ("inequality", "class", "society", "poverty", "injustice", "protest", "community"),
    "violence": ("brutal", "blood", "murder", "revenge", "massacre", "gang", "assault"),
    "true story": ("real", "biography", "historical", "documented", "actual", "memoir", "witness"),
}
_FILLER = ("the", "a", "young", "old", "city", "family", "journey", "night", "world", "stranger", "friends", "town")


def _movie_description(rng: random.Random, a: str, b: str) -> str:
    wa = rng.sample(TAG_WORDS[a], 3)
    wb = rng.sample(TAG_WORDS[b], 3)
    f = rng.sample(_FILLER, 4)
    parts = [f"In this film, a {f[0]} {wa[0]} meets a {wb[0]}", f"the {f[1]} faces {wa[1]} and {wb[1]}",
             f"{f[2]} {wb[2]} and {wa[2]} shape the {f[3]}"]
    rng.shuffle(parts)
    return ", ".join(parts) + "."


def preferred_tag(order: Sequence[str], candidates: Sequence[str]) -> str:
    """The candidate tag a synthetic LaMP-2 user prefers (first in their latent ``order``): the choice before
    noise."""
    return min(candidates, key=list(order).index)


def _lamp2_choice(rng: random.Random, user: dict[str, Any], a: str, b: str, noise: float) -> str:
    best = preferred_tag(user["order"], (a, b))
    other = b if best == a else a
    return other if rng.random() < noise else best


def _lamp2_pair(rng: random.Random, user: dict[str, Any]) -> tuple[str, str]:
    """Mostly one favourite and one other tag (that is where the user's choice is informative)."""
    favs = user["order"][: user["n_fav"]]
    if rng.random() < 0.85:
        a = rng.choice(favs)
        b = rng.choice([t for t in MOVIE_TAGS if t not in favs])
    else:
        a, b = rng.sample(list(MOVIE_TAGS), 2)
    return (a, b) if rng.random() < 0.5 else (b, a)


def _gen_lamp2(rng: random.Random, uid: int, profile_size: int, noise: float) -> Example:
    order = list(MOVIE_TAGS)
    rng.shuffle(order)
    user = {"order": order, "n_fav": 3}
    profile = []
    for j in range(profile_size):
        a, b = _lamp2_pair(rng, user)
        profile.append({"id": f"{uid}{j:03d}", "description": _movie_description(rng, a, b),
                        "tag": _lamp2_choice(rng, user, a, b, noise)})
    a, b = _lamp2_pair(rng, user)
    inp = get_task("LaMP-2").question({"description": _movie_description(rng, a, b)})
    return Example(str(uid), inp, profile, gold=_lamp2_choice(rng, user, a, b, noise),
                   extra={"synthetic": {"candidates": [a, b], "favourites": order[:3], "order": order}})


def _lamp2_candidates(text: str) -> list[str]:
    """Tags whose keywords occur in a description, most keywords first (what the input reveals)."""
    words = set(re.findall(r"[a-z-]+", text.lower()))
    counts = {t: sum(w in words for w in ws) for t, ws in TAG_WORDS.items()}
    return [t for t, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c > 0][:2] or [MOVIE_TAGS[0]]


# --------------------------------------------------------------------------------------- LaMP-3
QUALITY_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("broke on the first day", "a complete waste of money", "utterly useless", "the worst purchase I have made"),
    2: ("disappointing overall", "cheaply made", "works but barely", "below what I expected"),
    3: ("decent for the price", "does the job", "average quality", "nothing special"),
    4: ("works really well", "solid build", "very happy with it", "good value"),
    5: ("absolutely perfect", "exceeded every expectation", "flawless in every way", "the best I have owned"),
}
PRODUCTS = ("blender", "headphones", "backpack", "kettle", "desk lamp", "phone case", "novel", "yoga mat",
            "coffee grinder", "keyboard", "water bottle", "tent", "board game", "toaster", "umbrella")
USER_BIASES = (-1.6, -1.0, 0.0, 1.0, 1.6)


def _review(rng: random.Random, q: int) -> str:
    p = rng.choice(PRODUCTS)
    a, b = rng.sample(QUALITY_PHRASES[q], 2)
    return f"I bought this {p} last month. Honestly it is {a}, and {b}."


_SCALE = get_task("LaMP-3").answers  # its rating scale
RATING_NOISE = 0.3  # the standard deviation of a score around quality + bias, before rounding


def _rate(rng: random.Random, q: int, bias: float) -> int:
    return _SCALE.score(q + bias + rng.gauss(0, RATING_NOISE))


def _gen_lamp3(rng: random.Random, uid: int, profile_size: int, noise: float) -> Example:
    bias = rng.choice(USER_BIASES)
    profile = []
    for j in range(profile_size):
        q = rng.randint(_SCALE.low, _SCALE.high)
        profile.append({"id": f"{uid}{j:03d}", "text": _review(rng, q), "score": str(_rate(rng, q, bias))})
    q = rng.randint(_SCALE.low, _SCALE.high)
    inp = get_task("LaMP-3").question({"text": _review(rng, q)})
    return Example(str(uid), inp, profile, gold=str(_rate(rng, q, bias)),
                   extra={"synthetic": {"quality": q, "bias": bias}})


def review_quality(text: str) -> int:
    """The quality a review's phrases state (3 when none is recognised)."""
    low = text.lower()
    for q, phrases in QUALITY_PHRASES.items():
        if any(p.lower() in low for p in phrases):
            return q
    return 3


# --------------------------------------------------------------------------------------- LaMP-7
_SUBJECTS = ("going to the beach", "watching the game", "studying for my exam", "cleaning my room",
             "waiting for the bus", "cooking dinner", "listening to the new album", "working late",
             "walking the dog", "stuck in traffic", "reading a good book", "baking cookies",
             "shopping for shoes", "playing video games", "drinking coffee")
_COMPANIONS = ("with my friends", "with my sister", "alone", "with my mom", "with the team", "with my roommate")
_TIMES = ("this weekend", "tonight", "right now", "this morning", "after work", "today")
_FEELINGS = ("and I really love it", "and it is great", "and I am so tired", "and I cannot wait",
             "and it is so much fun", "and you should come too")
SIGNATURES = ("lol", "omg", "#blessed", "tbh", "ugh", "yay", "haha", "smh", "#tgif", "xoxo", "fml", "woohoo")
ABBREVIATIONS = {"you": "u", "are": "r", "to": "2", "for": "4", "great": "gr8", "tonight": "2nite",
                 "love": "luv", "really": "rly", "because": "cuz", "cannot": "cant", "please": "plz"}
SLANG = {"friends": ("squad", "crew", "besties"), "mom": ("mama", "ma"), "sister": ("sis", "sissy"),
         "roommate": ("roomie",), "coffee": ("java", "caffeine"), "exam": ("final", "test"),
         "game": ("match",), "dinner": ("din", "supper"), "shoes": ("kicks", "sneakers"),
         "tired": ("exhausted", "dead"), "fun": ("lit", "epic"), "great": ("awesome", "dope"),
         "work": ("the office",), "traffic": ("gridlock",), "weekend": ("wknd",), "morning": ("am",)}
ELONGATE = {"so": "sooo", "really": "reallyyy", "love": "loveee", "fun": "funnn", "tired": "tiredddd"}


def _neutral_tweet(rng: random.Random) -> str:
    return f"I am {rng.choice(_SUBJECTS)} {rng.choice(_COMPANIONS)} {rng.choice(_TIMES)} {rng.choice(_FEELINGS)}."


def _user_style(rng: random.Random) -> dict[str, Any]:
    return {
        "signatures": rng.sample(SIGNATURES, 2),
        "sig_position": rng.choice(("start", "end")),
        "abbreviate": rng.random() < 0.6,
        "drop_i_am": rng.random() < 0.5,
        "elongate": rng.random() < 0.4,
        "lowercase": rng.random() < 0.6,
        "slang": {w: rng.choice(v) for w, v in SLANG.items() if rng.random() < 0.7},
        "drop_feeling": rng.random() < 0.4,
    }


def stylize(text: str, style: dict[str, Any], rng: random.Random | None = None) -> str:
    """Re-write a neutral tweet in a user's style (deterministic apart from which signature)."""
    s = text.rstrip(".")
    if style.get("drop_feeling"):
        s = s.split(" and ")[0]
    if style.get("drop_i_am"):
        s = re.sub(r"^I am ", "", s)
    words = s.split()
    out = []
    for w in words:
        lw = w.lower()
        slang = style.get("slang") or {}
        if lw in slang:
            w = slang[lw]
        elif style.get("elongate") and lw in ELONGATE:
            w = ELONGATE[lw]
        elif style.get("abbreviate") and lw in ABBREVIATIONS:
            w = ABBREVIATIONS[lw]
        out.append(w)
    s = " ".join(out)
    if style.get("lowercase"):
        s = s.lower()
    sigs = style.get("signatures") or []
    if sigs:
        sig = (rng or random.Random(0)).choice(sigs) if rng is not None else sigs[0]
        s = f"{sig} {s}" if style.get("sig_position") == "start" else f"{s} {sig}"
    return s


def _gen_lamp7(rng: random.Random, uid: int, profile_size: int, noise: float) -> Example:
    style = _user_style(rng)
    profile = [{"id": f"{uid}{j:03d}", "text": stylize(_neutral_tweet(rng), style, rng)} for j in range(profile_size)]
    neutral = _neutral_tweet(rng)
    inp = get_task("LaMP-7").question({"text": neutral})
    return Example(str(uid), inp, profile, gold=stylize(neutral, style, rng), extra={"synthetic": {"style": style}})


def infer_style(profile: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Read a user's style off their tweets (what a profile-aware rule can know)."""
    texts = [str(p.get("text", "")) for p in profile]
    n = max(1, len(texts))
    first, last, anywhere = Counter(), Counter(), Counter()
    for t in texts:
        toks = t.split()
        if toks:
            first[toks[0]] += 1
            last[toks[-1]] += 1
        anywhere.update(set(toks))
    sig_start = [w for w, c in first.items() if w in SIGNATURES and c >= 0.2 * n]
    sig_end = [w for w, c in last.items() if w in SIGNATURES and c >= 0.2 * n]
    position = "start" if sum(first[w] for w in sig_start) >= sum(last[w] for w in sig_end) else "end"
    sigs = sorted(sig_start if position == "start" else sig_end, key=lambda w: -(first if position == "start" else last)[w])
    lower_words = " ".join(texts)
    return {
        "signatures": sigs[:1],
        "sig_position": position,
        "abbreviate": any(anywhere[a] >= 0.15 * n for a in ABBREVIATIONS.values()),
        "drop_i_am": sum(t.lower().startswith(("i am", *(f"{s} i am" for s in SIGNATURES))) for t in texts) < 0.3 * n,
        "elongate": any(e in lower_words for e in ELONGATE.values()),
        "lowercase": len(lowercase_texts(texts)) >= LOWERCASE_SHARE * n,
        "slang": {w: max(v, key=lambda x: anywhere[x]) for w, v in SLANG.items()
                  if any(anywhere[x] for x in v)},
        "drop_feeling": sum(" and " in t for t in texts) < 0.3 * n,
    }


# ------------------------------------------------------------------------------------- generate
_GENERATORS: dict[str, Callable[[random.Random, int, int, float], Example]] = {
    "LaMP-2": _gen_lamp2, "LaMP-3": _gen_lamp3, "LaMP-7": _gen_lamp7,
}


def generate(task: str, n_users: int, seed: int = 0, profile_size: tuple[int, int] = (12, 30),
             noise: float = 0.1, id_offset: int = 0) -> list[Example]:
    """``n_users`` examples (one per user) for ``task``; the same arguments give the same data."""
    t = get_task(task)
    if t.name not in _GENERATORS:
        raise ValueError(f"no synthetic generator for {t.name}; available: {', '.join(SYNTHETIC_TASKS)}")
    rng = random.Random(f"tagpr-synthetic:{t.name}:{seed}")
    lo, hi = profile_size
    return [_GENERATORS[t.name](rng, 10_000 + id_offset + u, rng.randint(lo, hi), noise) for u in range(n_users)]


def generate_splits(task: str, n_train: int, n_dev: int, seed: int = 0, **kwargs: Any) -> dict[str, list[Example]]:
    """Train and dev examples of disjoint users (a user-based split)."""
    return {
        "train": generate(task, n_train, seed=seed * 2, id_offset=0, **kwargs),
        "dev": generate(task, n_dev, seed=seed * 2 + 1, id_offset=n_train, **kwargs),
    }


# ----------------------------------------------------------------------------------- reference rules
def profile_aware_rule(task: str, example: Example) -> str:
    """A rule that reads the user's history (the latent preference is recoverable from it)."""
    t = get_task(task)
    query = t.retrieval_query(example.input)
    if t.name == "LaMP-2":
        cands = _lamp2_candidates(query)
        counts = Counter(str(p.get("tag")) for p in example.profile)
        return max(cands, key=lambda c: (counts[c], -cands.index(c)))
    if t.name == "LaMP-3":
        diffs = [float(p["score"]) - review_quality(str(p["text"])) for p in example.profile]
        bias = sum(diffs) / max(1, len(diffs))
        return str(int(min(5, max(1, round(review_quality(query) + bias)))))
    if t.name == "LaMP-7":
        return stylize(query, infer_style(example.profile))
    raise ValueError(f"no reference rule for {t.name}")


def profile_blind_rules(task: str) -> dict[str, Callable[[Example], str]]:
    """Rules that see only the input (the best a non-personalized system can do here)."""
    t = get_task(task)
    if t.name == "LaMP-2":
        return {
            "first keyword tag": lambda e: _lamp2_candidates(t.retrieval_query(e.input))[0],
            "second keyword tag": lambda e: _lamp2_candidates(t.retrieval_query(e.input))[-1],
        }
    if t.name == "LaMP-3":
        return {
            "text quality": lambda e: str(review_quality(t.retrieval_query(e.input))),
            "always 4": lambda e: "4",
            "always 3": lambda e: "3",
        }
    if t.name == "LaMP-7":
        return {
            "copy input": lambda e: t.retrieval_query(e.input),
            "copy, lowercased, no 'I am'": lambda e: re.sub(r"^i am ", "", t.retrieval_query(e.input).lower()).rstrip("."),
        }
    raise ValueError(f"no reference rule for {t.name}")


def rule_report(task: str, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Metrics of the profile-aware rule and each profile-blind rule on ``examples``."""
    t = get_task(task)
    golds = [e.gold or "" for e in examples]
    rows = [{"task": t.name, "method": "rule: profile-aware", "n": len(examples),
             **t.metrics([profile_aware_rule(t.name, e) for e in examples], golds)}]
    for name, rule in profile_blind_rules(t.name).items():
        rows.append({"task": t.name, "method": f"rule: blind ({name})", "n": len(examples),
                     **t.metrics([rule(e) for e in examples], golds)})
    return rows
