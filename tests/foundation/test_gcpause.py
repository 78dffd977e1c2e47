"""gc_paused: no cyclic collection inside the block, the collector's state as it was after it."""
from __future__ import annotations

import gc

import pytest

from vlmdata.gcpause import gc_paused


def test_paused_inside_and_restored_after_even_on_error() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the inner block leaves it paused for the outer one
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_left_off_when_it_was_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_as_a_decorator() -> None:
    @gc_paused()
    def state() -> bool:
        return gc.isenabled()

    assert state() is False and gc.isenabled()
