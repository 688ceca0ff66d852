"""The one headroom rule of secure aggregation's integer ring, shared by the config and the
protocol.

Masked values are weighted quantization levels summed modulo 2**ring_bits: the sum of a round
is at most (total weight) * (2**quantization_bits - 1), so it cannot wrap around as long as the
total weight stays below 2**(ring_bits - quantization_bits). Requiring that difference to be at
least `MIN_HEADROOM_BITS` means any round whose institutions together trained on up to
2**24 (about 16.7 million) examples fits, whatever their split. The server still checks the
real total when it unmasks. Dependency-free so the config can import it cheaply.
"""

from __future__ import annotations

MIN_HEADROOM_BITS = 24


def max_round_weight(ring_bits: int, quantization_bits: int) -> int:
    """The total weight (examples) a round's sum holds without wrapping around the ring."""
    return 1 << (ring_bits - quantization_bits)


def headroom_problem(ring_bits: int, quantization_bits: int) -> str | None:
    """Why `ring_bits` cannot hold a round's weighted sum, or None when it can."""
    headroom = ring_bits - quantization_bits
    if headroom < MIN_HEADROOM_BITS:
        return (f"ring_bits={ring_bits} leaves {headroom} bits above quantization_bits="
                f"{quantization_bits}; the weighted sum of a round needs at least "
                f"{MIN_HEADROOM_BITS}")
    return None
