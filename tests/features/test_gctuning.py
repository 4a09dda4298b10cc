"""The garbage collector's pace within a batch phase, and what a command leaves on exit."""

import gc

import pytest

from features.cli import main
from features.gctuning import batch_gc


def test_batch_gc_paces_the_collector_within_and_restores_it_after_an_error():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with batch_gc(young=12_345):
            assert gc.get_threshold() == (12_345, 20, 20)
            raise RuntimeError("the phase failed")
    assert gc.get_threshold() == before


def test_a_command_freezes_what_it_allocated_on_the_way_out(monkeypatch):
    monkeypatch.setattr("sys.argv", ["aurum", "--help"])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
