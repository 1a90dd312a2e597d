"""A user's measured writing habits on short texts, and a rewrite that carries them to a new text.

The analytic teacher answers LaMP-7 (tweet paraphrasing) by *keeping the input tweet* and changing
only what this user's own tweets support.  A habit is kept for a user when their profile shows it
(counted, with the items that show it), and a kind of habit is in :data:`DEFAULT_KINDS` only if,
applied alone, it raised both ROUGE-1 and ROUGE-L on real LaMP-7 dev (``benchmarks/teacher_quality.py``
measures each kind; the table is in ``docs/tagpr.md``).  What the ROUGE tokenizer cannot see (case, punctuation, emoji, the ``#`` of a
hashtag) leaves the score unchanged, so it is measured and described in chains but not applied.

Kinds of habit:

* ``variant``: the user writes an informal form instead of a standard word or phrase ("u" for "you",
  "&amp;" for "and", "im" for "I am", "gonna" for "going to"), measured per user: more of their texts
  use the informal forms than the standard one (and at least ``min_count``).
* ``spelling``: the user's own spelling of a word the input contains ("sooo" for "so"): a profile token
  whose repeated letters collapse to the input word (lowered ROUGE on real LaMP-7: not applied).
* ``mention-first``: the user's tweets open with an @-mention (replies) and the input names one
  elsewhere: the mention goes first.
* ``closer`` / ``opener``: a word the user ends (starts) many tweets with ("lol", "haha").
* ``lowercase``: the user writes in lower case (ROUGE-neutral: described, not applied by default).

Everything here takes untrusted text and never raises.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# standard word or phrase -> the informal forms a user may write instead (generic English texting
# forms; the user's profile decides which, if any, applies)
VARIANTS: dict[str, tuple[str, ...]] = {
    "I am": ("I'm", "im"),
    "I have": ("I've", "ive"),
    "I will": ("I'll",),
    "I would": ("I'd",),
    "do not": ("don't", "dont"),
    "does not": ("doesn't", "doesnt"),
    "did not": ("didn't", "didnt"),
    "cannot": ("can't", "cant"),
    "can not": ("can't", "cant"),
    "will not": ("won't", "wont"),
    "is not": ("isn't", "isnt"),
    "are not": ("aren't", "arent"),
    "was not": ("wasn't", "wasnt"),
    "have not": ("haven't", "havent"),
    "it is": ("it's", "its"),
    "that is": ("that's", "thats"),
    "what is": ("what's", "whats"),
    "there is": ("there's", "theres"),
    "you are": ("you're", "youre", "ur"),
    "they are": ("they're", "theyre"),
    "we are": ("we're",),
    "let us": ("let's", "lets"),
    "going to": ("gonna",),
    "want to": ("wanna",),
    "got to": ("gotta",),
    "kind of": ("kinda",),
    "sort of": ("sorta",),
    "do not know": ("dunno",),
    "oh my god": ("omg",),
    "thank you": ("thanks", "thx", "ty"),
    "you": ("u", "ya"),
    "your": ("ur", "yr"),
    "are": ("r",),
    "and": ("&amp;", "&"),
    "with": ("w/",),
    "without": ("w/o",),
    "to": ("2",),
    "for": ("4",),
    "because": ("cuz", "bc", "coz", "cause", "b/c"),
    "though": ("tho",),
    "people": ("ppl",),
    "please": ("plz", "pls"),
    "okay": ("ok",),
    "great": ("gr8",),
    "tonight": ("2nite", "tonite"),
    "tomorrow": ("tmrw", "2morrow"),
    "today": ("2day",),
    "love": ("luv",),
    "really": ("rly",),
    "before": ("b4",),
    "about": ("bout",),
    "probably": ("prob", "prolly"),
    "favorite": ("fav", "fave"),
    "birthday": ("bday",),
    "congratulations": ("congrats",),
    "yes": ("yeah", "yep"),
}

KINDS = ("variant", "spelling", "mention-first", "closer", "opener", "lowercase")
# the kinds that raised ROUGE-1 and ROUGE-L on real LaMP-7 dev (measured by benchmarks/teacher_quality.py)
DEFAULT_KINDS: tuple[str, ...] = ("variant", "mention-first", "closer", "opener")

_APOS = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_MENTION_RE = re.compile(r"(?<![\w@])@\w{1,30}")
# what a paraphrase puts before a mention it moved to the end ("..., according to @x.", "said @x")
_ATTRIBUTION_RE = re.compile(r"(?:[,;:]?\s*(?:this was |as )?(?:according to|as per|said|says|tweeted(?: by)?|"
                             r"posted(?: by)?|wrote|writes|replied|asked|by|from|-|\u2014))?[\s,;:]*$", re.IGNORECASE)
_EMOJI_RE = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")
_WORD_RE = re.compile(r"[a-z]+")
_RUN_RE = re.compile(r"([a-z])\1{2,}")
_EDGE_STRIP = "\"'“”‘’`.,!?;:()[]*-~…"


def _form_pattern(form: str) -> str:
    return r"\s+".join(re.escape(p) for p in form.split())


def _bounded(body: str) -> re.Pattern[str]:
    # a form stands alone: no word character, @, # or & glued before it, no word character or ' after it
    return re.compile(rf"(?<![\w@#&'/])(?:{body})(?![\w'/])", re.IGNORECASE)


_FORM_RE: dict[str, re.Pattern[str]] = {}


def _form_re(form: str) -> re.Pattern[str]:
    pat = _FORM_RE.get(form)
    if pat is None:
        pat = _FORM_RE[form] = _bounded(_form_pattern(form))
    return pat


def _as_text(x: object) -> str:
    try:
        return x if isinstance(x, str) else ("" if x is None else str(x))
    except Exception:  # noqa: BLE001 - untrusted objects
        return ""


@dataclass(frozen=True)
class Habit:
    """One measured habit: in the input, ``source`` becomes ``target`` (for kinds that rewrite)."""

    kind: str
    source: str
    target: str
    support: int  # profile texts that show it
    total: int  # profile texts
    items: tuple[int, ...] = ()  # 0-based indices of profile texts that show it

    def describe(self, counts: bool = True) -> str:
        """The habit in words, with how many of the user's texts show it (``counts=False``: without)."""
        if self.kind == "variant":
            text = f'writes "{self.target}" for "{self.source}"'
        elif self.kind == "spelling":
            text = f'spells "{self.source}" as "{self.target}"'
        elif self.kind == "mention-first":
            text = "opens with an @-mention"
        elif self.kind == "closer":
            text = f'ends with "{self.target}"'
        elif self.kind == "opener":
            text = f'opens with "{self.target}"'
        elif self.kind == "lowercase":
            text = "writes in lower case"
        else:
            text = self.kind
        return f"{text} ({self.support} of {self.total} texts)" if counts else text

    def shown_in(self, text: object) -> bool:
        """Whether one text of the user shows this habit (for citing the items that do)."""
        t = _as_text(text).translate(_APOS)
        if self.kind in ("variant", "spelling"):
            return bool(self.target) and bool(_form_re(self.target).search(t))
        if self.kind == "mention-first":
            return t.lstrip().startswith("@")
        if self.kind in ("closer", "opener"):
            toks = _edge_tokens(t)
            return bool(toks) and _edge_word(toks[-1 if self.kind == "closer" else 0]) == self.target
        if self.kind == "lowercase":
            return bool(lowercase_texts([t]))
        return False


