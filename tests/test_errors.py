"""`server/http/errors.py`: a body is JSON as the standard has it, with numbers 64 bits hold."""

from __future__ import annotations

import pytest

from endmark.server.http.errors import NumberOutOfRange, loads_strict


def test_numbers_64_bits_and_doubles_hold_are_read() -> None:
    text = '{"a": 18446744073709551615, "b": -9223372036854775808, "c": 1e308, "d": 5e-324}'
    assert loads_strict(text) == {"a": 2**64 - 1, "b": -(2**63), "c": 1e308, "d": 5e-324}


@pytest.mark.parametrize(
    "text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1e999]", "[18446744073709551616]",
             "[-9223372036854775809]", "[" + "9" * 5000 + "]"],
)  # fmt: skip
def test_what_json_or_64_bits_cannot_hold_is_refused(text: str) -> None:
    with pytest.raises(NumberOutOfRange):
        loads_strict(text)
