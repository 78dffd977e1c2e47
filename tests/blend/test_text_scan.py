"""text_scan answers from a string column's bytes what Python would answer from each str: token
counts (str.count), blank values (a subset of maybe_blank), characters (len)."""
import random
import sys

import pyarrow as pa

from vlmdata.blend import text_scan
from vlmdata.blend.rows import text_column

_SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
_PIECES = ["<image>", "<image", "image>", "<", ">", "<imag", "e>", "a", "é", "漢", "😀", "\n", " ", "\x1c",
           "\u3000", "\u2028", "\x85", "\xa0", "\x00", "\x7f"] + _SPACES


def _values(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 6))) for _ in range(n)]


def test_answers_match_python_on_random_values():
    rng = random.Random(7)
    for _ in range(300):
        values = _values(rng, rng.randrange(0, 40))
        offsets, data = text_scan.buffers(text_column(values))
        assert text_scan.token_counts(offsets, data).tolist() == [v.count("<image>") for v in values]
        assert text_scan.char_counts(offsets, data).tolist() == [len(v) for v in values]
        maybe = set(text_scan.maybe_blank(offsets, data).tolist())
        assert {i for i, v in enumerate(values) if not v or v.isspace()} <= maybe
        assert all(not v or v[0] <= " " or not v[0].isascii() for i, v in enumerate(values) if i in maybe)


def test_a_token_split_over_two_values_is_in_neither():
    offsets, data = text_scan.buffers(text_column(["say <ima", "ge> now", "<image>", ""]))
    assert text_scan.token_counts(offsets, data).tolist() == [0, 0, 1, 0]


def test_a_sliced_column_is_read_from_its_own_first_value():
    col = text_column(["<image>x", "é<image>", "  ", "b"]).slice(1, 2)
    offsets, data = text_scan.buffers(col)
    assert text_scan.token_counts(offsets, data).tolist() == [1, 0]
    assert text_scan.char_counts(offsets, data).tolist() == [8, 2]
    assert text_scan.maybe_blank(offsets, data).tolist() == [0, 1]


def test_ascii_is_told_apart_in_the_last_bytes_too():
    for tail in ("", "a", "abcdefg", "abcdefgé"):
        _, data = text_scan.buffers(text_column(["x" * 16 + tail]))
        assert text_scan.is_ascii(data) == tail.isascii()
    assert text_scan.is_ascii(text_scan.buffers(pa.array([], pa.string()))[1])
