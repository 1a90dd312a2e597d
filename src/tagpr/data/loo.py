"""Leave-one-out (LOO) training questions built from users' histories alone.

Users in practice have histories, not question/gold pairs.  LaMP's own user-based splits were cut
this way: hold one of a user's items out, turn it into a question in the task's official input form
(``LaMPTask.question``, the registry's ``question_template``), take the held-out item's output field
(``LaMPTask.output_field``) as the gold, and give the user's *other* items as the profile.

* Users: examples with the same ``user_id`` are one user (their profiles are merged, items deduped by
  ``id``, else by content); without ``user_id``, examples with identical profiles are one user.
* Leakage: the held-out item never appears in its own profile, and neither does any other item with
  the same ``id``, the same (whitespace/case-normalised) question text, or, for generation tasks,
  the same output text.  :func:`find_leaks` re-checks a built example from its input and gold alone.
* Sampling: ``per_user`` held-out items per user, drawn with a ``random.Random`` seeded by
  (task, seed, user), so the same arguments give the same questions whatever the user order.  Each
  question's profile is all of the user's other items (other held-out items included: none of them is
  this question's gold).  A held-out item must leave at least ``min_profile`` profile items.
* LaMP-7: the official input is a paraphrase of the tweet, but a history only holds the tweets
  themselves.  ``input_style="copy"`` puts the tweet itself in the question (input == gold, so
  copying the input scores ROUGE 1.0 and trains nothing but copying); the default ``"neutral"``
  puts :func:`neutralize_text` of it (entities decoded, text-speak expanded, interjections,
  emoticons, emoji and elongations removed, sentence case), so the model must restore the user's
  style from the profile.  It is still much closer to the gold than LaMP's ChatGPT paraphrases
  (see ``docs/lamp.md`` for the measured copy-input ROUGE-1 of both against real LaMP-7).
  ``quoted`` renders that share of the neutral inputs in the quoted forms LaMP's paraphrases use for
  4% of the real dev inputs (:func:`quote_text`: ``"..."``; a reply's mention dropped, kept, or moved behind
  as ``"..." - @name``), so a model trained on them has seen an input that is a quotation.
* LaMP-1 cannot be built: its question pairs a paper with a reference it cites and one it does not,
  and profile items (title, abstract) carry no citations.
"""

from __future__ import annotations

import html
import json
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagpr.data.loading import Example, write_examples
from tagpr.tasks import LaMPTask, get_task

INPUT_STYLES = ("neutral", "copy")

# why a task has no single-item question (the registry's question_template is None)
_NOT_BUILDABLE = {
    "LaMP-1": "its official question pairs one of the author's papers with a reference the paper cites and one it "
              "does not, and profile items (title, abstract) carry no citations",
}  # fmt: skip


@dataclass
class User:
    """One user's history, merged over the examples that share it."""

    key: str  # the user_id, else "example-<id of the user's first example>"
    items: list[dict[str, Any]]
    example_ids: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ users
def _canonical(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False, default=str)


def _item_key(item: dict[str, Any]) -> str:
    return f"id:{item['id']}" if item.get("id") not in (None, "") else f"content:{_canonical(item)}"


def group_users(examples: Sequence[Example]) -> list[User]:
    """Users of a loaded split, in order of first appearance (see the module docstring)."""
    users: dict[str, User] = {}
    seen: dict[str, set[str]] = {}
    for e in examples:
        if e.user_id is not None:
            gkey = f"user:{e.user_id}"
            ukey = str(e.user_id)
        else:
            gkey = "profile:" + _canonical(sorted(_canonical(p) for p in e.profile))
            ukey = f"example-{e.id}"
        u = users.get(gkey)
        if u is None:
            u = users[gkey] = User(ukey, [])
            seen[gkey] = set()
        u.example_ids.append(e.id)
        for item in e.profile:
            k = _item_key(item)
            if k not in seen[gkey]:
                seen[gkey].add(k)
                u.items.append(dict(item))
    return list(users.values())


