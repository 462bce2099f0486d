# pragma version ~=0.4.3
"""
@title PriceOracle
@notice The platform's appraisals on the chain: per token the price, the low and high of its band
        (wei), its confidence (basis points of 100%, so 9_250 is 92.50) and the round that set it.
        Only the publisher sets prices, a batch at a time. A round not newer than the token's last is
        skipped, not refused, so a batch sent again changes nothing and a retry is always safe.
        `latest_round` reads as Chainlink's `latestRoundData` does, per token.
        A token's round is packed in two storage words (price, low, confidence and time in one; high
        and round id in the other) rather than six: a price costs a third of the gas to set the first
        time and under half to update. So prices and bands are at most 2**96 - 1 wei (79 billion ETH)
        and round ids at most 2**64 - 1.
"""

from snekmate.auth import ownable
initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership)


struct Packed:
    head: uint256  # price (96 bits) | low (96) | confidence (16) | updatedAt (40)
    tail: uint256  # high (96) | roundId (64)


struct PriceInput:
    tokenId: uint256
    roundId: uint256
    price: uint256
    low: uint256
    high: uint256
    confidence: uint256


event PriceUpdated:
    tokenId: indexed(uint256)
    roundId: indexed(uint256)
    price: uint256
    low: uint256
    high: uint256
    confidence: uint256
    updatedAt: uint256


event PublisherChanged:
    publisher: indexed(address)


MAX_BATCH: public(constant(uint256)) = 200
MAX_CONFIDENCE: public(constant(uint256)) = 10_000

publisher: public(address)
rounds: HashMap[uint256, Packed]

MAX_AMOUNT: constant(uint256) = 2**96 - 1
MAX_ROUND: constant(uint256) = 2**64 - 1


@deploy
def __init__(publisher_: address):
    ownable.__init__()
    self._set_publisher(publisher_)


@external
def set_prices(prices: DynArray[PriceInput, MAX_BATCH]):
    """
    @notice Set up to MAX_BATCH tokens' prices. Each needs low <= price <= high (all at most
            MAX_AMOUNT), a confidence of at most MAX_CONFIDENCE and a round id of at most MAX_ROUND; a
            round not newer than the token's current one is skipped.
    """
    assert msg.sender == self.publisher, "PriceOracle: not the publisher"
    for item: PriceInput in prices:
        assert item.low <= item.price and item.price <= item.high, "PriceOracle: price outside its band"
        assert item.high <= MAX_AMOUNT, "PriceOracle: amount out of range"
        assert item.confidence <= MAX_CONFIDENCE, "PriceOracle: confidence out of range"
        assert item.roundId <= MAX_ROUND, "PriceOracle: round out of range"
        if item.roundId <= self.rounds[item.tokenId].tail & MAX_ROUND:
            continue
        self.rounds[item.tokenId] = Packed(
            head=(item.price << 160) | (item.low << 64) | (item.confidence << 48) | block.timestamp,
            tail=(item.high << 64) | item.roundId,
        )
        log PriceUpdated(
            tokenId=item.tokenId,
            roundId=item.roundId,
            price=item.price,
            low=item.low,
            high=item.high,
            confidence=item.confidence,
            updatedAt=block.timestamp,
        )


@external
@view
def latest_round(tokenId: uint256) -> (uint256, uint256, uint256, uint256, uint256, uint256):
    """
    @notice (roundId, price, low, high, confidence, updatedAt) of the token; all zero before its first.
    """
    r: Packed = self.rounds[tokenId]
    return (
        r.tail & MAX_ROUND,
        r.head >> 160,
        (r.head >> 64) & MAX_AMOUNT,
        r.tail >> 64,
        (r.head >> 48) & 65535,
        r.head & 1099511627775,
    )


@external
def set_publisher(publisher_: address):
    ownable._check_owner()
    self._set_publisher(publisher_)


@internal
def _set_publisher(publisher_: address):
    assert publisher_ != empty(address), "PriceOracle: no publisher"
    self.publisher = publisher_
    log PublisherChanged(publisher=publisher_)
