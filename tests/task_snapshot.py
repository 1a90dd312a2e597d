"""What every built-in task produces (prompts, queries, documents, answers, metrics), as one JSON-able value.

``tests/data/task_snapshot.json`` holds this value as the Python registry made it before the tasks moved to YAML
records (commit c6cd71f); ``tests/test_task_records.py`` checks that the YAML records still make it, byte for byte.
Regenerate only on purpose: ``python tests/task_snapshot.py > tests/data/task_snapshot.json``.
"""

import json

LAMP1_INPUT = ('For an author who has written the paper with the title "Algorithms for routing", which reference is '
               'related? Just answer with [1] or [2] without explanation. [1]: "Reliable broadcasting" '
               '[2]: "Auctions with budgets"')
ANSWERS = ["[2]", "1", "The answer is comedy.", "Rating: 4/5", "nan", '"Deep nets"\nmore', "", "5.", "dark comedy"]


def sample_items(task, n=3):
    """``n`` profile items carrying every field of ``task``, with a valid output where the answer space is closed."""
    items = []
    for i in range(n):
        item = {f: f"{f} number {i} with a few plain words about topic {i % 2}" for f in task.profile_fields}
        if task.output_field and task.labels:
            item[task.output_field] = task.labels[(3 * i) % len(task.labels)]
        elif task.output_field and task.kind == "rating":
            item[task.output_field] = str(1 + (2 * i) % 5)
        item["id"] = f"{task.name}-{i}"
        items.append(item)
    return items


def task_snapshot(task):
    from tagpr.data.download import official_urls
    from tagpr.prompts import WhitespaceTokenizer, build_rag_prompt, build_tagpr_messages, numbered_items
    from tagpr.rrp.template import build_rrp_prompt, default_budgets
    from tagpr.tags import format_instructions

    items = sample_items(task)
    question = task.question(items[0]) if task.question_template is not None else LAMP1_INPUT
    tok = WhitespaceTokenizer()
    golds = list(task.labels[:3]) if task.labels else ["3", "4", "2"] if task.kind == "rating" else ["the cat", "sat on"]
    preds = [task.parse(a) for a in ANSWERS[: len(golds)]]
    return {
        "name": task.name, "official_id": task.official_id, "title": task.title, "kind": task.kind,
        "labels": list(task.labels) if task.labels is not None else None, "aliases": list(task.aliases),
        "profile_fields": list(task.profile_fields), "answer_hint": task.answer_hint,
        "output_field": task.output_field, "question_template": task.question_template,
        "question_fields": list(task.question_fields), "rewrites_input": task.rewrites_input,
        "truncated_field": task.truncated_field, "item_template": task.item_template,
        "document_template": task.document_template, "compose_words": task.compose_words,
        "overhead": [task.template_overhead(n) for n in (1, 2, 5)],
        "primary_metric": list(task.primary_metric),
        "question": question, "query": task.retrieval_query(question),
        "queries": [task.retrieval_query(s) for s in ("no marker at all", "a: b: c", 'x "a" "b" "c" "d"',
                                                      "review: r article: a paper: p description: d")],
        "documents": [task.document(it) for it in items], "rendered": [task.render_item(it) for it in items],
        "outputs": [task.item_output(it) for it in items],
        "rag": {str(m): build_rag_prompt(task, question, items, tok, max_length=m) for m in (20, 60, 120, 200, 512)},
        "tagpr_full": build_tagpr_messages(task, question, items),
        "tagpr_compact": build_tagpr_messages(task, question, items, style="compact", hint=golds[0]),
        "numbered": numbered_items(task, items, max_words=5),
        "rrp": build_rrp_prompt(task, question, items), "rrp_budgets": list(default_budgets(task)),
        "format": [format_instructions(task, s) for s in ("full", "compact")],
        "correction_note": task.answers.correction_note(), "answer_options": task.answers.options(),
        "parsed": [task.parse(a) for a in ANSWERS], "valid": [task.is_valid_answer(task.parse(a)) for a in ANSWERS],
        "rewards": [round(task.reward(task.parse(a), golds[0]), 12) for a in ANSWERS],
        "metrics": {k: round(v, 12) for k, v in task.metrics(preds, golds).items()},
        "urls": official_urls(task.name, "dev"),
    }


def snapshot(names):
    from tagpr.tasks import get_task

    return {name: task_snapshot(get_task(name)) for name in names}


BUILTIN = ["LaMP-1", "LaMP-2", "LaMP-2N", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-6", "LaMP-7"]

if __name__ == "__main__":
    print(json.dumps(snapshot(BUILTIN), indent=1, ensure_ascii=False))
