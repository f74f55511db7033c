"""The import graph: apps depend one way, and no two modules of an app (or of the service
layer) import each other, directly or through others. The contracts are in pyproject.toml
(``[tool.importlinter]``); see docs/decisions/0090-app-layers.md."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
