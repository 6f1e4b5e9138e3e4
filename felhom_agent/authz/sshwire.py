"""A bounds-checked reader for the SSH wire encoding (RFC 4251, section 5).

Python slicing silently returns short data when a length field points past the end of the buffer; a
signature parser built on it accepts truncated blobs (the failure mode of the ``sshsig`` package;
``docs/sshsig.md`` ("Pitfalls")). Every read here checks the remaining length first and raises
:class:`WireError` instead, and :meth:`WireReader.finish` refuses trailing bytes, so each level of a
nested structure (SSHSIG blob, public key, signature, ECDSA r‖s) can be parsed completely or not at
all.
"""

from __future__ import annotations

from felhom_agent.authz.errors import AuthzError

__all__ = ["MAX_STRING", "WireError", "WireReader", "encode_mpint", "encode_string"]

#: No field in anything we parse comes near this (an RSA-16384 modulus is 2 KiB); a larger
#: length is garbage and must not make us allocate.
MAX_STRING = 1 << 16


class WireError(AuthzError, ValueError):
    """Malformed SSH wire data: a short read, a bad length, trailing bytes, a bad mpint."""


class WireReader:
    """Sequential reader over an immutable byte string; every read is bounds-checked."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not yet consumed."""
        return len(self._data) - self._pos

    def raw(self, n: int) -> bytes:
        """Read exactly ``n`` raw bytes."""
        if n < 0 or n > self.remaining:
            raise WireError(f"need {n} bytes, {self.remaining} left")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        """Read one byte."""
        return self.raw(1)[0]

    def u32(self) -> int:
        """Read a big-endian uint32."""
        return int.from_bytes(self.raw(4), "big")

    def string(self) -> bytes:
        """Read a ``string``: uint32 length, then that many bytes."""
        n = self.u32()
        if n > MAX_STRING:
            raise WireError(f"string length {n} exceeds {MAX_STRING}")
        return self.raw(n)

    def ascii(self) -> str:
        """Read a ``string`` that must be printable ASCII (algorithm names, namespaces)."""
        value = self.string()
        if not value or not all(0x21 <= b <= 0x7E for b in value):
            raise WireError("expected a non-empty printable ASCII name")
        return value.decode("ascii")

    def mpint(self) -> int:
        """Read a non-negative ``mpint`` in canonical (minimal two's complement) form.

        Negative values and non-minimal encodings (a superfluous leading zero byte) are
        refused, so one number has exactly one encoding.
        """
        value = self.string()
        if not value:
            return 0
        if value[0] & 0x80:
            raise WireError("negative mpint")
        if value[0] == 0 and (len(value) == 1 or not value[1] & 0x80):
            raise WireError("non-canonical mpint (superfluous leading zero)")
        return int.from_bytes(value, "big")

    def finish(self) -> None:
        """Assert that everything was consumed; trailing bytes are an error at every level."""
        if self.remaining:
            raise WireError(f"{self.remaining} bytes of trailing data")


def encode_string(value: bytes) -> bytes:
    """Encode ``value`` as an SSH ``string``."""
    return len(value).to_bytes(4, "big") + value


def encode_mpint(value: int) -> bytes:
    """Encode a non-negative integer as a canonical SSH ``mpint``."""
    if value < 0:
        raise ValueError("negative mpint")
    if value == 0:
        return encode_string(b"")
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return encode_string(raw)
