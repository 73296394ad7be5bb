import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("COE_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture
def shared_data() -> Path:
    path = shared_dir() / "data" / "routing"
    if not path.exists():
        pytest.skip(f"shared routing tables not found at {path}")
    return path
