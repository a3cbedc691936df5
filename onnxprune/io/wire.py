"""The protobuf wire format, the little of it onnxprune reads and writes by hand.

Why by hand: a model's weights are most of its bytes. Reading them (``inline_weights``: map the
initializers of a single ``.onnx`` file instead of parsing them into memory) and writing them
(``single_file``: stream a model into one file without serializing it whole) both need to walk or emit
the message framing around the payloads, which the protobuf runtime only offers for whole messages.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class Malformed(Exception):
    """The bytes are not the wire format expected here; callers fall back to the protobuf runtime."""


def read_varint(buffer: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``."""
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise Malformed("truncated varint")
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(buffer: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, payload start, payload end) of each field in [start, end)."""
    pos = start
    while pos < end:
        first = pos
        key, pos = read_varint(buffer, pos, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, pos = read_varint(buffer, pos, end)
            payload = pos
        elif wire == FIXED64:
            payload, pos = pos, pos + 8
        elif wire == FIXED32:
            payload, pos = pos, pos + 4
        elif wire == LENGTH:
            length, payload = read_varint(buffer, pos, end)
            pos = payload + length
        else:
            raise Malformed(f"wire type {wire}")
        if pos > end:
            raise Malformed("field runs past its message")
        yield number, wire, first, (payload if wire == LENGTH else first), pos


def encode_varint(value: int) -> bytes:
    """The varint encoding of a non-negative ``value``."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_prefix(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field ``number`` whose payload is ``length`` bytes."""
    return encode_varint(number << 3 | LENGTH) + encode_varint(length)
