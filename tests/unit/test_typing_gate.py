"""The type gate is live: the canary's ignores are needed only while our types are real.

``scripts/typecheck.py`` (run by ``.ci/run``) checks ``tests/typing/canary.py`` with the rest of
the code; there every ``# type: ignore`` covers a real error. Here the same file is checked with
our packages made invisible to mypy (``--follow-imports=skip``: every import of ours is
``Any``, as it was before the laid-out tree), and each of those ignores must then be reported as
unused. So the canary fails the gate exactly when types collapse.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CANARY = ROOT / "tests" / "typing" / "canary.py"


def test_every_canary_ignore_is_reported_unused_once_our_imports_are_any() -> None:
    ignores = [i for i, line in enumerate(CANARY.read_text().splitlines(), 1)
               if re.search(r"\S  # type: ignore\[", line)]
    assert len(ignores) >= 4
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--follow-imports=skip", "--no-incremental", str(CANARY)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    unused = {int(m.group(1)) for m in
              re.finditer(r"canary\.py:(\d+): error: Unused \"type: ignore\"", proc.stdout)}
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert unused == set(ignores), proc.stdout
