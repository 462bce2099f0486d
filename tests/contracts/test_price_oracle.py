"""PriceOracle: the publisher's batches, their bounds and rules, stale rounds, and what it reads back."""

from __future__ import annotations

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract, VyperDeployer
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from tests.contracts.conftest import ETHER, ZERO_ADDRESS

SET_PRICES = function_signature_to_4byte_selector(
    "set_prices((uint256,uint256,uint256,uint256,uint256,uint256)[])"
)


def item(
    token_id: int,
    round_id: int = 1,
    price: int = 2 * ETHER,
    low: int | None = None,
    high: int | None = None,
    confidence: int = 9_250,
) -> tuple[int, int, int, int, int, int]:
    """A PriceInput: (tokenId, roundId, price, low, high, confidence); the band is +-10% unless given."""
    low = price * 9 // 10 if low is None else low
    high = price * 11 // 10 if high is None else high
    return (token_id, round_id, price, low, high, confidence)


def publish(oracle: VyperContract, publisher: str, items: list[tuple]) -> list:
    with boa.env.prank(publisher):
        oracle.set_prices(items)
    return oracle.get_logs()


def expected_round(entry: tuple, updated_at: int) -> tuple:
    _, round_id, price, low, high, confidence = entry
    return (round_id, price, low, high, confidence, updated_at)


def test_deployment(oracle: VyperContract, owner: str, publisher: str) -> None:
    assert oracle.owner() == owner
    assert oracle.publisher() == publisher
    assert oracle.MAX_BATCH() == 200
    assert oracle.MAX_CONFIDENCE() == 10_000


def test_a_publisher_is_required(oracle_deployer: VyperDeployer) -> None:
    with boa.reverts("PriceOracle: no publisher"):
        oracle_deployer.deploy(ZERO_ADDRESS)


def test_a_token_never_priced_reads_as_zeros(oracle: VyperContract) -> None:
    assert oracle.latest_round(1) == (0, 0, 0, 0, 0, 0)


# Who publishes


def test_only_the_publisher_sets_prices(oracle: VyperContract, owner: str, stranger: str) -> None:
    for someone in (owner, stranger):
        with boa.env.prank(someone), boa.reverts("PriceOracle: not the publisher"):
            oracle.set_prices([item(1)])
    # An empty batch too: the check comes first.
    with boa.env.prank(stranger), boa.reverts("PriceOracle: not the publisher"):
        oracle.set_prices([])

    assert oracle.latest_round(1) == (0, 0, 0, 0, 0, 0)


def test_the_owner_changes_the_publisher(oracle: VyperContract, publisher: str, stranger: str) -> None:
    oracle.set_publisher(stranger)

    [changed] = oracle.get_logs()
    assert type(changed).__name__ == "PublisherChanged"
    assert (changed.address, changed.publisher) == (oracle.address, stranger)
    assert oracle.publisher() == stranger
    with boa.env.prank(publisher), boa.reverts("PriceOracle: not the publisher"):
        oracle.set_prices([item(1)])
    publish(oracle, stranger, [item(1)])
    assert oracle.latest_round(1)[0] == 1


def test_only_the_owner_changes_the_publisher(oracle: VyperContract, publisher: str, stranger: str) -> None:
    for someone in (publisher, stranger):
        with boa.env.prank(someone), boa.reverts("ownable: caller is not the owner"):
            oracle.set_publisher(someone)

    assert oracle.publisher() == publisher


def test_the_publisher_cannot_be_the_zero_address(oracle: VyperContract, publisher: str) -> None:
    with boa.reverts("PriceOracle: no publisher"):
        oracle.set_publisher(ZERO_ADDRESS)

    assert oracle.publisher() == publisher


# What a round records


def test_latest_round_reads_back_what_was_set(oracle: VyperContract, publisher: str) -> None:
    boa.env.time_travel(seconds=3_600)
    entry = (77, 5, 1_234_567_890_123, 1_000_000_000_000, 1_500_000_000_000, 8_765)

    [event] = publish(oracle, publisher, [entry])

    now = boa.env.timestamp
    assert oracle.latest_round(77) == (5, 1_234_567_890_123, 1_000_000_000_000, 1_500_000_000_000, 8_765, now)
    assert type(event).__name__ == "PriceUpdated"
    assert (
        event.address,
        event.tokenId,
        event.roundId,
        event.price,
        event.low,
        event.high,
        event.confidence,
        event.updatedAt,
    ) == (oracle.address, 77, 5, 1_234_567_890_123, 1_000_000_000_000, 1_500_000_000_000, 8_765, now)


