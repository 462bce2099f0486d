"""EIP-1559 fees: suggested from `eth_feeHistory`, and bumped for a replacement.

A suggestion is the next block's base fee twice over (room for six full blocks of +12.5% before the
transaction is priced out) plus a tip, the median tip paid over the last blocks at the 50th percentile,
never under the configured floor. A replacement raises both fees by at least `bump_percent` (20 by
default; geth refuses a replacement under 10%) and never goes under a fresh suggestion.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def suggest(base_fees: Sequence[int], rewards: Sequence[Sequence[int]], min_tip: int) -> Fees:
    """Fees from a fee history: `base_fees` ends with the next block's, `rewards` per block at the 50th
    percentile."""
    next_base = int(base_fees[-1]) if base_fees else 0
    tips = [int(block[0]) for block in rewards if block]
    tip = max(int(statistics.median(tips)) if tips else 0, min_tip)
    return Fees(max_fee_per_gas=2 * next_base + tip, max_priority_fee_per_gas=tip)


def _raised(value: int, percent: int) -> int:
    return -(-value * (100 + percent) // 100)  # rounded up: 20% of 1 wei is still a bump


def bump(previous: Fees, fresh: Fees, percent: int) -> Fees:
    """Fees for a replacement: both at least `percent` above the previous, and at least the fresh ones."""
    tip = max(_raised(previous.max_priority_fee_per_gas, percent), fresh.max_priority_fee_per_gas)
    cap = max(_raised(previous.max_fee_per_gas, percent), fresh.max_fee_per_gas, tip)
    return Fees(max_fee_per_gas=cap, max_priority_fee_per_gas=tip)


def capped(fees: Fees, max_fee_per_gas: int) -> Fees:
    """Fees never over the configured ceiling (and the tip never over the fee cap)."""
    cap = min(fees.max_fee_per_gas, max_fee_per_gas)
    return Fees(max_fee_per_gas=cap, max_priority_fee_per_gas=min(fees.max_priority_fee_per_gas, cap))
