import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TAGPR_SHARED", REPO.parent / "shared"))
SHARED_LAMP7 = SHARED / "data" / "lamp" / "LaMP_7"


@pytest.fixture
def shared_lamp7() -> Path:
    if not (SHARED_LAMP7 / "dev_questions.json").exists():
        pytest.skip("../shared/data/lamp/LaMP_7 is not available")
    return SHARED_LAMP7


@pytest.fixture(scope="session")
def embedded_backend():
    """The embedded SmolLM2-135M through the transformers backend (converted once per cache)."""
    from tagpr.generation import make_backend

    return make_backend("transformers", None, batch_size=8)
