"""Training stages: SFT on tagged chains (``sft.py``); PRMU lives in ``tagpr.prmu``."""
