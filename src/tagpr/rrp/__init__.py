"""RRP: training-free personalization reasoning (template, intervention, cross-referencing)."""

from tagpr.rrp.aggregate import AGGREGATES, combine, mbr, median, reconcile, resolve_aggregate, vote
from tagpr.rrp.controller import ControlledGeneration, Intervention, InterventionController, find_repetition
from tagpr.rrp.template import SECTIONS, build_rrp_prompt, check_template, extract_answer, parse_budgets

__all__ = [
    "AGGREGATES", "SECTIONS", "ControlledGeneration", "Intervention", "InterventionController", "build_rrp_prompt",
    "check_template", "combine", "extract_answer", "find_repetition", "mbr", "median", "parse_budgets", "reconcile",
    "resolve_aggregate", "vote",
]
