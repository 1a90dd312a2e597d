"""Synthetic users have real latent preferences: a profile-aware rule beats every profile-blind rule."""

import pytest

from tagpr.data.synthetic import generate, generate_splits, rule_report


def test_deterministic():
    a = generate("LaMP-2", 5, seed=11)
    b = generate("LaMP-2", 5, seed=11)
    assert [e.to_json() for e in a] == [e.to_json() for e in b]
    assert [e.gold for e in a] == [e.gold for e in b]
    assert [e.input for e in generate("LaMP-2", 5, seed=12)] != [e.input for e in a]


def test_splits_have_disjoint_users():
    s = generate_splits("LaMP-7", 10, 5, seed=0)
    assert not {e.id for e in s["train"]} & {e.id for e in s["dev"]}


@pytest.mark.parametrize("task,metric,margin,higher", [
    ("LaMP-2", "accuracy", 0.30, True),
    ("LaMP-3", "mae", 0.40, False),
    ("LaMP-7", "rouge-1", 0.15, True),
])
def test_profile_aware_rule_beats_blind_rules_by_wide_margin(task, metric, margin, higher):
    rows = rule_report(task, generate(task, 300, seed=5))
    aware = rows[0][metric]
    blind = [r[metric] for r in rows[1:]]
    best_blind = max(blind) if higher else min(blind)
    gap = aware - best_blind if higher else best_blind - aware
    assert gap >= margin, (task, aware, blind)


def test_unsupported_task():
    with pytest.raises(ValueError, match="no synthetic generator"):
        generate("LaMP-4", 3)