def test_a_newer_round_replaces_the_last_and_its_time(oracle: VyperContract, publisher: str) -> None:
    publish(oracle, publisher, [item(1, round_id=1, price=100)])
    first = boa.env.timestamp
    boa.env.time_travel(seconds=86_400)

    publish(oracle, publisher, [item(1, round_id=2, price=200, confidence=10_000)])

    assert boa.env.timestamp == first + 86_400
    assert oracle.latest_round(1) == (2, 200, 180, 220, 10_000, first + 86_400)


def test_round_ids_may_skip(oracle: VyperContract, publisher: str) -> None:
    publish(oracle, publisher, [item(1, round_id=1)])
    publish(oracle, publisher, [item(1, round_id=1_000)])

    assert oracle.latest_round(1)[0] == 1_000


# Batches


def test_a_batch_of_200_is_applied(oracle: VyperContract, publisher: str) -> None:
    entries = [item(token_id, round_id=3, price=1_000 + token_id) for token_id in range(200)]

    events = publish(oracle, publisher, entries)

    now = boa.env.timestamp
    assert len(events) == 200
    assert [(e.tokenId, e.roundId, e.price, e.updatedAt) for e in events] == [
        (token_id, 3, 1_000 + token_id, now) for token_id in range(200)
    ]
    for entry in entries:
        assert oracle.latest_round(entry[0]) == expected_round(entry, now)