# ------------------------------------------------------------------------------ LaMP-7 neutralising
_URL = re.compile(r"(?:https?://|www\.)\S+")
_EMOTICON = re.compile(
    r"(?<!\S)(?:[:;=8][\-^'o]?[)(\]\[DPpOo/\\|*3>@$S]+|[xX][DdPp]+|[)(\]\[\\/]+[\-^']?[:;=]|</?3+|\^_*\^|-_+-|o_O|O_o)(?!\S)"
)
_INTERJECTION = re.compile(
    r"^(?:lo+l(?:ol)*z?|lmf?ao+|lmbo|rofl|(?:ha){2,}h?|(?:he){2,}h?|ha+h+a+h*|ahah\w*|bwa+h\w*|omf?g+|ugh+|argh+|"
    r"ya+y+|wo+ho+o*|xo(?:xo)+|x+|smh|fml|a+w+|hm+|meh|ahh+)$",
    re.IGNORECASE,
)
_TEXT_SPEAK = {
    "u": "you", "ur": "your", "r": "are", "ya": "you", "yr": "your", "pls": "please", "plz": "please",
    "thx": "thanks", "thanx": "thanks", "thnx": "thanks", "ty": "thank you", "cuz": "because", "coz": "because",
    "cos": "because", "bc": "because", "b/c": "because", "2nite": "tonight", "2day": "today", "2moro": "tomorrow",
    "2morrow": "tomorrow", "tmrw": "tomorrow", "tmr": "tomorrow", "gr8": "great", "luv": "love", "wanna": "want to",
    "gonna": "going to", "gotta": "have to", "kinda": "kind of", "sorta": "sort of", "dunno": "don't know",
    "idk": "I don't know", "im": "I'm", "dont": "don't", "cant": "can't", "didnt": "didn't", "doesnt": "doesn't",
    "isnt": "isn't", "ive": "I've", "thats": "that's", "whats": "what's", "w/": "with", "b4": "before",
    "btw": "by the way", "omw": "on my way", "nvm": "never mind", "tho": "though", "thru": "through",
    "nite": "night", "ppl": "people", "bday": "birthday", "n": "and", "wat": "what", "kno": "know", "tha": "the",
    "abt": "about", "bout": "about", "prob": "probably", "def": "definitely", "rly": "really",
    "srsly": "seriously", "k": "okay", "yea": "yeah", "ya'll": "you all", "y'all": "you all",
    "i": "I", "i'm": "I'm", "i'll": "I'll", "i've": "I've", "i'd": "I'd",
}  # fmt: skip
_EDGE_PUNCT = re.compile(r"^([\"'(\[]*)(.*?)([\"')\].,!?;:]*)$", re.DOTALL)


def _is_emoji(ch: str) -> bool:
    """Emoji and pictographs (symbols from the arrows block up; keeps (c), degree, ^ and the like)."""
    o = ord(ch)
    return (o >= 0x2190 and unicodedata.category(ch) in ("So", "Sk")) or 0xFE00 <= o <= 0xFE0F or o == 0x200D


def _de_elongate(word: str) -> str:
    """``sooo`` -> ``so``, ``goood`` -> ``good``: a run of 3+ letters becomes one at a word's end, two inside."""
    word = re.sub(r"([A-Za-z])\1{2,}$", r"\1", word)
    return re.sub(r"([A-Za-z])\1{2,}", r"\1\1", word)


def _neutral_token(tok: str) -> str:
    if tok.startswith(("@", "#")):  # mentions and hashtags are content; LaMP's paraphrases keep them
        return tok
    m = _EDGE_PUNCT.match(tok)
    lead, core, trail = (m.group(1), m.group(2), m.group(3)) if m else ("", tok, "")
    if _INTERJECTION.match(core):
        return ""
    core = _de_elongate(core)
    low = core.lower()
    if low in _TEXT_SPEAK:
        core = _TEXT_SPEAK[low]
    elif len(core) >= 4 and core.isalpha() and core.isupper():  # shouting; short all-caps words may be acronyms
        core = low
    trail = re.sub(r"([!?])[!?]+", r"\1", trail)
    trail = re.sub(r"\.{2,}", ".", trail)
    return f"{lead}{core}{trail}"


def neutralize_text(text: str) -> str:
    """A style-neutral version of a tweet (what a paraphrase keeps: content, mentions, hashtags).

    HTML entities decoded, URLs, emoticons, emoji and interjections (lol, haha, omg, ugh, xx...)
    removed, elongations and repeated punctuation collapsed, common text-speak expanded (u -> you,
    gonna -> going to, im -> I'm), shouted words lowercased, first letter capitalised, a final period
    added.  Deterministic; may return "" (a tweet of only emoticons or interjections).
    """
    s = html.unescape(html.unescape(str(text)))
    s = _URL.sub(" ", s)
    s = "".join(" " if _is_emoji(ch) else ch for ch in s)
    s = _EMOTICON.sub(" ", s)
    s = re.sub(r"([!?])[!?]+", r"\1", s)
    s = re.sub(r"\.{2,}", ". ", s)
    words = [w for w in (_neutral_token(t) for t in s.split()) if any(ch.isalnum() for ch in w) or w in ("&", "/", "+")]
    s = " ".join(words).strip(" -~|,;")
    if not s:
        return ""
    s = _capitalize(s)
    if s[-1].isalnum():
        s += "."
    return s


def _capitalize(s: str) -> str:
    """``s`` with its first letter upper-cased, unless it opens with a mention or a hashtag."""
    i = next((j for j, ch in enumerate(s) if ch.isalpha()), None)
    if i is None or s.startswith(("@", "#")):
        return s
    return s[:i] + s[i].upper() + s[i + 1 :]


