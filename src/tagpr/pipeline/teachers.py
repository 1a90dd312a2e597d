"""Teachers write tagged reasoning chains for an example and its retrieved (shown) profile items.

* :class:`AnalyticTeacher` reasons from measured statistics, with no language model: a naive-Bayes
  label-word model fitted on every user's profile items gives what the input alone suggests; the
  user's own label frequencies (classification), score distribution and most similar reviews (rating)
  or measured writing habits (generation, ``style.py``) give what this user would do.  Its chains cite
  the shown items that support the decision.  On real data its answers are measured against the
  trivial floors (``benchmarks/teacher_quality.py``, ``tests/test_teachers_real.py``).
* :class:`ModelTeacher` asks any generation backend (a local model, an OpenAI-compatible server) for
  chains in the tag grammar, ``n`` samples at a time, and for rationalizations given the gold as a hint.

Both take a :class:`ChainRequest` and return chain texts; the pipeline (``chains.py``) validates,
rejects and stores them.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tagpr.data.loading import Example
from tagpr.generation.base import GenerationBackend, SamplingParams
from tagpr.pipeline.style import DEFAULT_KINDS, Habit, measure_habits, rewrite, style_profile
from tagpr.prompts import build_tagpr_messages
from tagpr.retrieval import BM25Retriever
from tagpr.tags import COMPACT_TAGS, PROMPT_STYLES, parse_chain
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
        seen: set[tuple[str, str]] = set()
        for e in examples:
            for item in e.profile:
                label = t.answers.canonical(t.item_output(item))  # a listed label, a scale point
                if label is None:
                    continue
                doc = t.document(item)
                if (label, doc) in seen:  # an item in several examples' profiles counts once (measured on
                    continue  # real LaMP-3, where each user's questions share a profile: MAE 0.53 -> 0.41)
                seen.add((label, doc))
                counts.setdefault(label, Counter()).update(words(doc))
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

    def posterior(self, text: str, log_prior: Mapping[str, float] | None = None,
                  words_worth: float | None = None) -> dict[str, float]:
        """P(label | text) under ``log_prior`` (the corpus prior by default).  With ``words_worth`` the text's
        evidence is the average known word's log-likelihood times ``words_worth`` (naive Bayes is overconfident
        on long texts; a whole review then weighs as much as that many words)."""
        prior = log_prior or self.log_prior
        ll = self.log_likelihood(text)
        if words_worth is not None:
            n = sum(1 for w in words(text) if any(w in self.log_lik[lab] for lab in self.labels))
            ll = {lab: v * words_worth / n for lab, v in ll.items()} if n else {lab: 0.0 for lab in ll}
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

    def __init__(self, task: LaMPTask | str, temperature: float = 1.0, seed: int = 0, style: str = "full",
                 k: int = 4, retriever: Any = None, rule: str = "fitted"):
        if style not in CHAIN_STYLES:
            raise ValueError(f"chain style {style!r} is not one of {', '.join(CHAIN_STYLES)}")
        self.task = get_task(task)
        self.style = style
        self.temperature = temperature
        self.seed = seed
        self.k = k  # items the student is shown (compact chains read their answer off them)
        self.model: LabelWordModel | None = None
        self._bm25 = BM25Retriever()  # the rating estimate's similar reviews over the whole profile
        self._shown_by = retriever or self._bm25  # how the student's items are chosen (the chain builder's)
        # fitted | each (one chain per rule for each request, the fitted rule's first) | a rule of compact_rules
        self.rule_setting = check_rule(self.task, rule, style)
        self.rule = self._set_rule("nearest")  # the compact chains' rule (compact_rules), fitted in fit()
        self.rule_error: dict[str, float] = {}  # per rule on the fit examples: MAE (rating) or error rate (labels)

    def fit(self, examples: Sequence[Example]) -> "AnalyticTeacher":
        if self.task.answers.closed:
            self.model = LabelWordModel.fit(self.task, examples)
            if self.style == "compact":
                fitted, self.rule_error = self._choose_rule(examples)
                self.rule = self._set_rule(fitted)
        return self

    def _set_rule(self, fitted: str) -> str:
        """The rule the chains read their answer with: the one ``rule`` names, else ``fitted``."""
        return fitted if self.rule_setting in ("fitted", "each") else self.rule_setting

    def _choose_rule(self, examples: Sequence[Example]) -> tuple[str, dict[str, float]]:
        """The compact chains' rule with the lowest error on the fit examples that have golds, read off the ``k``
        items they would be shown: :data:`RATING_RULES` by MAE (the nearest review's score wins where reviews that
        share words share scores, as for the synthetic users; the middle of the shown scores where they do not, as
        for real LaMP-3: MAE 0.379 against 0.546 on the 240 shared questions), :data:`LABEL_RULES` by error rate."""
        rules = RATING_RULES if self.task.answers.ordered else LABEL_RULES
        errors: dict[str, list[float]] = {name: [] for name in rules}
        for e in examples:
            if e.gold is None:
                continue
            r = ChainRequest(self.task, e, [e.profile[i] for i in self._shown_by.rank(e, self.task, self.k)])
            if self.task.answers.ordered:
                gold = self.task.answers.score(e.gold)
                if gold is None or not _shown_scores(self.task, r.items):
                    continue
                for name in rules:
                    errors[name].append(abs(self.rule_answer(r, name) - gold))
            else:
                ranked = self._label_scores(r)  # once per example, not once per rule
                for name in rules:
                    errors[name].append(float(self.rule_answer(r, name, ranked) != str(e.gold).strip()))
        err = {name: sum(v) / len(v) for name, v in errors.items() if v}
        if not err:
            return "nearest", {}
        return min(err, key=lambda name: (err[name], name != "nearest")), err

    def rule_answer(self, r: ChainRequest, rule: str | None = None,
                    ranked: Sequence[tuple[str, float]] | None = None) -> Any:
        """What rule ``rule`` (default: the fitted one) reads off ``r``'s shown items: a score (None when no shown
        item has one) or a label (the full posterior's when no shown item has a label).  ``ranked``: the labels'
        posterior for ``r`` when the caller has it already (``_label_scores``)."""
        rule = rule or self.rule
        if self.task.answers.ordered:
            shown = _shown_scores(self.task, r.items)
            return RATING_RULES[rule](shown) if shown else None
        shown = self._shown_labels(r)
        ranked = ranked if ranked is not None else self._label_scores(r)
        return LABEL_RULES[rule](shown, [lab for lab, _ in ranked]) if shown else ranked[0][0]

    def _shown_labels(self, r: ChainRequest) -> list[str]:
        """The labels of the shown items, in the order shown (most similar first), listed labels only."""
        return [lab for lab in (self.task.item_output(it).strip() for it in r.items)
                if lab in self.task.labels and not _CITELIKE.search(lab) and not _TAGLIKE.search(lab)]

    # ---------------------------------------------------------------------------------- public
    def write(self, requests: Sequence[ChainRequest], n: int) -> list[list[str]]:
        if self.rule_setting == "each":  # check_rule allows it only for compact chains of tasks with rules
            fitted, per_rule = self.rule, []
            try:  # the fitted rule's chains first, then every other rule's
                for rule in dict.fromkeys((fitted, *compact_rules(self.task))):
                    self.rule = rule
                    per_rule.append(self._write(requests, n))
            finally:
                self.rule = fitted
            return [list(dict.fromkeys(c for chains in group for c in chains)) for group in zip(*per_rule)]
        return self._write(requests, n)

    def _write(self, requests: Sequence[ChainRequest], n: int) -> list[list[str]]:
        out = []
        for r in requests:
            rng = random.Random(f"{self.seed}:{r.example.id}:{r.hint}")
            if not self.task.answers.closed:
                chains = [self._generation(r)]
            elif self.task.answers.ordered:
                chains = self._rating(r, n, rng)
            else:
                chains = self._classification(r, n, rng)
            out.append(list(dict.fromkeys(chains)))
        return out

    def predict(self, example: Example) -> str:
        """The teacher's most likely answer (what its first chain concludes)."""
        compact = self.style == "compact"  # read off the items the student is shown
        items = [example.profile[i] for i in self._shown_by.rank(example, self.task, self.k)] if compact else []
        r = ChainRequest(self.task, example, items)
        space = self.task.answers
        if not space.closed:
            return self._generation_answer(r)[0]
        if compact:
            return str(self._compact_rating_answer(r) if space.ordered else self.rule_answer(r))
        return str(self._rating_estimate(r).answer) if space.ordered else self._label_scores(r)[0][0]

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
        rule_answer = self.rule_answer(r, ranked=ranked) if self.style == "compact" else None
        if rule_answer is not None:  # compact: one answer, read off what the prompt shows (as for ratings)
            answers = [r.hint] if r.hint else [str(rule_answer)]
            n = 1
        else:
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
            if self.style == "compact":  # only what the prompt shows: the shown items' labels, the input's words
                steps = self._compact_classification(r, ans, ev, steps, rule_answer)
            chains.append(_render(steps, ans, self.style))
        return chains

    def _compact_classification(self, r: ChainRequest, ans: str, ev: Sequence[str],
                                full: Sequence[tuple[str, str]], rule_answer: str | None) -> list[tuple[str, str]]:
        """A short label chain that states only what the prompt shows (the shown items' labels, their counts,
        the input's telling words) and reads its answer off them with the fitted rule (``rule_answer``).  A hinted
        answer the rule does not give is tied to the input's words."""
        shown = self._shown_labels(r)
        counts = Counter(shown)
        labels = ", ".join(f'"{lab}" {c}' for lab, c in counts.most_common(3))
        cites = [i for i, it in enumerate(r.items, 1) if self.task.item_output(it).strip() == ans][:3]
        rule_answer = rule_answer if shown else None  # without shown labels it is the posterior's, not the rule's
        if rule_answer == ans and self.rule == "most-shown":
            cross = f'"{ans}" is the label this user gave most often among them.'
        elif rule_answer == ans and self.rule == "nearest":
            cross = f'{_cite(cites[:1])} is the item most like this one; this user tagged it "{ans}".'
        elif rule_answer == ans:  # best-shown
            cross = (f'Of these labels, the input\'s words {_words(ev) if ev else "fit"} fit "{ans}" best.')
        elif cites:
            cross = f'{_cite(cites)} {"is" if len(cites) == 1 else "are"} tagged "{ans}", and the input\'s words fit it.'
        else:
            cross = (f"The input's words {_words(ev) if ev else 'fit several labels'}; "
                     f'with this user\'s labels, "{ans}" fits best.')
        return [full[0],
                ("examine_history", "Shown labels: " + "; ".join(f'[{i}] "{self.task.item_output(it).strip()}"'
                                                                 for i, it in enumerate(r.items, 1)
                                                                 if self.task.item_output(it).strip() in shown) + "."
                 if shown else "No labelled item of this user is shown."),
                ("identify_patterns", f"Counted: {labels}." if shown else "No label of this user to count."),
                ("cross_reference", cross),
                full[-1]]

    # ---------------------------------------------------------------------------------- rating
    def _rating_estimate(self, r: ChainRequest) -> RatingEstimate:
        """The user's score distribution, times what the review's words say (naive Bayes, worth
        :data:`RATING_WORDS_WORTH` words), mixed with the scores of the user's most similar reviews
        (BM25 over their whole profile); the answer is the median of that (the MAE-optimal point)."""
        m = self._model()
        scale = self.task.answers
        labels = [lab for lab in m.labels if scale.score(lab) is not None]
        scored = [(i, s) for i, s in enumerate(scale.score(self.task.item_output(p)) for p in r.example.profile)
                  if s is not None]
        counts = Counter(s for _, s in scored)
        prior = {lab: math.log((counts[scale.score(lab)] + 0.5) / (len(scored) + 0.5 * len(labels))) for lab in labels}
        post = m.posterior(r.query, prior, RATING_WORDS_WORTH)
        text = {int(scale.score(lab)): p for lab, p in post.items() if lab in prior}
        content_post = m.posterior(r.query, words_worth=RATING_WORDS_WORTH)
        content = sum(scale.score(lab) * p for lab, p in content_post.items() if scale.score(lab) is not None)
        neighbours: list[tuple[int, int]] = []
        mix = {s: text.get(s, 0.0) for s in scale.values}
        if scored:
            docs = [self.task.document(r.example.profile[i]) for i, _ in scored]
            try:
                sims = self._bm25.scores(docs, r.query)
            except Exception:  # noqa: BLE001 - retrieval trouble leaves the estimate to the other evidence
                sims = [0.0] * len(docs)
            order = sorted(range(len(docs)), key=lambda j: -float(sims[j]))[:RATING_NEIGHBOURS]
            order = [j for j in order if float(sims[j]) > 0]
            total = sum(float(sims[j]) for j in order)
            if total > 0:
                neighbours = [scored[j] for j in order]
                w = RATING_NEIGHBOUR_WEIGHT
                mix = {s: (1 - w) * p for s, p in mix.items()}
                for j in order:
                    mix[scored[j][1]] += w * float(sims[j]) / total
        z = sum(mix.values()) or 1.0
        mix = {s: p / z for s, p in mix.items()}
        answer = scale.point_estimate(mix)
        return RatingEstimate(scale.high if answer is None else answer, mix, content, counts, neighbours)

    def _rating_task(self) -> str:
        return f"Give the {self.task.answers.low}-{self.task.answers.high} score this user would give the review."

    def _compact_rating_answer(self, r: ChainRequest) -> int:
        """What the compact chain concludes: the fitted rule over the shown scores (the full estimate when no
        shown item has a score)."""
        answer = self.rule_answer(r)
        return answer if answer is not None else self._rating_estimate(r).answer

    def _rating(self, r: ChainRequest, n: int, rng: random.Random) -> list[str]:
        est = self._rating_estimate(r)
        scale = self.task.answers
        hinted = scale.score(r.hint) if r.hint else None
        if self.style == "compact":
            # one answer, a function of what the prompt shows: a sampled alternative would teach the student
            # a coin flip for the same prompt
            best = self._compact_rating_answer(r)
            n = 1
        else:
            best = est.answer
        answers = [hinted] if hinted is not None else [best]
        ranked = sorted(((str(s), p) for s, p in est.posterior.items() if p > 0), key=lambda kv: -kv[1])
        while len(answers) < n and hinted is None and ranked:
            answers.append(int(_sample(ranked, self.temperature, rng)))
        total = sum(est.counts.values())
        mean = sum(s * c for s, c in est.counts.items()) / total if total else (scale.low + scale.high) / 2
        dist = ", ".join(f"{k}: {v}" for k, v in sorted(est.counts.items())) or "none"
        mode = f"most often {est.counts.most_common(1)[0][0]}, " if total else ""
        if est.neighbours:
            near_counts = Counter(s for _, s in est.neighbours)
            near = ", ".join(f"{s} ({c})" for s, c in sorted(near_counts.items(), key=lambda kv: (-kv[1], -kv[0])))
            neighbours = f"Their {len(est.neighbours)} reviews most like this one got {near}."
        else:
            neighbours = "None of their reviews shares words with this one."
        post = ", ".join(f"{s}: {p:.2f}" for s, p in sorted(est.posterior.items()) if p >= 0.01)
        item_scores = [(i, scale.score(self.task.item_output(it))) for i, it in enumerate(r.items, 1)]
        chains = []
        for ans in answers:
            match = [i for i, s in item_scores if s == ans][:3]
            shown = "; ".join(f"[{i}] got {s}" for i, s in item_scores[:3] if s is not None)
            where = (f"the middle of it is {ans}" if ans == best
                     else f"{ans} carries {est.posterior.get(ans, 0.0):.2f} of it")
            steps = [
                ("understand_task", self._rating_task()),
                ("analyze_query", f"On its own, the review's wording reads like a {est.content:.1f} out of "
                                  f"{scale.high} (words: {_words(words(r.query)[:4])})."),
                ("examine_history", (f"Similar reviews: {shown}." if shown else "No similar review is shown.")
                 + (f" {_cite(match)} got a {ans}." if match else "")),
                ("identify_patterns", f"This user's {total} scores: {dist} ({mode}average {mean:.1f})."),
                ("infer_preference", neighbours),
                ("cross_reference", f"The user's scores, the review's words and their most similar reviews together "
                                    f"give {post or 'no clear score'}; {where}."),
                ("draft_answer", f"{ans}"),
                ("verify", f"{ans} is between {scale.low} and {scale.high}."),
                ("conclude", f"The score is {ans}."),
            ]
            if self.style == "compact":
                steps = self._compact_rating(r, ans, item_scores, match, est)
            chains.append(_render(steps, str(ans), self.style))
        return chains

    def _compact_rating(self, r: ChainRequest, ans: int, item_scores: Sequence[tuple[int, int | None]],
                        match: Sequence[int], est: RatingEstimate) -> list[tuple[str, str]]:
        """A short rating chain that states only what the prompt shows (the retrieved reviews' scores, most
        similar first) and reads its answer off them with the fitted rule, one visible step a small student
        can copy (~70 tokens against ~230 for the full chain, whose statistics over the whole profile the
        student never sees).  A hinted answer the rule does not give is tied to the shown items that have it."""
        shown = "; ".join(f"[{i}] {_safe(self.task.item_output(r.items[i - 1]))}" for i, s in item_scores
                          if s is not None)  # as the prompt shows them
        scores = [s for _, s in item_scores if s is not None]
        rule_answer = self.rule_answer(r)
        if rule_answer is not None and rule_answer == ans and self.rule == "middle":
            ordered = ", ".join(str(s) for s in sorted(scores))
            pattern = f"In order: {ordered}; the middle one is {ans}."
            cross = f"This user's scores for reviews like this one centre on {ans}."
        elif rule_answer is not None and rule_answer == ans:
            first = next(i for i, s in item_scores if s is not None)
            pattern = f"[{first}] is the review most like this one; it got {ans}."
            cross = f"This user would score this review as they scored [{first}]: {ans}."
        elif match:
            pattern = f"{_cite(match)} got {ans}."
            cross = f"Reviews of this user like {_cite(match[:1])} get {ans}."
        elif scores:
            pattern = f"No shown review got {ans}; the review's own words and this user's other scores point to it."
            cross = f"The review reads like a {round(est.content)}; for this user it is a {ans}."
        else:
            pattern = "No score of this user is shown; the review's own words decide."
            cross = f"The review reads like a {round(est.content)}; for this user it is a {ans}."
        return [
            ("understand_task", self._rating_task()),
            ("examine_history", f"Shown scores: {shown}." if shown else "No score of this user is shown."),
            ("identify_patterns", pattern),
            ("cross_reference", cross),
            ("conclude", f"The score is {ans}."),
        ]

    # ------------------------------------------------------------------------------ generation
    def _generation_answer(self, r: ChainRequest) -> tuple[str, list[Habit], list[Habit]]:
        """(answer, the user's measured habits, the habits that changed the answer).

        A task whose input is itself a text of the kind it asks for (LaMP-7: a tweet to paraphrase) keeps
        the input and applies the user's measured habits (:func:`tagpr.pipeline.style.rewrite`); on real
        LaMP-7 this beats copying the input.  A task that asks for a short text about a document (LaMP-4
        headline, LaMP-5 title, LaMP-6 subject) takes the document's opening words, cut to the median
        length of the user's own outputs (not measured on real data here: there is none).
        """
        outputs = [self.task.item_output(p) for p in r.example.profile]
        habits = measure_habits(outputs)
        if self.task.rewrites_input:
            if self.style == "compact":  # a compact chain names and applies only the habits its student can see
                habits = self._shown_habits(r, habits)
            answer, used = rewrite(r.query, habits)
        else:
            lead = _SENTENCE_END.split(" ".join(r.query.split()), maxsplit=1)[0]
            kept = lead.split()[: _median_words(outputs)]
            while len(kept) > 1 and kept[-1].lower().strip(".,;:!?") in _STOP:  # no title ends on "of", "the"
                kept.pop()
            answer, used = " ".join(kept).rstrip(" ,;:-"), []
        answer = self._answer_text(answer)
        if not self.task.parse(answer).strip():
            query = self._answer_text(r.query)
            answer = query if self.task.parse(query).strip() else "(no text)"
            used = []
        return answer, habits, used

    def _shown_habits(self, r: ChainRequest, habits: Sequence[Habit]) -> list[Habit]:
        """The user's measured habits, of the kinds answers apply, that one of ``r``'s shown items shows.  A habit
        measured over the whole profile but shown in none of the student's items cannot be read off its prompt: on
        real LaMP-7 dev, 110 of the 296 inputs the profile's habits change had a habit the 4 retrieved tweets did
        not show (docs/rl.md, "Real LaMP-7: chains a student can follow")."""
        return shown_habits(habits, [self.task.item_output(it) for it in r.items])

    def _answer_text(self, text: object) -> str:
        """A free-text answer made safe to write in a chain: one line, or for a multi-line task its lines."""
        if not self.task.answers.multiline:
            return _safe(text)
        return "\n".join(line for line in map(_safe, str(text if text is not None else "").splitlines()) if line)

    def _generation(self, r: ChainRequest) -> str:
        best, habits, used = self._generation_answer(r)
        answer = self._answer_text(r.hint) if r.hint else best
        noun = output_noun(self.task)
        shown_out = [(i, self.task.item_output(it)) for i, it in enumerate(r.items, 1)]
        if self.task.rewrites_input and self.style == "compact":
            return _render(self._compact_rewrite(r, answer, habits, used, shown_out, noun), answer, self.style)
        outputs = [self.task.item_output(p) for p in r.example.profile]
        sp = style_profile(outputs)
        n_in = len(r.query.split())
        if self.task.rewrites_input:
            marks = [h.describe() for h in (used + [h for h in habits if h not in used])][:4]
            for key, what in (("hashtag", "hashtags"), ("emoji", "emoji"), ("exclaim", "exclamation marks")):
                if sp[key] >= 0.3:
                    marks.append(f"uses {what} ({_pct(sp[key])} of texts)")
            showing = []
            for i, text in shown_out:
                h = next((h for h in used + habits if h.shown_in(text)), None)
                if h is not None:
                    showing.append(f"[{i}] {h.describe(counts=False)}")
            if showing:
                history = f"Shown texts of this user: {'; '.join(showing[:3])}."
            elif shown_out:
                history = (f"{_cite([i for i, _ in shown_out[:2]])} {_verb(len(shown_out[:2]))} how this user writes: "
                           + "; ".join(f'[{i}] "{_clip(_safe(t), 6)}"' for i, t in shown_out[:2]))
            else:
                history = "No text of this user is shown."
            changes = [_change(h) for h in used]
            steps = [
                ("understand_task", f"Give the {noun} as this user would write it: the input's content in the user's "
                                    "own habits, with nothing around it."),
                ("analyze_query", f"The input has {n_in} words: {_clip(_safe(r.query), 8)}"),
                ("examine_history", history),
                ("identify_patterns", f"Over {_n(sp['n'], 'text')} the user averages {sp['mean_words']:.0f} words and "
                                      f"{'; '.join(marks) or 'writes plainly, with no strong markers'}."),
                ("infer_preference", "Keep the input's words; change only what this user's habits change."
                 if used or r.hint else "None of these habits changes a word of this input: keep it as it is."),
                ("cross_reference", (f"In this input: {'; '.join(changes)}." if changes and not r.hint else
                                     "Where the user's habits apply to this input, they set the wording.")),
                ("draft_answer", answer),
                ("verify", "The input's content, this user's habits, nothing around it."),
                ("conclude", f"Answer with the {noun}."),
            ]
        else:
            length = _median_words(outputs)
            history = (f"{_cite([i for i, _ in shown_out[:2]])} {_verb(len(shown_out[:2]))} this user's {noun}s: "
                       + "; ".join(f'[{i}] "{_clip(_safe(t), 8)}"' for i, t in shown_out[:2])
                       if shown_out else f"No {noun} of this user is shown.")
            steps = [
                ("understand_task", f"Write the {noun} this user would give the input ({self.task.answer_hint})."),
                ("analyze_query", f"The input has {n_in} words; its telling words are {_words(words(r.query)[:4])}; "
                                  f"it opens: {_clip(_safe(r.query), 8)}"),
                ("examine_history", history),
                ("identify_patterns", f"Over {_n(sp['n'], 'item')} this user's {noun}s have {length} words (median)."),
                ("infer_preference", f"This user keeps a {noun} to about {length} words."),
                ("cross_reference", f"The input's opening words carry its main point; cut to about {length} words."),
                ("draft_answer", answer),
                ("verify", f"About {length} words, from the input, the {noun} only."),
                ("conclude", f"Answer with the {noun}."),
            ]
        return _render(steps, answer, self.style)

    def _compact_rewrite(self, r: ChainRequest, answer: str, habits: Sequence[Habit], used: Sequence[Habit],
                         shown_out: Sequence[tuple[int, str]], noun: str) -> list[tuple[str, str]]:
        """The compact chain of a task that rewrites its input (LaMP-7): short (~110 tokens on real LaMP-7 instead
        of ~280), no counts (a 135M student pasted "(1 of 11 texts)" into its tweets).  It names the habits the
        shown items show, in the order they show them, then checks each against the input ("and" is in the input /
        no "I am" in the input), then changes what the checks found: the decision is spelled out step by step.  A
        chain that went from one habit straight to "it changes nothing in this input" taught a 135M student to keep
        the input on 160 of the 186 real dev inputs whose shown tweets show every habit that changes them
        (docs/rl.md)."""
        cited = listed_habits(habits, [text for _, text in shown_out], used)
        listed = [h for _, h in cited]
        if cited:
            history = "; ".join(f"[{i}] {h.describe(counts=False)}" for i, h in cited) + "."
            patterns = "; ".join(_check(h, h in used) for _, h in cited) + "."
        elif shown_out:
            history = f"{_cite([i for i, _ in shown_out[:2]])} {_verb(len(shown_out[:2]))} how this user writes."
            patterns = "No habit of these items changes this input."
        else:
            history = "No text of this user is shown."
            patterns = "No habit of this user changes this input."
        if r.hint:
            change = "Where the user's habits apply to this input, they set the wording."
        elif used:  # in the order the checks found them (every habit that applies is listed)
            change = f"{'; '.join(_change(h) for h in listed if h in used)}."
        else:
            change = KEEP_INPUT
        return [
            ("understand_task", f"Give the {noun} as this user would write it, nothing around it."),
            ("examine_history", history),
            ("identify_patterns", patterns),
            ("cross_reference", change),
            ("conclude", f"Answer with the {noun}."),
        ]


# the rating estimate's settings, chosen on real LaMP-3 (benchmarks/teacher_quality.py; docs/tagpr.md): MAE 0.358;
# every setting of words worth {2, 4, 8} x {5, 10, 20} neighbours x weight {0.3, 0.5} gives MAE 0.350-0.383
RATING_WORDS_WORTH = 4.0
RATING_NEIGHBOURS = 10
RATING_NEIGHBOUR_WEIGHT = 0.5


def _shown_scores(task: LaMPTask, items: Sequence[Mapping[str, Any]]) -> list[int]:
    """The scale points of the shown items that have one, in the order shown (most similar first)."""
    return [s for s in (task.answers.score(task.item_output(it)) for it in items) if s is not None]


def compact_rules(task: LaMPTask) -> tuple[str, ...]:
    """The rules a compact chain of ``task`` can read its answer with (none for tasks without a closed answer space)."""
    if not task.answers.closed:
        return ()
    return tuple(RATING_RULES if task.answers.ordered else LABEL_RULES)


def check_rule(task: LaMPTask | str, rule: str, style: str = "compact") -> str:
    """``rule``, or a ValueError naming what a teacher of ``task`` and ``style`` accepts: ``fitted`` always (the
    default); for compact chains of tasks with rules, also ``each`` and any rule of :func:`compact_rules`."""
    t = get_task(task)
    rules = compact_rules(t) if style == "compact" else ()
    known = ("fitted", *(("each", *rules) if rules else ()))
    if rule not in known:
        why = "" if rules else (" (only compact chains have rules)" if compact_rules(t)
                                else f" ({t.name} has no rules)")
        raise ValueError(f"rule {rule!r} is not one of {', '.join(known)} for {t.name}{why}")
    return rule


# Rules a compact rating chain reads its answer with, over the shown scores (most similar first, never empty);
# the teacher fits the one to use (``AnalyticTeacher.fit``).
RATING_RULES: dict[str, Any] = {
    "nearest": lambda scores: scores[0],  # the most similar review's score
    "middle": lambda scores: sorted(scores)[len(scores) // 2],  # the (upper) median of the shown scores
}


# Rules a compact label chain reads its answer with, over the shown items' labels (most similar first, never empty)
# and every label ranked by the teacher's posterior (the user's label counts x the input's words).  On 200 synthetic
# LaMP-2 users (k=4): best-shown 0.805 accuracy, most-shown 0.63, nearest 0.515 (the full posterior 0.84).
LABEL_RULES: dict[str, Any] = {
    "nearest": lambda shown, ranked: shown[0],  # the most similar item's label
    "most-shown": lambda shown, ranked: max(shown, key=lambda lab: (shown.count(lab), -shown.index(lab))),
    # of the shown labels, the one the input's words and the user's habits favour
    "best-shown": lambda shown, ranked: next((lab for lab in ranked if lab in shown), shown[0]),
}


@dataclass
class RatingEstimate:
    answer: int
    posterior: dict[int, float]  # over 1..5: prior x text evidence, mixed with the similar reviews' scores
    content: float  # the score the review's words suggest on their own (corpus prior)
    counts: Counter  # the user's profile scores
    neighbours: list[tuple[int, int]]  # (profile index, score) of the most similar reviews used


def output_noun(task: LaMPTask) -> str:
    """What a generation task asks for, from its answer hint ("the headline only" -> "headline")."""
    m = re.fullmatch(r"(?:the|a|an) (.+?) only", task.answer_hint.strip())
    return m.group(1) if m else "answer"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TAGLIKE = re.compile(r"<(/?[A-Za-z_][A-Za-z0-9_\-]{0,40})>")
_CITELIKE = re.compile(r"\[(\d{1,6})\]")


def _safe(text: object) -> str:
    """Untrusted text made safe to quote in a chain: one line, no tag, no [k] citation (ROUGE-neutral)."""
    s = " ".join(str(text if text is not None else "").split())
    return _CITELIKE.sub(r"(\1)", _TAGLIKE.sub(r"‹\1›", s))


def _verb(n: int) -> str:
    return "shows" if n == 1 else "show"


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _median_words(texts: Sequence[str], default: int = 8) -> int:
    lengths = sorted(len(str(t).split()) for t in texts if str(t).split())
    return max(1, lengths[len(lengths) // 2]) if lengths else default


def _check(h: Habit, applies: bool) -> str:
    """Whether habit ``h`` (of a kind answers apply: ``style.DEFAULT_KINDS``) changes the input, in the words a
    compact LaMP-7 chain checks it with.  (Tried and not kept: the phrase before the verdict, ``"and" is not in the
    input``: its SFT student still said "not" for 139 of the 145 habits that applied (yes for 1) and lost 0.0018
    ROUGE-1 on the 989 real dev questions, docs/rl.md.)"""
    if h.kind == "variant":
        return f'"{h.source}" is in the input' if applies else f'no "{h.source}" in the input'
    if h.kind == "mention-first":
        return "the input's @-mention is not first" if applies else "no @-mention to move"
    if h.kind in ("closer", "opener"):
        where = "end" if h.kind == "closer" else "start"
        return f'the input does not {where} with "{h.target}"' if applies else f'the input has "{h.target}"'
    return f"{h.kind} {'applies' if applies else 'does not apply'}"


def _change(h: Habit) -> str:
    if h.kind in ("variant", "spelling"):
        return f'"{h.source}" -> "{h.target}"'
    if h.kind == "mention-first":
        return "the @-mention goes first"
    if h.kind == "closer":
        return f'end with "{h.target}"'
    if h.kind == "opener":
        return f'open with "{h.target}"'
    if h.kind == "lowercase":
        return "lower case"
    return h.kind


# ------------------------------------------------------------- the compact rewrite chain's claims, verified
# The inverse of Habit.describe(counts=False), _check and _change: what a compact LaMP-7 chain claims about its
# shown items and its input, read back so a reward can check each claim against the prompt.
_HABIT_CLAIM_RE = re.compile(r'\[(\d{1,3})\] (?:writes "(?P<t>.*?)" for "(?P<s>.*?)"(?=;|\.?\s*$)'
                             r'|(?P<m>opens with an @-mention)'
                             r'|ends with "(?P<c>.*?)"(?=;|\.?\s*$)|opens with "(?P<o>.*?)"(?=;|\.?\s*$))')
# A quoted phrase never spans the "; " between two checks: with ``.*?`` an unreadable check's quote could open a
# phrase that ends in the next check ('"x" maybe; "and" is in the input' read as the check of 'x" maybe; "and').
_PHRASE = r'(?:(?!; ).)*?'
_CHECK_CLAIM_RE = re.compile(rf'(?:no "(?P<no>{_PHRASE})" in the input|"(?P<yes>{_PHRASE})" is in the input'
                             r"|(?P<mno>no @-mention to move)|(?P<myes>the input's @-mention is not first)"
                             rf'|the input does not (?:end|start) with "(?P<eyes>{_PHRASE})"'
                             rf'|the input has "(?P<eno>{_PHRASE})")'
                             r"(?=;|\.?\s*$)")
_CHANGE_CLAIM_RE = re.compile(r'"(?P<s>.*?)" -> "(?P<t>.*?)"(?=;|\.?\s*$)|(?P<m>the @-mention goes first)'
                              r'|end with "(?P<c>.*?)"(?=;|\.?\s*$)|open with "(?P<o>.*?)"(?=;|\.?\s*$)')
KEEP_INPUT = "Keep the input's words as they are."  # a compact rewrite chain's <cross_reference> when nothing changes


@dataclass(frozen=True)
class RewriteClaims:
    """How many of a compact rewrite chain's claims its prompt bears out (:func:`verify_rewrite_chain`)."""

    parsed: bool  # the chain has the compact rewrite steps (else every figure below is 0)
    history: tuple[int, int] = (0, 0)  # habits it says a shown item shows: (true, named)
    checks: tuple[int, int] = (0, 0)  # its checks of those habits against the input: (right, needed)
    decision: bool = False  # the changes it names are exactly the listed habits that apply to the input
    follows: bool = False  # its answer is the input with the changes it names, and nothing else
    # of the habits the teacher lists (the user's measured habits that the shown items show): (named, to name);
    # None when the user's habits were not given
    coverage: tuple[int, int] | None = None

    @property
    def score(self) -> float:
        """The parts' mean in [0, 1]: history, checks and coverage as shares (1 when there is nothing to claim),
        decision and follows as 0/1; 0 for a chain without the compact rewrite steps.  Without coverage a chain
        that lists no habit and keeps its input scores 1; with it, only one that names what the teacher names."""
        if not self.parsed:
            return 0.0
        share = lambda tf: tf[0] / tf[1] if tf[1] else 1.0  # noqa: E731
        parts = [share(self.history), share(self.checks), float(self.decision), float(self.follows)]
        if self.coverage is not None:
            parts.append(share(self.coverage))
        return sum(parts) / len(parts)


def shown_habits(habits: Sequence[Habit], shown: Sequence[object]) -> list[Habit]:
    """The measured habits, of the kinds answers apply, that one of the ``shown`` texts shows."""
    return [h for h in habits if h.kind in DEFAULT_KINDS and any(h.shown_in(text) for text in shown)]


def listed_habits(habits: Sequence[Habit], shown: Sequence[object],
                  used: Sequence[Habit]) -> list[tuple[int, Habit]]:
    """What a compact rewrite chain lists, as (1-based index of the first shown text that shows it, habit): the
    ``habits`` (each shown by one of the ``shown`` texts: :func:`shown_habits`) in the order the texts show them,
    whether or not they change the input (an order that put those first would make the listing the decision); the
    first three, and any later one of ``used`` (the habits that change the input)."""
    first = {h: next(i for i, text in enumerate(shown, 1) if h.shown_in(text)) for h in habits}
    order = sorted(habits, key=first.__getitem__)
    return [(first[h], h) for h in order[:3] + [h for h in order[3:] if h in used]]


def _claimed_habit(m: re.Match[str]) -> Habit:
    if m.group("m"):
        return Habit("mention-first", "", "", 0, 0)
    if m.group("c") is not None:
        return Habit("closer", "", m.group("c"), 0, 0)
    if m.group("o") is not None:
        return Habit("opener", "", m.group("o"), 0, 0)
    return Habit("variant", m.group("s"), m.group("t"), 0, 0)


def _habit_key(h: Habit) -> tuple[str, str, str]:
    if h.kind == "mention-first":
        return h.kind, "", ""
    return h.kind, h.source.lower(), h.target.lower()


def _check_matches(m: re.Match[str], h: Habit) -> bool | None:
    """Whether check ``m`` says habit ``h`` applies (True / False), or None when it checks another habit."""
    if h.kind == "variant" and (m.group("yes") is not None or m.group("no") is not None):
        said = m.group("yes") if m.group("yes") is not None else m.group("no")
        return (m.group("yes") is not None) if said.lower() == h.source.lower() else None
    if h.kind == "mention-first" and (m.group("myes") or m.group("mno")):
        return bool(m.group("myes"))
    if h.kind in ("closer", "opener") and (m.group("eyes") is not None or m.group("eno") is not None):
        said = m.group("eyes") if m.group("eyes") is not None else m.group("eno")
        return (m.group("eyes") is not None) if said.lower() == h.target.lower() else None
    return None


def verify_rewrite_chain(text: object, query: object, shown: Sequence[object],
                         habits: Sequence[Habit] | None = None) -> RewriteClaims:
    """Check what a compact rewrite chain (LaMP-7, ``AnalyticTeacher`` style ``compact``) claims, against its
    prompt: that the shown item it cites shows each habit it names (``[2] writes "&amp;" for "and"``), that
    each check of a habit against the input is right (``"and" is in the input``), that the changes it names are
    exactly the listed habits that apply, and that its answer is the input with those changes.  None of this
    needs a gold: it rewards a chain for reading its prompt right and for following itself (on real LaMP-7
    the SFT student said "no ... in the input" for 43 of 45 habits that were in it, and 55 of its answers
    changed inputs its chain said to keep; docs/rl.md).  ``query``: the input text the chain rewrites (the
    task's retrieval query); ``shown``: the shown items' texts, in the order shown; ``habits``: the user's habits
    measured over their whole profile (``measure_habits(profile texts)``, once per prompt): with them, also how many
    of the habits the teacher would list (those a shown item shows, :func:`listed_habits`) the chain names, so that
    listing nothing is not a way to be right.  Never raises."""
    try:
        chain = parse_chain(text)
        steps = {st.tag: st.text for st in chain.steps}
        if not all(t in steps for t in ("examine_history", "identify_patterns", "cross_reference")):
            return RewriteClaims(False)
        q = _safe(query)
        texts = [_safe(x) for x in shown]
        listed = [(int(m.group(1)), _claimed_habit(m)) for m in _HABIT_CLAIM_RE.finditer(steps["examine_history"])]
        true_history = sum(1 <= i <= len(texts) and h.shown_in(texts[i - 1]) for i, h in listed)
        checks = list(_CHECK_CLAIM_RE.finditer(steps["identify_patterns"]))
        used = {_habit_key(h) for h in rewrite(q, [h for _, h in listed])[1]}  # together, as the teacher applies them
        applies = [_habit_key(h) in used for _, h in listed]
        right = sum(j < len(checks) and _check_matches(checks[j], h) == a
                    for j, ((_, h), a) in enumerate(zip(listed, applies)))
        change = steps["cross_reference"].strip()
        named = [] if change == KEEP_INPUT else [_claimed_habit(m) for m in _CHANGE_CLAIM_RE.finditer(change)]
        parsed_change = change == KEEP_INPUT or bool(named)
        decision = parsed_change and ({_habit_key(h) for h in named}
                                      == {_habit_key(h) for (_, h), a in zip(listed, applies) if a})
        answer = chain.answer
        # the edge habits (mention first, opener, closer) in any order: a chain names them in the order its items
        # show them, the teacher applies them in the order it measured them
        edges = [h for h in named if h.kind != "variant"]
        said = " ".join(_safe(answer).split()) if answer is not None else None
        follows = parsed_change and said is not None and any(
            said == " ".join(rewrite(q, [h for h in named if h.kind == "variant"] + list(p))[0].split())
            for p in itertools.permutations(edges[:3]))
        coverage = None
        if habits is not None:
            visible = shown_habits(habits, texts)
            due = {_habit_key(h) for _, h in listed_habits(visible, texts, rewrite(q, visible)[1])}
            coverage = (len(due & {_habit_key(h) for _, h in listed}), len(due))
        return RewriteClaims(True, (true_history, len(listed)), (right, max(len(listed), len(checks))),
                             bool(decision), bool(follows), coverage)
    except Exception:  # noqa: BLE001 - model output is untrusted; a verifier never takes a run down
        return RewriteClaims(False)


CHAIN_STYLES = PROMPT_STYLES


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