def test_a_batch_of_201_cannot_be_sent(oracle: VyperContract, publisher: str) -> None:
    entries = [item(token_id) for token_id in range(201)]

    # boa encodes them all; the contract's ABI decoder refuses the array's length.
    with boa.env.prank(publisher), boa.reverts(compiler="DynArray[PriceInput, 200] bounds check"):
        oracle.set_prices(entries)

    assert oracle.latest_round(0) == (0, 0, 0, 0, 0, 0)
    assert oracle.latest_round(200) == (0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(("size", "accepted"), [(200, True), (201, False)])
def test_the_bound_is_checked_on_the_raw_calldata(
    oracle: VyperContract, publisher: str, size: int, accepted: bool
) -> None:
    """Encoded by hand (not by boa), 201 items are refused by the contract's ABI decoder itself."""
    entries = [item(token_id) for token_id in range(size)]
    calldata = SET_PRICES + encode(["(uint256,uint256,uint256,uint256,uint256,uint256)[]"], [entries])

    call = boa.env.execute_code(oracle.address, sender=publisher, data=calldata)

    assert call.is_error is not accepted
    assert oracle.latest_round(0)[0] == (1 if accepted else 0)


def test_an_empty_batch_changes_nothing(oracle: VyperContract, publisher: str) -> None:
    assert publish(oracle, publisher, []) == []


@pytest.mark.parametrize(
    ("low", "price", "high"),
    [(0, 0, 0), (5, 5, 5), (0, 5, 10), (5, 5, 10), (0, 10, 10), (2**96 - 1, 2**96 - 1, 2**96 - 1)],
)
def test_a_price_inside_its_band_is_accepted(
    oracle: VyperContract, publisher: str, low: int, price: int, high: int
) -> None:
    publish(oracle, publisher, [item(1, price=price, low=low, high=high)])

    assert oracle.latest_round(1)[1:4] == (price, low, high)


def test_amounts_and_rounds_past_their_packed_width_are_refused(
    oracle: VyperContract, publisher: str
) -> None:
    """A round is packed in two words: prices and bands of 96 bits, round ids of 64."""
    with boa.env.prank(publisher), boa.reverts("PriceOracle: amount out of range"):
        oracle.set_prices([item(1, price=1, low=1, high=2**96)])
    with boa.env.prank(publisher), boa.reverts("PriceOracle: round out of range"):
        oracle.set_prices([item(1, round_id=2**64)])
    publish(
        oracle,
        publisher,
        [item(1, round_id=2**64 - 1, price=2**96 - 1, low=0, high=2**96 - 1, confidence=10_000)],
    )
    assert oracle.latest_round(1)[:5] == (2**64 - 1, 2**96 - 1, 0, 2**96 - 1, 10_000)


@pytest.mark.parametrize(("low", "price", "high"), [(6, 5, 10), (0, 11, 10), (10, 5, 0), (1, 0, 0)])
def test_a_price_outside_its_band_is_refused(
    oracle: VyperContract, publisher: str, low: int, price: int, high: int
) -> None:
    with boa.env.prank(publisher), boa.reverts("PriceOracle: price outside its band"):
        oracle.set_prices([item(1, price=price, low=low, high=high)])

    assert oracle.latest_round(1) == (0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("confidence", "accepted"), [(0, True), (10_000, True), (10_001, False), (2**256 - 1, False)]
)
def test_confidence_is_at_most_10000(
    oracle: VyperContract, publisher: str, confidence: int, accepted: bool
) -> None:
    entry = item(1, confidence=confidence)
    if accepted:
        publish(oracle, publisher, [entry])
        assert oracle.latest_round(1)[4] == confidence
    else:
        with boa.env.prank(publisher), boa.reverts("PriceOracle: confidence out of range"):
            oracle.set_prices([entry])
        assert oracle.latest_round(1) == (0, 0, 0, 0, 0, 0)


def test_one_invalid_item_refuses_the_whole_batch(oracle: VyperContract, publisher: str) -> None:
    entries = [item(1), item(2), item(3, confidence=10_001), item(4)]

    with boa.env.prank(publisher), boa.reverts("PriceOracle: confidence out of range"):
        oracle.set_prices(entries)

    for token_id in (1, 2, 3, 4):
        assert oracle.latest_round(token_id) == (0, 0, 0, 0, 0, 0)


# Rounds not newer than the last


def test_a_round_not_newer_is_skipped_and_the_rest_applied(oracle: VyperContract, publisher: str) -> None:
    current = item(1, round_id=5, price=500)
    publish(oracle, publisher, [current])
    set_at = boa.env.timestamp
    boa.env.time_travel(seconds=600)

    fresh = item(2, round_id=1, price=700)
    newer = item(3, round_id=9, price=900)
    events = publish(
        oracle,
        publisher,
        [item(1, round_id=5, price=501), fresh, item(1, round_id=4, price=400), newer, item(1, round_id=0)],
    )

    now = boa.env.timestamp
    assert now == set_at + 600
    assert oracle.latest_round(1) == expected_round(current, set_at)
    assert oracle.latest_round(2) == expected_round(fresh, now)
    assert oracle.latest_round(3) == expected_round(newer, now)
    assert [(e.tokenId, e.roundId, e.price) for e in events] == [(2, 1, 700), (3, 9, 900)]


def test_a_batch_sent_again_changes_nothing(oracle: VyperContract, publisher: str) -> None:
    entries = [item(token_id, round_id=2) for token_id in range(10)]
    publish(oracle, publisher, entries)
    set_at = boa.env.timestamp
    boa.env.time_travel(seconds=60)

    assert publish(oracle, publisher, entries) == []

    for entry in entries:
        assert oracle.latest_round(entry[0]) == expected_round(entry, set_at)


def test_round_zero_is_never_newer(oracle: VyperContract, publisher: str) -> None:
    assert publish(oracle, publisher, [item(1, round_id=0)]) == []
    assert oracle.latest_round(1) == (0, 0, 0, 0, 0, 0)


def test_a_token_twice_in_a_batch(oracle: VyperContract, publisher: str) -> None:
    """In batch order: a later, newer round of the token wins; a later, older one is skipped."""
    events = publish(
        oracle,
        publisher,
        [item(1, round_id=1, price=10), item(1, round_id=2, price=20), item(1, round_id=1, price=30)],
    )

    assert [(e.roundId, e.price) for e in events] == [(1, 10), (2, 20)]
    assert oracle.latest_round(1)[:2] == (2, 20)


def test_tokens_have_rounds_of_their_own(oracle: VyperContract, publisher: str) -> None:
    publish(oracle, publisher, [item(1, round_id=10)])
    publish(oracle, publisher, [item(2, round_id=3)])

    assert oracle.latest_round(1)[0] == 10
    assert oracle.latest_round(2)[0] == 3


def test_a_skipped_round_is_still_checked(oracle: VyperContract, publisher: str) -> None:
    """The band and confidence are checked before the round: a stale item that is invalid is refused."""
    publish(oracle, publisher, [item(1, round_id=5)])

    with boa.env.prank(publisher), boa.reverts("PriceOracle: price outside its band"):
        oracle.set_prices([item(2, round_id=1), item(1, round_id=4, price=10, low=11, high=12)])

    assert oracle.latest_round(2) == (0, 0, 0, 0, 0, 0)
