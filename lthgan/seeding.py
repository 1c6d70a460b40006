"""Seed streams: one 63-bit seed mixed from integers, so that the streams for
``(seed, rank, purpose)`` do not overlap the way ``seed + rank`` streams of neighbouring seeds
would."""
from __future__ import annotations

__all__ = ["mix"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def mix(*parts: int) -> int:
    """A 63-bit seed from the integers ``parts`` (splitmix64 steps, one per part)."""
    x = _GOLDEN
    for p in parts:
        x = (x ^ (int(p) & _MASK)) & _MASK
        x = (x + _GOLDEN) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        x ^= x >> 31
    return x >> 1
