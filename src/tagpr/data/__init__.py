"""LaMP data: official-format loading and validation, download, synthetic users."""

from tagpr.data.loading import Example, LaMPDataError, load_golds, load_questions, load_split

__all__ = ["Example", "LaMPDataError", "load_golds", "load_questions", "load_split"]
