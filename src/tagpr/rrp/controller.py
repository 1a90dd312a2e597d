"""Reasoning-process intervention: generate section by section, and put the model back on the template.

The controller resumes each assistant turn in chunks (``continue_generation`` of any backend) with the
section markers (``### i.``) and ``</think>`` as stop strings, and applies these rules after each chunk:

========== ==========================================================================================
rule       when, and what the controller does
========== ==========================================================================================
skip       the model opens a later section than the next one: its header is dropped, the next
           expected header is injected
reorder    the model opens the current or an earlier section again: same
early_end  the model stops (end of sequence, or ``</think>`` before the last reasoning section) before
           the answer section: the next header is injected and generation resumes
overrun    a section reaches its token budget: it is cut there and the next header is injected
repetition the section repeats itself (an ``ngram``-word sequence seen before, or one line three
           times): it is cut where the repeat starts and the next header is injected
format     the answer is not in the task's format (a label outside the list, a number off the scale, empty
           text): when the backend can score options (transformers) and the answer space is closed
           (labels, ratings), the answer is constrained to the most likely valid option after the
           reasoning so far; otherwise a corrective note and the answer header are injected and the
           answer generated again, at most ``max_corrections`` times
========== ==========================================================================================

A model that moves to the next header by itself needs no intervention.  With ``think=True`` the turn
opens with ``<think>`` and ``</think>`` is injected before the answer header.  On the transformers
backend, ``reuse_cache=True`` with ``batch_size=1`` resumes from the KV cache of the turn so far.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tagpr.generation.base import Generation, GenerationBackend, Prompt, SamplingParams
from tagpr.rrp.template import ANSWER, SECTIONS, extract_answer, parse_budgets
from tagpr.tasks import LaMPTask, get_task

RULES = ("skip", "reorder", "early_end", "overrun", "repetition", "format")
THINK_OPEN, THINK_CLOSE = "<think>\n", "</think>"


@dataclass
class Intervention:
    rule: str
    section: str
    detail: str = ""


@dataclass
class ControlledGeneration:
    text: str  # the assistant turn as it stands at the end (model text and injected headers/notes)
    answer: str
    interventions: list[Intervention] = field(default_factory=list)
    completion_tokens: int = 0  # tokens the model generated, over every call
    prompt_tokens: int = 0  # prompt tokens of the first call
    calls: int = 0

    def counts(self) -> dict[str, int]:
        out = {r: 0 for r in RULES}
        for iv in self.interventions:
            out[iv.rule] = out.get(iv.rule, 0) + 1
        return out


@dataclass
class _State:
    prompt: Prompt
    text: str
    seed: int | None
    section: int = 0
    section_start: int = 0  # where the current section's body begins in text
    header_at: int = 0  # where the current section's header (and any note before it) was injected
    section_tokens: int = 0
    corrections: int = 0
    done: bool = False
    out: ControlledGeneration = field(default_factory=lambda: ControlledGeneration("", ""))


def find_repetition(text: str, ngram: int = 8, line_repeats: int = 3) -> int | None:
    """Character offset where ``text`` starts repeating itself, or None.

    A repeat is an ``ngram``-word sequence that already occurred (not overlapping), or a non-empty line
    seen for the ``line_repeats``-th time.  Never raises."""
    if not isinstance(text, str) or not text:
        return None
    cut: int | None = None
    words = [(m.start(), m.group(0).lower()) for m in re.finditer(r"\S+", text[:50_000])]
    if ngram > 0 and len(words) >= 2 * ngram:
        seen: dict[tuple[str, ...], int] = {}
        for i in range(len(words) - ngram + 1):
            key = tuple(w for _, w in words[i : i + ngram])
            j = seen.get(key)
            if j is not None and j + ngram <= i:
                cut = words[i][0]
                break
            seen.setdefault(key, i)
    if line_repeats > 1:
        counts: dict[str, int] = {}
        pos = 0
        for line in text[:50_000].splitlines(keepends=True):
            key = line.strip().lower()
            if key:
                counts[key] = counts.get(key, 0) + 1
                if counts[key] >= line_repeats:
                    cut = pos if cut is None else min(cut, pos)
                    break
            pos += len(line)
    return cut


class InterventionController:
    """Run RRP's template on a backend, with (``intervene=True``) or without intervention."""

    def __init__(self, backend: GenerationBackend, task: LaMPTask | str, budgets: str | Sequence[int] | None = None,
                 chunk_tokens: int = 32, think: bool = False, intervene: bool = True, ngram: int = 8,
                 max_corrections: int = 1, max_calls: int = 40, constrain: bool = True):
        self.backend = backend
        self.task = get_task(task)
        self.budgets = parse_budgets(budgets, self.task)
        self.chunk_tokens = max(1, chunk_tokens)
        self.think = think
        self.intervene = intervene
        self.ngram = ngram
        self.max_corrections = max_corrections
        self.max_calls = max_calls
        self.options = self.task.answers.options() if constrain and hasattr(backend, "option_logprobs") else None
        self.markers = tuple(s.marker for s in SECTIONS)

    # ----------------------------------------------------------------------------------- public
    def run(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[ControlledGeneration]]:
        """``params.n`` controlled generations per prompt (temperature/top_p/seed from ``params``)."""
        if not self.intervene:
            return self._free(prompts, params)
        states = [self._begin(p, None if params.seed is None else params.seed + c)
                  for p in prompts for c in range(params.n)]
        while True:
            active = [s for s in states if not s.done]
            if not active:
                break
            groups: dict[tuple[int, tuple[str, ...], int | None], list[_State]] = {}
            for s in active:
                groups.setdefault(self._call_key(s), []).append(s)
            for (max_new, stop, seed), group in groups.items():
                sp = SamplingParams(max_new_tokens=max_new, temperature=params.temperature, top_p=params.top_p,
                                    n=1, seed=seed, stop=stop)
                gens = self.backend.continue_generation([(s.prompt, s.text) for s in group], sp)
                for s, g in zip(group, gens):
                    self._step(s, g[0])
        outs = [self._finish(s) for s in states]
        return [outs[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    # -------------------------------------------------------------------------------- internals
    def _free(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[ControlledGeneration]]:
        prefix = THINK_OPEN if self.think else ""
        sp = SamplingParams(max_new_tokens=sum(self.budgets), temperature=params.temperature, top_p=params.top_p,
                            n=params.n, seed=params.seed)
        gens = self.backend.continue_generation([(p, prefix) for p in prompts], sp)
        return [[ControlledGeneration(prefix + g.text, extract_answer(prefix + g.text, self.task), [],
                                      g.completion_tokens, g.prompt_tokens, 1) for g in row] for row in gens]

    def _begin(self, prompt: Prompt, seed: int | None) -> _State:
        text = (THINK_OPEN if self.think else "") + SECTIONS[0].header + "\n"
        return _State(prompt=prompt, text=text, seed=seed, section_start=len(text))

    def _call_key(self, s: _State) -> tuple[int, tuple[str, ...], int | None]:
        remaining = max(1, self.budgets[s.section] - s.section_tokens)
        stop = self.markers + ((THINK_CLOSE,) if s.section < ANSWER else ("\n\n",))
        # the seed varies per call, so resumed chunks do not replay the same random stream
        seed = None if s.seed is None else s.seed + 7919 * s.out.calls
        return min(self.chunk_tokens, remaining), stop, seed

    def _step(self, s: _State, g: Generation) -> None:
        out = s.out
        out.calls += 1
        if out.calls == 1:
            out.prompt_tokens = g.prompt_tokens
        out.completion_tokens += g.completion_tokens
        s.section_tokens += g.completion_tokens
        s.text += g.text
        section = SECTIONS[s.section].name
        body = s.text[s.section_start :]
        cut = find_repetition(body, self.ngram)
        if cut is not None:
            s.text = s.text[: s.section_start + cut]
            return self._advance(s, "repetition", f"in {section}")
        if out.calls >= self.max_calls:
            s.done = True
            return None
        if g.stop_reason in self.markers:
            j = self.markers.index(g.stop_reason)
            if j == s.section + 1:
                return self._advance(s, None)
            rule = "skip" if j > s.section + 1 else "reorder"
            return self._advance(s, rule, f"wrote {g.stop_reason!r} in {section}")
        if g.stop_reason == THINK_CLOSE and s.section < ANSWER:
            if s.section == ANSWER - 1:  # thinking closed right before the answer: as it should
                return self._advance(s, None)
            return self._advance(s, "early_end", f"closed the think block in {section}")
        if g.stop_reason == "\n\n" and s.section == ANSWER:
            return self._end_answer(s)
        if g.finish_reason == "length":
            if s.section_tokens >= self.budgets[s.section]:
                return self._advance(s, "overrun", f"{section} reached {self.budgets[s.section]} tokens")
            return None  # a chunk ended inside the section's budget: go on
        if s.section == ANSWER:
            return self._end_answer(s)
        return self._advance(s, "early_end", f"ended in {section}")

    def _advance(self, s: _State, rule: str | None, detail: str = "") -> None:
        if rule is not None:
            s.out.interventions.append(Intervention(rule, SECTIONS[s.section].name, detail))
        if s.section == ANSWER:
            return self._end_answer(s)
        s.section += 1
        s.text = s.text.rstrip() + "\n"
        s.header_at = len(s.text)
        self._open_section(s)

    def _open_section(self, s: _State, note: str = "") -> None:
        s.text = s.text[: s.header_at] + (note + "\n" if note else "")
        if s.section == ANSWER and self.think:
            s.text += THINK_CLOSE + "\n"
        s.text += SECTIONS[s.section].header + "\n"
        s.section_start = len(s.text)
        s.section_tokens = 0

    def _end_answer(self, s: _State) -> None:
        answer = self.task.parse(s.text[s.section_start :])
        if not self.task.is_valid_answer(answer) and self.options:
            s.out.interventions.append(Intervention("format", "answer", f"answer {answer[:60]!r}: constrained"))
            s.text = s.text[: s.section_start]
            scores = self.backend.option_logprobs([(s.prompt, s.text)], self.options)[0]  # type: ignore[attr-defined]
            s.text += self.options[max(range(len(scores)), key=scores.__getitem__)]
            s.done = True
            return
        if not self.task.is_valid_answer(answer) and s.corrections < self.max_corrections:
            s.corrections += 1
            s.out.interventions.append(Intervention("format", "answer", f"answer {answer[:60]!r}"))
            self._open_section(s, self.task.answers.correction_note())
            return
        s.done = True

    def _finish(self, s: _State) -> ControlledGeneration:
        s.out.text = s.text
        s.out.answer = self.task.parse(s.text[s.section_start :]) if s.section == ANSWER else extract_answer(s.text, self.task)
        return s.out

