# pragma version ~=0.4.3
"""
@title Marketplace
@notice Fixed-price sales of AssetTokens in ETH. An owner who has approved the marketplace (for the
        token, or for all of its tokens) lists it at a price; a buyer pays exactly that price; the platform keeps a fee in basis
        points for its fee recipient and the seller gets the rest, in the same transaction. `buy_token`
        is non-reentrant and clears the listing before it pays anyone.
        A listing keeps the token's transfer count (AssetToken's `transfers`) at the time it was made:
        a token that has moved since, even away and back, does not sell at its old listing and price.
"""

from snekmate.auth import ownable
initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership)


interface AssetToken:
    def ownerOf(tokenId: uint256) -> address: view
    def getApproved(tokenId: uint256) -> address: view
    def isApprovedForAll(owner: address, operator: address) -> bool: view
    def transferFrom(owner: address, to: address, tokenId: uint256): payable
    def transfers(tokenId: uint256) -> uint256: view


struct Listing:
    seller: address
    price: uint256
    transfers: uint256  # the token's transfer count when it was listed


event Listed:
    tokenId: indexed(uint256)
    seller: indexed(address)
    price: uint256


event Delisted:
    tokenId: indexed(uint256)
    seller: indexed(address)


event Sold:
    tokenId: indexed(uint256)
    seller: indexed(address)
    buyer: indexed(address)
    price: uint256
    fee: uint256


event FeeChanged:
    feeBps: uint256
    feeRecipient: address


# At most 10%: a fee is the platform's to set, not to take a sale with.
MAX_FEE_BPS: public(constant(uint256)) = 1_000
BPS: constant(uint256) = 10_000
# 2**96 - 1 wei (79 billion ETH), as PriceOracle's amounts: more than all the ether there is, so no sale
# is refused, and a price always fits the 34 digits an indexer's decimal columns hold exactly.
MAX_PRICE: public(constant(uint256)) = 2**96 - 1

token: public(immutable(AssetToken))
fee_bps: public(uint256)
fee_recipient: public(address)
listings: public(HashMap[uint256, Listing])


@deploy
def __init__(token_: AssetToken, fee_bps_: uint256, fee_recipient_: address):
    ownable.__init__()
    token = token_
    self._set_fee(fee_bps_, fee_recipient_)


@external
def list_token(tokenId: uint256, price: uint256):
    """
    @notice List a token you own at `price` wei (at most MAX_PRICE); listing again changes the price.
            The marketplace must be approved for the token (or for all of the owner's tokens).
    """
    assert price > 0, "Marketplace: price is zero"
    assert price <= MAX_PRICE, "Marketplace: price out of range"
    assert staticcall token.ownerOf(tokenId) == msg.sender, "Marketplace: not the owner"
    assert (
        staticcall token.getApproved(tokenId) == self
        or staticcall token.isApprovedForAll(msg.sender, self)
    ), "Marketplace: not approved"
    self.listings[tokenId] = Listing(seller=msg.sender, price=price, transfers=staticcall token.transfers(tokenId))
    log Listed(tokenId=tokenId, seller=msg.sender, price=price)


@external
def delist_token(tokenId: uint256):
    """
    @notice Withdraw a listing: its seller may, and so may the token's owner if it has changed hands.
    """
    listing: Listing = self.listings[tokenId]
    assert listing.seller != empty(address), "Marketplace: not listed"
    assert (
        msg.sender == listing.seller or msg.sender == staticcall token.ownerOf(tokenId)
    ), "Marketplace: not the seller"
    self.listings[tokenId] = empty(Listing)
    log Delisted(tokenId=tokenId, seller=listing.seller)


@external
@payable
@nonreentrant
def buy_token(tokenId: uint256):
    """
    @notice Buy a listed token for exactly its price. The listing is cleared and the token moved
            before the seller and the fee recipient are paid.
    """
    listing: Listing = self.listings[tokenId]
    assert listing.seller != empty(address), "Marketplace: not listed"
    assert msg.value == listing.price, "Marketplace: wrong price"
    assert msg.sender != listing.seller, "Marketplace: buyer is the seller"
    # A token that moved since it was listed (even away and back) no longer sells at this listing.
    assert staticcall token.ownerOf(tokenId) == listing.seller, "Marketplace: listing is stale"
    assert staticcall token.transfers(tokenId) == listing.transfers, "Marketplace: listing is stale"
    fee: uint256 = listing.price * self.fee_bps // BPS
    self.listings[tokenId] = empty(Listing)
    extcall token.transferFrom(listing.seller, msg.sender, tokenId)
    raw_call(listing.seller, b"", value=listing.price - fee)
    if fee > 0:
        raw_call(self.fee_recipient, b"", value=fee)
    log Sold(tokenId=tokenId, seller=listing.seller, buyer=msg.sender, price=listing.price, fee=fee)


@external
def set_fee(fee_bps_: uint256, fee_recipient_: address):
    """
    @notice The owner sets the fee (basis points, at most MAX_FEE_BPS) and who receives it.
    """
    ownable._check_owner()
    self._set_fee(fee_bps_, fee_recipient_)


@internal
def _set_fee(fee_bps_: uint256, fee_recipient_: address):
    assert fee_bps_ <= MAX_FEE_BPS, "Marketplace: fee too high"
    assert fee_recipient_ != empty(address), "Marketplace: no fee recipient"
    self.fee_bps = fee_bps_
    self.fee_recipient = fee_recipient_
    log FeeChanged(feeBps=fee_bps_, feeRecipient=fee_recipient_)
