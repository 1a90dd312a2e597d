"""Teachers write tagged reasoning chains for an example and its retrieved (shown) profile items.

* :class:`AnalyticTeacher` reasons from measured statistics, with no language model: a naive-Bayes
  label-word model fitted on every user's profile items gives what the input alone suggests; the
  user's own label frequencies (classification), rating bias (rating) or style features (generation)
  give what this user would do.  Its chains cite the shown items that support the decision.
* :class:`ModelTeacher` asks any generation backend (a local model, an OpenAI-compatible server) for
  chains in the tag grammar, ``n`` samples at a time, and for rationalizations given the gold as a hint.

Both take a :class:`ChainRequest` and return chain texts; the pipeline (``chains.py``) validates,
rejects and stores them.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tagpr.data.loading import Example
from tagpr.generation.base import GenerationBackend, SamplingParams
from tagpr.prompts import build_tagpr_messages
from tagpr.tasks import LaMPTask, get_task

_STOP = frozenset(
    "the a an and or of to in on for with is it this that was are be as at by from my i me you your we our "
    "they their he she his her its not but so if very just have has had do does did will would can could "
    "what which who how when where about into than then there these those been being also more most".split()
)


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if w not in _STOP and len(w) > 2]


@dataclass
class ChainRequest:
    task: LaMPTask
    example: Example
    items: list[dict[str, Any]]  # the retrieved items the chain may cite, as [1]..[k]
    hint: str | None = None  # the gold, for rationalization

    @property
    def query(self) -> str:
        return self.task.retrieval_query(self.example.input)


class Teacher(Protocol):
    name: str

    def write(self, requests: Sequence[ChainRequest], n: int) -> list[list[str]]:
        """``n`` chain texts per request (fewer when a teacher has fewer distinct chains)."""
        ...


# ------------------------------------------------------------------------------ label-word model
@dataclass
class LabelWordModel:
    """Multinomial naive Bayes over every user's profile items: item document -> the user's output."""

    labels: list[str]
    log_lik: dict[str, dict[str, float]]
    log_unk: dict[str, float]
    log_prior: dict[str, float]

    @classmethod
    def fit(cls, task: LaMPTask | str, examples: Sequence[Example], alpha: float = 0.5) -> "LabelWordModel":
        t = get_task(task)
        counts: dict[str, Counter] = {}
        docs: Counter = Counter()
        for e in examples:
            for item in e.profile:
                label = t.item_output(item).strip()
                if t.kind == "classification" and label not in (t.labels or ()):
                    continue
                counts.setdefault(label, Counter()).update(words(t.document(item)))
                docs[label] += 1
        if not counts:
            raise ValueError(f"{t.name}: no labelled profile items to fit the label-word model on")
        vocab = set().union(*counts.values())
        labels = sorted(counts)
        total_docs = sum(docs.values())
        log_lik, log_unk, log_prior = {}, {}, {}
        for lab in labels:
            c = counts[lab]
            denom = sum(c.values()) + alpha * (len(vocab) + 1)
            log_lik[lab] = {w: math.log((n + alpha) / denom) for w, n in c.items()}
            log_unk[lab] = math.log(alpha / denom)
            log_prior[lab] = math.log(docs[lab] / total_docs)
        return cls(labels, log_lik, log_unk, log_prior)

    def log_likelihood(self, text: str) -> dict[str, float]:
        """log P(words | label) for each label (no prior); unseen words are skipped."""
        ws = [w for w in words(text) if any(w in self.log_lik[lab] for lab in self.labels)]
        return {lab: sum(self.log_lik[lab].get(w, self.log_unk[lab]) for w in ws) for lab in self.labels}

    def posterior(self, text: str, log_prior: Mapping[str, float] | None = None) -> dict[str, float]:
        prior = log_prior or self.log_prior
        ll = self.log_likelihood(text)
        scores = {lab: ll[lab] + prior.get(lab, -30.0) for lab in self.labels}
        m = max(scores.values())
        z = sum(math.exp(v - m) for v in scores.values())
        return {lab: math.exp(v - m) / z for lab, v in scores.items()}

    def evidence_words(self, text: str, label: str, k: int = 3) -> list[str]:
        """Words of ``text`` that point most to ``label`` against the other labels."""
        others = [lab for lab in self.labels if lab != label]
        scored = []
        for w in dict.fromkeys(words(text)):
            if w not in self.log_lik.get(label, {}):
                continue
            rest = max((self.log_lik[o].get(w, self.log_unk[o]) for o in others), default=-30.0)
            scored.append((self.log_lik[label][w] - rest, w))
        return [w for s, w in sorted(scored, reverse=True)[:k] if s > 0]


# ------------------------------------------------------------------------------- style features
_EMOJI_RE = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")


def style_profile(texts: Sequence[str]) -> dict[str, Any]:
    """Surface style of a user's texts: case, length, hashtags, mentions, emoji, frequent words."""
    n = max(1, len(texts))
    toks = [t.split() for t in texts]
    first = Counter(tk[0].lower() for tk in toks if tk)
    last = Counter(tk[-1].lower() for tk in toks if tk)
    common = Counter(w for t in texts for w in set(words(t)))
    return {
        "n": len(texts),
        "lowercase": sum(t == t.lower() for t in texts) / n,
        "mean_words": sum(len(tk) for tk in toks) / n,
        "hashtag": sum("#" in t for t in texts) / n,
        "mention": sum("@" in t for t in texts) / n,
        "emoji": sum(bool(_EMOJI_RE.search(t)) for t in texts) / n,
        "exclaim": sum("!" in t for t in texts) / n,
        "opener": first.most_common(1)[0] if first else None,
        "closer": last.most_common(1)[0] if last else None,
        "frequent": [w for w, _ in common.most_common(5)],
    }


