"""The bounds-checked SSH wire reader: short reads, oversize lengths, mpints, trailing data."""

from __future__ import annotations

import pytest

from felhom_agent.authz.sshwire import (
    MAX_STRING,
    WireError,
    WireReader,
    encode_mpint,
    encode_string,
)


def test_reads_in_order_and_finishes() -> None:
    """Fields read back in order and finish() passes only when all is consumed."""
    data = b"\x07" + (5).to_bytes(4, "big") + encode_string(b"name") + encode_mpint(2**64)
    reader = WireReader(data)
    assert reader.u8() == 7
    assert reader.u32() == 5
    assert reader.ascii() == "name"
    assert reader.mpint() == 2**64
    reader.finish()


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x05abc",  # length past the end
        b"\x00\x00",  # short length field
        (MAX_STRING + 1).to_bytes(4, "big") + b"x" * 10,  # absurd length
    ],
)
def test_short_or_oversized_strings_fail(data: bytes) -> None:
    """A string whose length points past the end (or is absurd) raises, never short-reads."""
    with pytest.raises(WireError):
        WireReader(data).string()


def test_trailing_data_fails() -> None:
    """finish() refuses leftover bytes."""
    reader = WireReader(encode_string(b"x") + b"!")
    reader.string()
    with pytest.raises(WireError, match="trailing"):
        reader.finish()


@pytest.mark.parametrize(
    "raw",
    [b"\x80", b"\x00\x01", b"\x00"],
    ids=["negative", "superfluous-zero", "zero-as-one-byte"],
)
def test_non_canonical_mpints_fail(raw: bytes) -> None:
    """Negative and non-minimal mpints are refused: one number, one encoding."""
    with pytest.raises(WireError):
        WireReader(encode_string(raw)).mpint()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, 2**521 - 1])
def test_mpint_round_trip(value: int) -> None:
    """encode_mpint produces the canonical form the reader accepts."""
    assert WireReader(encode_mpint(value)).mpint() == value


@pytest.mark.parametrize("name", [b"", b"has space", b"\x00nul", "ü".encode()])
def test_ascii_names_must_be_printable(name: bytes) -> None:
    """Algorithm names must be non-empty printable ASCII."""
    with pytest.raises(WireError):
        WireReader(encode_string(name)).ascii()


def test_wire_error_is_ours_and_a_value_error() -> None:
    """WireError is an AgentError leaf that also is a ValueError."""
    from felhom_agent.errors import AgentError

    assert issubclass(WireError, AgentError)
    assert issubclass(WireError, ValueError)
