"""TagPR's tagged-reasoning grammar: the 9 tags, a parser, a validator and the tag reward ``R_tag``.

Output grammar::

    <think>
    <understand_task>...</understand_task>
    <examine_history>... cites items as [3], [7] ...</examine_history>
    ...more tagged steps...
    <conclude>...</conclude>
    </think>
    <answer>...</answer>

The parser never raises on any string (model output is untrusted; see the hypothesis tests).
``R_tag`` is in [0, 1], and any chain that breaks the grammar (well-formedness, required coverage and
order) scores below every chain that keeps it: kept chains score in [0.5, 1], broken ones in [0, 0.45].
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tagpr.tasks import LaMPTask, get_task

TAGS: dict[str, str] = {
    "understand_task": "what is asked and the answer space/format",
    "analyze_query": "the salient content of this input (topic, entities, sentiment, length)",
    "examine_history": "specific profile items relevant to the query, cited by their index [k]",
    "identify_patterns": "recurring labels, themes, scores or style features across the history",
    "infer_preference": "the user's stable preference, bias or writing style",
    "cross_reference": "how this user's preference applies to this particular input",
    "draft_answer": "candidate answer(s)",
    "verify": "check candidates against the history and the required format",
    "conclude": "the decision, in one line",
}
WRAPPERS = ("think", "answer")
MAX_CHARS = 100_000  # longer output is judged on its first MAX_CHARS characters (and flagged)

_TAG_RE = re.compile(r"<(/?)([A-Za-z_][A-Za-z0-9_\-]{0,40})>")
CITE_RE = re.compile(r"\[(\d{1,6})\]")  # a citation of the k-th shown profile item
# an <answer> opening whose ">" the model dropped (`<answer Nicole, I'm ...</answer>`)
_LOOSE_ANSWER_RE = re.compile(r"<answer(?:\s+|:\s*)(.*?)(?:</answer>|\Z)", re.DOTALL)


@dataclass
class Step:
    tag: str
    text: str
    citations: list[int] = field(default_factory=list)


@dataclass
class ParsedChain:
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    errors: list[str] = field(default_factory=list)  # well-formedness problems

    @property
    def well_formed(self) -> bool:
        return not self.errors


def _as_text(text: object) -> str:
    """Any model output as a string (None as empty), for the functions here that never raise."""
    return text if isinstance(text, str) else ("" if text is None else str(text))


def parse_chain(text: object) -> ParsedChain:
    """Parse any string into tagged steps and the answer, collecting (never raising) grammar errors."""
    s = _as_text(text)
    out = ParsedChain()
    if len(s) > MAX_CHARS:
        out.errors.append(f"output longer than {MAX_CHARS} characters")
        s = s[:MAX_CHARS]
    stack: list[tuple[str, int]] = []  # open tags with the end offset of their opening
    seen_think = seen_answer = closed_think = False
    pos = 0
    for m in _TAG_RE.finditer(s):
        closing, name = m.group(1) == "/", m.group(2)
        between = s[pos : m.start()]
        pos = m.end()
        if out.answer is not None and not stack:
            out.errors.append("text or tags after </answer>")
            break
        if not stack and between.strip() and (seen_think or closed_think):
            out.errors.append("text outside any tag")
        elif stack and stack[-1][0] == "think" and between.strip():
            out.errors.append("text inside <think> outside any step tag")
        if name not in TAGS and name not in WRAPPERS:
            out.errors.append(f"unknown tag <{'/' if closing else ''}{name}>")
            continue
        if not closing:
            if name == "think":
                if stack or seen_think:
                    out.errors.append("<think> nested or repeated")
                seen_think = True
            elif name == "answer":
                if stack:
                    out.errors.append("<answer> inside another tag")
                if not closed_think:
                    out.errors.append("<answer> before </think>")
                if seen_answer:
                    out.errors.append("more than one <answer>")
                seen_answer = True
            else:
                if stack and stack[-1][0] in TAGS:
                    out.errors.append(f"<{name}> nested inside <{stack[-1][0]}>")
                elif not stack or stack[-1][0] != "think":
                    out.errors.append(f"<{name}> not directly inside <think>")
            stack.append((name, m.end()))
            continue
        # closing tag
        if not stack or stack[-1][0] != name:
            out.errors.append(f"unclosed <{stack[-1][0]}> before </{name}>" if stack else f"</{name}> without an opening tag")
            # recover: pop up to the matching tag if it is open
            if any(t == name for t, _ in stack):
                while stack and stack[-1][0] != name:
                    stack.pop()
            else:
                continue
        open_name, start = stack.pop()
        body = s[start : m.start()]
        if open_name == "think":
            closed_think = True
        elif open_name == "answer":
            out.answer = body.strip()
        else:
            if not body.strip():
                out.errors.append(f"empty <{open_name}>")
            out.steps.append(Step(open_name, body.strip(), [int(c) for c in CITE_RE.findall(body)]))
    else:
        tail = s[pos:]
        if stack:
            out.errors.append(f"unclosed <{stack[-1][0]}>")
            if stack[-1][0] == "answer" and out.answer is None:  # cut by the generation limit: still its answer
                out.answer = s[stack[-1][1]:].strip()
        elif tail.strip():
            out.errors.append("text after </answer>" if out.answer is not None else "text outside any tag")
    if not seen_think:
        out.errors.append("no <think> block")
    if out.answer is None and not seen_answer:  # a malformed opening tag: still its answer, and still an error
        loose = _LOOSE_ANSWER_RE.search(s, s.rfind("</think>") + 1)
        if loose is not None and loose.group(1).strip():
            out.answer = loose.group(1).strip()
            out.errors.append("malformed <answer> tag")
    if out.answer is None:
        out.errors.append("no <answer>")
    out.errors = list(dict.fromkeys(out.errors))
    return out


def coverage_errors(chain: ParsedChain) -> list[str]:
    """Required coverage and order of the 9 tags."""
    tags = [st.tag for st in chain.steps]
    errs = []
    if not tags or tags[0] != "understand_task":
        errs.append("first step must be <understand_task>")
    if not tags or tags[-1] != "conclude":
        errs.append("last step must be <conclude>")
    if "examine_history" not in tags:
        errs.append("no <examine_history> step")
    if "identify_patterns" not in tags and "infer_preference" not in tags:
        errs.append("no <identify_patterns> or <infer_preference> step")
    return errs


@dataclass
class ChainCheck:
    valid: bool
    reward: float
    answer: str | None
    errors: list[str]
    steps: list[Step]

    def to_json(self) -> dict:
        return {"valid": self.valid, "reward": self.reward, "answer": self.answer, "errors": self.errors,
                "tags": [s.tag for s in self.steps]}


def check_chain(text: object, task: LaMPTask | str, num_items: int) -> ChainCheck:
    """Parse and validate a chain for ``task`` given ``num_items`` shown profile items; never raises."""
    t = get_task(task)
    chain = parse_chain(text)
    grammar = chain.errors + coverage_errors(chain)
    cites = [c for st in chain.steps for c in st.citations]
    bad = sorted({c for c in cites if not 1 <= c <= max(0, num_items)})
    errors = list(grammar)
    if bad:
        errors.append(f"citations name items not shown: {bad[:10]} (shown: 1..{num_items})")
    answer = t.parse(chain.answer) if chain.answer is not None else None
    answer_ok = answer is not None and t.is_valid_answer(answer)
    if not answer_ok:
        errors.append("answer not parsable in the task's answer space")
    cite_score = 1.0 if not cites else 1.0 - len([c for c in cites if c in bad]) / len(cites)
    if not grammar:
        reward = 0.5 + 0.25 * cite_score + 0.25 * float(answer_ok)
    else:  # partial credit for fewer problems, always below any chain that keeps the grammar
        reward = 0.45 * (1.0 - min(len(grammar), 6) / 6)
    return ChainCheck(valid=not errors, reward=float(min(1.0, max(0.0, reward))), answer=answer, errors=errors,
                      steps=chain.steps)


def final_answer(text: object, task: LaMPTask | str, check: ChainCheck | None = None) -> str:
    """The answer a tagged output gives: its ``<answer>`` parsed for the task.  Without one, a chain (text that
    opens ``<think>``) answers with what follows its ``</think>``, and with nothing when it has none (a chain cut
    short inside its reasoning earns no task reward for a number or phrase of its reasoning); text that is not a
    chain (a baseline's, a free-text model's) is parsed whole.

    The one rule used by evaluation and every reward; never raises (``parse_chain`` and the task parsers
    never do).  ``check``: an existing :func:`check_chain` of ``text``, to reuse its parse."""
    t = get_task(task)
    answer = check.answer if check is not None else parse_chain(text).answer
    if check is not None and answer is not None:
        return answer  # check_chain parsed it for the task already
    return t.parse(answer if answer is not None else _unanswered(text))


def _unanswered(text: object) -> str:
    """What an output without ``<answer>`` answers with (see :func:`final_answer`)."""
    s = _as_text(text)
    if "<think>" not in s[:MAX_CHARS]:
        return s
    end = s.rfind("</think>")
    return s[end + len("</think>"):] if end >= 0 else ""


def tag_reward(text: object, task: LaMPTask | str, num_items: int) -> float:
    """``R_tag`` in [0, 1] (see :func:`check_chain`)."""
    try:
        return check_chain(text, task, num_items).reward
    except Exception:  # noqa: BLE001 - a reward must never take a run down
        return 0.0


PROMPT_STYLES = ("full", "compact")
# the compact chain keeps five of the nine tags (the grammar needs understand_task first, examine_history,
# identify_patterns or infer_preference, conclude last): about half the tokens of the full chain
COMPACT_TAGS = ("understand_task", "examine_history", "identify_patterns", "cross_reference", "conclude")


def format_instructions(task: LaMPTask | str, style: str = "full") -> str:
    """The grammar, as told to a model or teacher: all nine tags (``full``), or the five-step compact chain
    (``compact``, ~90 tokens instead of ~250: the prompt is most of a small model's RL step)."""
    t = get_task(task)
    if style == "compact":
        lines = "\n".join(f"<{k}> {TAGS[k]}" for k in COMPACT_TAGS)
        return ("Reason inside <think>...</think> in these tagged steps, in order, then give the final answer inside "
                f"<answer>...</answer> ({t.answer_hint}):\n{lines}")
    if style != "full":
        raise ValueError(f"prompt style {style!r} is not one of {', '.join(PROMPT_STYLES)}")
    lines = "\n".join(f"<{k}>: {v}" for k, v in TAGS.items())
    return ("Think step by step inside <think>...</think>, one tagged step per reasoning move, then give the final "
            f"answer inside <answer>...</answer> ({t.answer_hint}). Step tags:\n{lines}\n"
            "Start with <understand_task>, end with <conclude>, include at least one <examine_history> that cites "
            "profile items as [k], and at least one <identify_patterns> or <infer_preference>.")