def _pct(x: float) -> str:
    return f"{round(100 * x)}%"


# ----------------------------------------------------------------------------- analytic teacher
class AnalyticTeacher:
    """Correct tagged chains from profile statistics (the CPU default; no language model).

    ``fit(examples)`` measures the corpus (every user's profile items).  With ``n > 1`` it samples
    answers from its own posterior at ``temperature`` (so rejection sampling has something to reject);
    the first chain is always the most likely answer.  With a hint it writes the chain to the hint.
    """

    name = "analytic"

    def __init__(self, task: LaMPTask | str, temperature: float = 1.0, seed: int = 0, style: str = "full"):
        if style not in CHAIN_STYLES:
            raise ValueError(f"chain style {style!r} is not one of {', '.join(CHAIN_STYLES)}")
        self.task = get_task(task)
        self.style = style
        self.temperature = temperature
        self.seed = seed
        self.model: LabelWordModel | None = None

    def fit(self, examples: Sequence[Example]) -> "AnalyticTeacher":
        if self.task.kind != "generation":
            self.model = LabelWordModel.fit(self.task, examples)
        return self

    # ---------------------------------------------------------------------------------- public
    def write(self, requests: Sequence[ChainRequest], n: int) -> list[list[str]]:
        out = []
        for r in requests:
            rng = random.Random(f"{self.seed}:{r.example.id}:{r.hint}")
            if self.task.kind == "classification":
                chains = self._classification(r, n, rng)
            elif self.task.kind == "rating":
                chains = self._rating(r, n, rng)
            else:
                chains = [self._generation(r)]
            out.append(list(dict.fromkeys(chains)))
        return out

    def predict(self, example: Example) -> str:
        """The teacher's most likely answer (what its first chain concludes)."""
        r = ChainRequest(self.task, example, [])
        if self.task.kind == "classification":
            return self._label_scores(r)[0][0]
        if self.task.kind == "rating":
            return str(self._rating_estimate(r)[0])
        return self._styled(r)[0]

    # -------------------------------------------------------------------------- classification
    def _model(self) -> LabelWordModel:
        if self.model is None:
            raise RuntimeError("AnalyticTeacher.fit(examples) must run first")
        return self.model

    def _user_prior(self, e: Example) -> tuple[dict[str, float], Counter]:
        m = self._model()
        counts = Counter(self.task.item_output(p).strip() for p in e.profile)
        total = sum(counts[lab] for lab in m.labels)
        prior = {lab: math.log((counts[lab] + 0.5) / (total + 0.5 * len(m.labels))) for lab in m.labels}
        return prior, counts

    def _label_scores(self, r: ChainRequest) -> list[tuple[str, float]]:
        prior, _ = self._user_prior(r.example)
        post = self._model().posterior(r.query, prior)
        return sorted(post.items(), key=lambda kv: -kv[1])

    def _classification(self, r: ChainRequest, n: int, rng: random.Random) -> list[str]:
        m = self._model()
        ranked = self._label_scores(r)
        blind = sorted(m.posterior(r.query).items(), key=lambda kv: -kv[1])
        _, counts = self._user_prior(r.example)
        answers = [r.hint] if r.hint else [ranked[0][0]]
        while len(answers) < n and not r.hint:
            answers.append(_sample(ranked, self.temperature, rng))
        total = sum(counts.values()) or 1
        freq = ", ".join(f'"{lab}" {_pct(c / total)}' for lab, c in counts.most_common(3))
        chains = []
        for ans in answers:
            ev = m.evidence_words(r.query, ans)
            blind_top = ", ".join(f'"{lab}"' for lab, _ in blind[:2])
            cites = [i for i, it in enumerate(r.items, 1) if self.task.item_output(it).strip() == ans][:3]
            others = [i for i in range(1, len(r.items) + 1) if i not in cites][:2]
            history = (f"{_cite(cites)} {'is' if len(cites) == 1 else 'are'} tagged \"{ans}\""
                       if cites else f"none of the shown items is tagged \"{ans}\"")
            if others:
                history += "; " + "; ".join(f'[{i}] is tagged "{self.task.item_output(r.items[i - 1]).strip()}"'
                                            for i in others)
            share = counts.get(ans, 0) / total
            steps = [
                ("understand_task", "Give the one label this user would pick, from the list."),
                ("analyze_query", f"The input's telling words are {_words(m.evidence_words(r.query, blind[0][0]) or words(r.query)[:3])}; "
                                  f"alone they suggest {blind_top}."),
                ("examine_history", f"Among the shown items, {history}."),
                ("identify_patterns", f"Over all {total} items of this user the most used labels are {freq}."),
                ("infer_preference", f"This user gives \"{ans}\" to {_pct(share)} of their items"
                                     + (" and leans toward it." if share >= 0.2 else ".")),
                ("cross_reference", f"The input's words {_words(ev) if ev else 'fit several labels'}; "
                                    f"weighed by this user's habits, \"{ans}\" fits best."),
                ("draft_answer", f"\"{ans}\"" + (f", or \"{ranked[1][0]}\"" if ranked[1][0] != ans else f", or \"{ranked[0][0]}\"")),
                ("verify", f"\"{ans}\" is a listed label."),
                ("conclude", f"The label is \"{ans}\"."),
            ]
            chains.append(_render(steps, ans, self.style))
        return chains

    # ---------------------------------------------------------------------------------- rating
    def _expected(self, text: str) -> float:
        post = self._model().posterior(text)
        return sum(float(lab) * p for lab, p in post.items())

    def _rating_estimate(self, r: ChainRequest) -> tuple[int, float, float]:
        diffs = []
        for p in r.example.profile:
            try:
                diffs.append(float(self.task.item_output(p)) - self._expected(self.task.document(p)))
            except ValueError:
                continue
        bias = sum(diffs) / len(diffs) if diffs else 0.0
        content = self._expected(r.query)
        return int(min(5, max(1, round(content + bias)))), content, bias

    def _rating(self, r: ChainRequest, n: int, rng: random.Random) -> list[str]:
        best, content, bias = self._rating_estimate(r)
        answers = [int(float(r.hint))] if r.hint and _is_number(r.hint) else [best]
        while len(answers) < n and not r.hint:
            answers.append(int(min(5, max(1, best + rng.choice((-1, 0, 0, 1))))))
        scores = [float(self.task.item_output(p)) for p in r.example.profile if _is_number(self.task.item_output(p))]
        mean = sum(scores) / len(scores) if scores else 3.0
        dist = Counter(int(round(s)) for s in scores)
        chains = []
        for ans in answers:
            near = [i for i, it in enumerate(r.items, 1) if _is_number(self.task.item_output(it))
                    and abs(float(self.task.item_output(it)) - ans) <= 0.5][:3]
            shown = "; ".join(f"[{i}] got {self.task.item_output(it)}" for i, it in enumerate(r.items[:3], 1))
            steps = [
                ("understand_task", "Give the 1-5 score this user would give the review."),
                ("analyze_query", f"The review's wording reads like a {content:.1f} out of 5 on its own "
                                  f"(words: {_words(words(r.query)[:4])})."),
                ("examine_history", (f"Similar reviews: {shown}." if shown else "No similar review is shown.")
                 + (f" {_cite(near)} match a {ans}." if near else "")),
                ("identify_patterns", f"This user's {len(scores)} scores average {mean:.1f} "
                                      f"({', '.join(f'{k}: {v}' for k, v in sorted(dist.items()))})."),
                ("infer_preference", f"Against what their reviews' words suggest, this user scores "
                                     f"{abs(bias):.1f} {'higher' if bias >= 0 else 'lower'} on average."),
                ("cross_reference", f"{content:.1f} {'+' if bias >= 0 else '-'} {abs(bias):.1f} gives about "
                                    f"{content + bias:.1f} for this review."),
                ("draft_answer", f"{ans}"),
                ("verify", f"{ans} is between 1 and 5."),
                ("conclude", f"The score is {ans}."),
            ]
            chains.append(_render(steps, str(ans), self.style))
        return chains

    # ------------------------------------------------------------------------------ generation
    def _styled(self, r: ChainRequest) -> tuple[str, dict[str, Any]]:
        from tagpr.data.synthetic import infer_style, stylize

        style = infer_style(r.example.profile)
        return stylize(r.query, style), style

    def _generation(self, r: ChainRequest) -> str:
        answer, style = (r.hint, None) if r.hint else self._styled(r)
        texts = [self.task.item_output(p) for p in r.example.profile]
        sp = style_profile(texts)
        marks = []
        if sp["lowercase"] >= 0.8:
            marks.append(f"writes in lower case ({_pct(sp['lowercase'])} of texts)")
        if sp["opener"] and sp["opener"][1] >= 0.2 * sp["n"]:
            marks.append(f"often opens with \"{sp['opener'][0]}\"")
        if sp["closer"] and sp["closer"][1] >= 0.2 * sp["n"]:
            marks.append(f"often ends with \"{sp['closer'][0]}\"")
        for key, what in (("hashtag", "hashtags"), ("mention", "mentions"), ("emoji", "emoji"), ("exclaim", "exclamation marks")):
            if sp[key] >= 0.3:
                marks.append(f"uses {what} ({_pct(sp[key])})")
        if style and style.get("abbreviate"):
            marks.append("abbreviates words (u, 2, 4)")
        habits = "; ".join(marks) or "writes plainly, with no strong markers"
        shown = [i for i in range(1, len(r.items) + 1)][:2]
        n_in = len(r.query.split())
        steps = [
            ("understand_task", "Rewrite the tweet as this user would write it."),
            ("analyze_query", f"The tweet has {n_in} words: {_clip(r.query, 8)}"),
            ("examine_history", (f"{_cite(shown)} show how this user writes: "
                                 + "; ".join(f"[{i}] \"{_clip(self.task.item_output(r.items[i - 1]), 6)}\"" for i in shown))
             if shown else "No tweet of this user is shown."),
            ("identify_patterns", f"Over {sp['n']} tweets the user averages {sp['mean_words']:.0f} words and {habits}."),
            ("infer_preference", "Keep the content; carry these habits."),
            ("cross_reference", "Same content in the user's case, openers, closers and abbreviations."),
            ("draft_answer", answer),
            ("verify", "Same meaning, the user's style, nothing around it."),
            ("conclude", "Answer with the rewritten tweet."),
        ]
        return _render(steps, answer, self.style)