def _edge_tokens(t: str) -> list[str]:
    return [x for x in t.split() if _WORD_RE.search(x.lower())]


def _edge_word(tok: str) -> str:
    return tok.strip(_EDGE_STRIP).lower()


def _variant_counts(ts: Sequence[str]) -> dict[str, dict[str, tuple[int, ...]]]:
    """For each standard phrase of :data:`VARIANTS`: the texts (indices) that use it and each informal form."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for std, forms in VARIANTS.items():
        out[std] = {f: tuple(i for i, t in enumerate(ts) if _form_re(f).search(t)) for f in (std, *forms)}
    return out


def measure_habits(texts: Iterable[object], min_count: int = 1, edge_share: float = 0.3,
                   mention_share: float = 0.5) -> list[Habit]:
    """The habits a user's texts show (every kind; :func:`rewrite` picks the kinds it applies).

    A variant is the user's when at least ``min_count`` of their texts use its informal forms and more
    of them do than use the standard phrase (measured on real LaMP-7: ``min_count`` 1 beat 2, and a
    population prior over every user's tweets did not help).  An opener or closer needs ``edge_share`` of
    the texts, mention-first ``mention_share``, and both at least two texts.
    """
    ts = [_as_text(t).translate(_APOS) for t in texts]
    n = len(ts)
    if not n:
        return []
    habits: list[Habit] = []
    for std, c in _variant_counts(ts).items():
        forms = VARIANTS[std]
        informal = sum(len(c[f]) for f in forms)
        if informal < max(1, min_count) or informal <= len(c[std]):
            continue
        form = max(forms, key=lambda f: (len(c[f]), -forms.index(f)))
        spelled = Counter(m.group(0) for i in c[form] for m in _form_re(form).finditer(ts[i]))
        target = spelled.most_common(1)[0][0] if spelled else form
        habits.append(Habit("variant", std, target, len(c[form]), n, c[form]))
    # spellings: elongated tokens ("sooo") whose letters collapse to a plain word
    spell: dict[str, Counter] = {}
    where: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(ts):
        for w in set(_WORD_RE.findall(t.lower())):
            if _RUN_RE.search(w):
                for base in {_RUN_RE.sub(r"\1", w), _RUN_RE.sub(r"\1\1", w)}:
                    if base != w and len(base) >= 2:
                        spell.setdefault(base, Counter())[w] += 1
                        where.setdefault((base, w), []).append(i)
    for base, c in sorted(spell.items()):
        form, k = c.most_common(1)[0]
        if k >= min_count:
            habits.append(Habit("spelling", base, form, k, n, tuple(where[(base, form)])))
    # mention-first: replies
    starts = tuple(i for i, t in enumerate(ts) if t.lstrip().startswith("@"))
    if len(starts) >= max(2, min_count, mention_share * n):
        habits.append(Habit("mention-first", "", "", len(starts), n, starts))
    # closers / openers: a word (not a mention or a hashtag) that ends / starts many texts
    for kind, pick in (("closer", -1), ("opener", 0)):
        edge = Counter()
        at: dict[str, list[int]] = {}
        for i, t in enumerate(ts):
            toks = _edge_tokens(t)
            if toks and not toks[pick].startswith(("@", "#", "http")):
                w = _edge_word(toks[pick])
                if w.isalpha():
                    edge[w] += 1
                    at.setdefault(w, []).append(i)
        if edge:
            w, k = edge.most_common(1)[0]
            if k >= max(2, min_count, edge_share * n):
                habits.append(Habit(kind, "", w, k, n, tuple(at[w])))
    low = lowercase_texts(ts)
    if len(low) >= LOWERCASE_SHARE * n:
        habits.append(Habit("lowercase", "", "", len(low), n, low))
    return habits


LOWERCASE_SHARE = 0.8  # a user "writes in lower case" when this share of their texts is


def lowercase_texts(texts: Sequence[object]) -> tuple[int, ...]:
    """Indices of the texts written in lower case (with at least one letter)."""
    ts = [_as_text(t) for t in texts]
    return tuple(i for i, t in enumerate(ts) if t == t.lower() and _WORD_RE.search(t))


def rewrite(text: object, habits: Sequence[Habit], kinds: Iterable[str] = DEFAULT_KINDS) -> tuple[str, list[Habit]]:
    """``text`` with the habits of ``kinds`` applied; also the habits that changed something."""
    s = _as_text(text).translate(_APOS).strip()
    wanted = set(kinds)
    used: list[Habit] = []
    subs = {h.source.lower(): h for h in habits if h.kind in ("variant", "spelling") and h.kind in wanted and h.source}
    if subs:
        # one pass, longest source first: an inserted form is never rewritten again
        alts = sorted(subs, key=lambda k: (-len(k), k))
        big = _bounded("|".join(f"({_form_pattern(k)})" for k in alts))
        hit: dict[str, Habit] = {}

        def swap(m: re.Match[str]) -> str:
            key = " ".join(m.group(0).lower().split())
            h = subs.get(key)
            if h is None:
                return m.group(0)
            hit[key] = h
            return h.target

        s = big.sub(swap, s)
        used.extend(hit.values())
    for h in habits:
        if h.kind not in wanted:
            continue
        if h.kind == "mention-first" and not s.startswith("@"):
            m = _MENTION_RE.search(s)
            if m is not None:
                before, after = s[: m.start()], s[m.end():]
                if not after.strip(" .!?\"'"):  # the mention ended the text: drop its attribution too
                    before, after = _ATTRIBUTION_RE.sub("", before), after.strip(" ")
                after = after.lstrip(" ,:")
                rest = (before.rstrip(" ,") + ("" if after[:1] in ".!?" else " ") + after).strip()
                s = f"{m.group(0)} {rest}".strip()
                used.append(h)
        elif h.kind == "closer" and h.target not in {_edge_word(x) for x in s.split()}:
            s = f"{s} {h.target}".strip()
            used.append(h)
        elif h.kind == "opener" and h.target not in {_edge_word(x) for x in s.split()}:
            s = f"{h.target} {s}".strip()
            used.append(h)
        elif h.kind == "lowercase" and s != s.lower():
            s = s.lower()
            used.append(h)
    return s, used


def style_profile(texts: Sequence[object]) -> dict[str, Any]:
    """Surface style of a user's texts: case, length, hashtags, mentions, emoji, openers and closers."""
    ts = [_as_text(t) for t in texts]
    n = max(1, len(ts))
    toks = [t.split() for t in ts]
    first = Counter(tk[0].lower() for tk in toks if tk)
    last = Counter(tk[-1].lower() for tk in toks if tk)
    return {
        "n": len(ts),
        "lowercase": sum(t == t.lower() for t in ts) / n,
        "mean_words": sum(len(tk) for tk in toks) / n,
        "hashtag": sum("#" in t for t in ts) / n,
        "mention": sum("@" in t for t in ts) / n,
        "emoji": sum(bool(_EMOJI_RE.search(t)) for t in ts) / n,
        "exclaim": sum("!" in t for t in ts) / n,
        "opener": first.most_common(1)[0] if first else None,
        "closer": last.most_common(1)[0] if last else None,
    }
