"""Evidently has one adapter module, and importing the monitoring package does not load it (nor MLflow)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("features", "models", "training", "serving", "monitoring", "feature_repo")


def imported_roots(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_evidently_is_imported_only_by_its_adapter():
    users = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                   if "evidently" in imported_roots(p))
    assert users == ["monitoring/evidently_adapter.py"]


def test_the_cli_module_loads_no_heavy_sdk_at_import():
    code = ("import sys, monitoring.cli; "
            "print(sorted(m for m in ('evidently', 'mlflow', 'feast', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