CHAIN_STYLES = ("full", "compact")
# the compact form keeps five of the nine tags (the grammar needs understand_task first, examine_history,
# conclude last): about half the tokens of the full chain, for small models and cheap RL rollouts
COMPACT_TAGS = ("understand_task", "examine_history", "identify_patterns", "cross_reference", "conclude")


def _render(steps: Sequence[tuple[str, str]], answer: str, style: str = "full") -> str:
    if style == "compact":
        steps = [(tag, text) for tag, text in steps if tag in COMPACT_TAGS]
    body = "\n".join(f"<{tag}>{text}</{tag}>" for tag, text in steps)
    return f"<think>\n{body}\n</think>\n<answer>{answer}</answer>"


def _sample(ranked: Sequence[tuple[str, float]], temperature: float, rng: random.Random) -> str:
    if temperature <= 0:
        return ranked[0][0]
    weights = [p ** (1.0 / temperature) for _, p in ranked]
    return rng.choices([lab for lab, _ in ranked], weights=weights, k=1)[0]


def _cite(idx: Sequence[int]) -> str:
    return ", ".join(f"[{i}]" for i in idx)


def _words(ws: Sequence[str]) -> str:
    return ", ".join(f'"{w}"' for w in ws) if ws else "none in particular"


def _clip(text: str, n: int) -> str:
    ws = str(text).split()
    return " ".join(ws[:n]) + (" ..." if len(ws) > n else "")


