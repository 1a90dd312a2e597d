"""tagpr: teach language models to reason about a user before answering (LaMP, TagPR, PRMU, RRP)."""

__version__ = "0.1.0"