# how LaMP's quoted paraphrases of a reply treat its mention (31 quoted replies among the 989 real LaMP-7 dev
# inputs): dropped 18, moved behind the quotation as an attribution 8, kept inside it 5
QUOTED_REPLY_FORMS = (("dropped", 18), ("attribution", 8), ("inside", 5))


def quote_text(text: str, rng: random.Random) -> str:
    """``text`` (a neutral tweet) as LaMP's paraphrases sometimes give it: in double quotes.  A reply (a leading
    @-mention) loses its mention, keeps it inside the quotation, or has it moved behind the quotation as its
    attribution (``"..." - @name``, ``"...," tweeted @name.``), as often as the real LaMP-7 dev inputs do
    (:data:`QUOTED_REPLY_FORMS`).  Never raises."""
    s = str(text).strip()
    m = re.match(r"(@\w{1,30})[\s,:;]+(\S.*)$", s, re.DOTALL)
    if m is None:
        return f'"{s}"'
    form = rng.choices([f for f, _ in QUOTED_REPLY_FORMS], weights=[w for _, w in QUOTED_REPLY_FORMS])[0]
    if form == "inside":
        return f'"{s}"'
    mention, rest = m.group(1), m.group(2)
    rest = _capitalize(rest)
    if form == "dropped":
        return f'"{rest}"'
    if rng.random() < 0.5:
        return f'"{rest}" - {mention}'
    return f'"{rest.rstrip(".")}," tweeted {mention}.' if rest.endswith(".") else f'"{rest}" tweeted {mention}.'


