"""TagPR's data pipeline: teachers write tagged chains, which are filtered, labelled and stored."""