def _is_number(s: object) -> bool:
    try:
        return math.isfinite(float(str(s)))
    except ValueError:
        return False


# -------------------------------------------------------------------------------- model teacher
HINT_LEAK_RE = re.compile(r"\b(hint|gold|reference answer|correct answer|given answer|expected answer|told|"
                          r"the answer is given|we know the answer)\b", re.IGNORECASE)


def leaks_hint(chain: str) -> bool:
    """Whether a rationalized chain mentions that it was given the answer (such chains are dropped)."""
    think = chain.split("</think>")[0] if isinstance(chain, str) else ""
    return bool(HINT_LEAK_RE.search(think))


@dataclass
class ModelTeacher:
    """Chains from a language model through any generation backend (n samples per request)."""

    backend: GenerationBackend
    task: LaMPTask
    temperature: float = 0.8
    max_new_tokens: int = 512
    name: str = "model"
    system: str | None = field(default=None)

    def prompt(self, r: ChainRequest) -> list[dict[str, str]]:
        msgs = build_tagpr_messages(self.task, r.example.input, r.items, hint=r.hint)
        if self.system:
            msgs[0]["content"] = self.system
        return msgs

    def write(self, requests: Sequence[ChainRequest], n: int) -> list[list[str]]:
        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature if n > 1 else 0.0, n=n)
        gens = self.backend.generate([self.prompt(r) for r in requests], params)
        return [[g.text for g in row] for row in gens]