# ------------------------------------------------------------------------------------------ leakage
def _norm(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


def _item_keys(t: LaMPTask, item: dict[str, Any]) -> set[tuple[str, str]]:
    """What an item can leak through: its id, its question text(s), its output text (generation)."""
    keys = set()
    if item.get("id") not in (None, ""):
        keys.add(("id", str(item["id"])))
    for f in t.question_fields:
        if _norm(item.get(f, "")):
            keys.add(("q", _norm(item[f])))
    if not t.answers.closed and t.output_field and _norm(item.get(t.output_field, "")):
        keys.add(("o", _norm(item[t.output_field])))
    return keys


def _leak_keys(t: LaMPTask, shown: str, gold: str, item_id: Any = None) -> set[tuple[str, str]]:
    keys = {("q", _norm(shown))}
    if item_id not in (None, ""):
        keys.add(("id", str(item_id)))
    if not t.answers.closed:  # a free-text gold can stand in another item as its output
        keys.add(("o", _norm(gold)))
        if t.output_field in t.question_fields:  # LaMP-7: the gold is also a question text
            keys.add(("q", _norm(gold)))
    return {k for k in keys if k[1]}


def find_leaks(example: Example, task: LaMPTask | str) -> list[int]:
    """Profile indices that give away a LOO example's answer: the held-out item (by ``id`` as
    recorded in ``extra["loo"]``) or any item with the question's text or (generation) the gold."""
    t = get_task(task)
    held = (example.extra.get("loo") or {}).get("item_id")
    keys = _leak_keys(t, t.retrieval_query(example.input), example.gold or "", held)
    return [i for i, p in enumerate(example.profile) if _item_keys(t, p) & keys]


def without_asked_items(examples: Sequence[Example], task: LaMPTask | str) -> list[Example]:
    """The examples with every profile item that one of them asks about removed (by question text).

    LaMP keeps a question's own item out of its profile, but a user with several questions can hold one
    question's item (with its gold) in another question's profile.  Training questions built from these
    profiles for a model that is then evaluated on the same questions must not see those items."""
    t = check_buildable(task)
    asked = {("q", _norm(t.retrieval_query(e.input))) for e in examples} - {("q", "")}
    out = []
    for e in examples:
        kept = [p for p in e.profile if not (_item_keys(t, p) & asked)]
        out.append(Example(id=e.id, input=e.input, profile=kept, gold=None, user_id=e.user_id, extra=dict(e.extra)))
    return out


# ------------------------------------------------------------------------------------------- build
def check_buildable(task: LaMPTask | str) -> LaMPTask:
    """The task, or a ``ValueError`` naming it and why its questions cannot come from profile items."""
    t = get_task(task)
    if t.question_template is None or t.output_field is None:
        why = _NOT_BUILDABLE.get(t.name, "the registry has no single-item question or output field for it")
        raise ValueError(f"{t.name}: cannot build leave-one-out questions from profile items: {why}")
    return t


def build_loo(
    examples: Sequence[Example],
    task: LaMPTask | str,
    per_user: int = 1,
    seed: int = 0,
    min_profile: int = 4,
    input_style: str = "neutral",
    quoted: float = 0.0,
) -> list[Example]:
    """Leave-one-out questions (with golds) from the histories of a loaded split's users.

    ``per_user`` items are held out per user (all usable ones when fewer); each must leave at least
    ``min_profile`` profile items once it and its duplicates are removed.  Users with no such item are
    skipped; a ``ValueError`` names the task and the reason when no question at all can be built.
    ``input_style`` matters only where the question shows the gold field (LaMP-7): ``"neutral"`` or
    ``"copy"`` (see the module docstring); ``quoted``: the share of neutral inputs given as quotations
    (:func:`quote_text`; each item's draw is seeded by task, seed, user and item).  Question ids are ``<user>-loo-<item id or index>``; the
    user's key becomes ``user_id`` and ``extra["loo"]`` records the held-out item's id and index.
    """
    t = check_buildable(task)
    if per_user < 1:
        raise ValueError(f"{t.name}: per_user must be >= 1 (got {per_user})")
    if min_profile < 1:
        raise ValueError(f"{t.name}: min_profile must be >= 1 (got {min_profile})")
    if input_style not in INPUT_STYLES:
        raise ValueError(f"{t.name}: input_style must be one of {', '.join(INPUT_STYLES)} (got {input_style!r})")
    if not 0.0 <= quoted <= 1.0:
        raise ValueError(f"{t.name}: quoted must be a share between 0 and 1 (got {quoted})")
    if not examples:
        raise ValueError(f"{t.name}: no examples to build leave-one-out questions from")
    restyle = input_style == "neutral" and t.output_field in t.question_fields

    out: list[Example] = []
    users = group_users(examples)
    best = 0
    for user in users:
        items = user.items
        index: dict[tuple[str, str], list[int]] = defaultdict(list)
        for j, item in enumerate(items):
            for k in _item_keys(t, item):
                index[k].append(j)
        candidates: list[tuple[int, dict[str, Any], str, set[int]]] = []
        for i, item in enumerate(items):
            gold = t.item_output(item)
            if t.answers.closed:
                gold = gold.strip()
            if not t.is_valid_answer(gold) or not all(_norm(item.get(f, "")) for f in t.question_fields):
                continue
            shown_item = dict(item)
            if restyle:
                shown_item[t.output_field] = neutralize_text(item[t.output_field])
                if not shown_item[t.output_field]:
                    continue
                if quoted:
                    draw = random.Random(f"tagpr-loo-quoted:{t.name}:{seed}:{user.key}:{i}")
                    if draw.random() < quoted:
                        shown_item[t.output_field] = quote_text(shown_item[t.output_field], draw)
            shown = " ".join(str(shown_item[f]) for f in t.question_fields)
            drop = {i} | {j for k in _item_keys(t, item) | _leak_keys(t, shown, gold) for j in index.get(k, ())}
            left = len(items) - len(drop)
            best = max(best, left)
            if left >= min_profile:
                candidates.append((i, shown_item, gold, drop))
        rng = random.Random(f"tagpr-loo:{t.name}:{seed}:{user.key}")
        chosen = sorted(rng.sample(range(len(candidates)), min(per_user, len(candidates))))
        for c in chosen:
            i, shown_item, gold, drop = candidates[c]
            item_id = items[i].get("id")
            tag = item_id if item_id not in (None, "") else f"i{i}"
            out.append(Example(
                id=f"{user.key}-loo-{tag}", input=t.question(shown_item),
                profile=[dict(p) for j, p in enumerate(items) if j not in drop], user_id=user.key, gold=gold,
                extra={"loo": {"item_id": None if item_id in (None, "") else str(item_id), "item_index": i}},
            ))  # fmt: skip
    if not out:
        raise ValueError(
            f"{t.name}: no leave-one-out question could be built: none of {len(users)} user(s) has a usable item "
            f"that leaves at least min_profile={min_profile} other profile item(s) (most left: {best})"
        )
    ids = [e.id for e in out]
    if len(set(ids)) != len(ids):  # a user key that collides with another's "<key>-loo-<id>"
        for n, e in enumerate(out):
            e.id = f"{e.id}-{n}"
    return out


def write_loo(
    examples: Sequence[Example], out_root: str | Path, task: LaMPTask | str, split: str = "train", overwrite: bool = False
) -> tuple[Path, Path]:
    """Write LOO examples as an official split: ``OUT/LaMP_N/{split}_questions.json`` + ``_outputs.json``.

    Refuses to replace existing files unless ``overwrite`` (an official split may live there)."""
    t = get_task(task)
    d = Path(out_root) / t.name.replace("-", "_")
    targets = [d / f"{split}_questions.json", d / f"{split}_outputs.json"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True (--overwrite) to replace it")
    if any(e.gold is None for e in examples):
        raise ValueError(f"{t.name}: every leave-one-out example needs a gold")
    return write_examples(examples, d, t, split)
