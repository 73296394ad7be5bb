"""One way to make a cached model directory: single-flight, atomic, marker last.

Every model build of the zoo (trained specialists, converted GGUF models) goes through `locked_build`:
a file lock `<out>.lock` serialises builders (a second builder waits, then finds the first one's work),
the model is written into a temporary sibling directory, its marker file is written last, and the
directory is moved into place, so a reader never sees a half-written model and a failed build leaves
nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "zoo-build.json"


def read_marker(model_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(model_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def locked_build(
    out: Path, is_current: Callable[[Path], bool], make: Callable[[Path], dict[str, Any]], *, force: bool = False
) -> dict[str, Any] | None:
    """Run `make(tmp_dir)` (which returns the marker) unless `out` is current; returns the new marker,
    or None when a current build was reused."""
    if not force and is_current(out):
        return None
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not force and is_current(out):  # another process built it while we waited
            return None
        tmp = out.parent / f".{out.name}.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            marker = make(tmp)
            (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
            return marker
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
