"""Feast imported for reading only skips typeguard's runtime checks; elsewhere they stay on.

Each case runs in a fresh interpreter: Feast's classes are decorated once, when first imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import typeguard
original = typeguard.typechecked
if sys.argv[1] == "unchecked":
    from features.feastimport import feast_unchecked
    with feast_unchecked():
        from features import featurestore
else:
    from features import featurestore
assert typeguard.typechecked is original, "the decorator must be restored after the block"
from feast import Field
from feast.data_source import RequestSource
from feast.types import Float32
try:
    RequestSource(name=5, schema=[Field(name="x", dtype=Float32)])  # a str is expected
    print("unchecked")
except typeguard.TypeCheckError:
    print("checked")
"""


@pytest.mark.parametrize("how", ["unchecked", "checked"])
def test_feast_imported_for_reading_skips_the_runtime_type_checks_and_only_then(how):
    out = subprocess.run([sys.executable, "-c", PROBE, how], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == how


def test_a_process_that_imported_feast_already_keeps_it():
    import feast  # noqa: F401 - the suite's process has it, checked

    from features.feastimport import feast_unchecked

    import typeguard

    before = typeguard.typechecked
    with feast_unchecked():
        assert typeguard.typechecked is before  # nothing patched: the classes are decorated already
