# pragma version ~=0.4.3
"""
@title AssetToken
@notice The ERC-721 of DynamicVault's tokenized assets (snekmate's `erc721` module). Each asset is
        minted by a minter (the platform signer) at the token id the platform gave it, so the id on
        the chain and in the API are one. `tokenURI` is the base URI (the API's public metadata
        route, OpenSea's metadata standard) followed by the token id.
        The module's own `safe_mint`, which numbers tokens by a counter, and `burn` are not exported:
        an id is the platform's to choose, and a token outlives its trades. A mint runs no code of
        the receiver's (no `onERC721Received`): the signer pays for it, so it must cost what a mint
        costs, whoever the owner is.
        `transfers(id)` counts each token's transfers: the Marketplace keeps the count a listing was
        made at, so a token that moved since (even away and back) no longer sells at that listing.
"""

from ethereum.ercs import IERC165
implements: IERC165

from ethereum.ercs import IERC721
implements: IERC721

from snekmate.auth import ownable as ow
initializes: ow

from snekmate.tokens import erc721
initializes: erc721[ownable := ow]

exports: (
    erc721.supportsInterface,
    erc721.balanceOf,
    erc721.ownerOf,
    erc721.approve,
    erc721.getApproved,
    erc721.setApprovalForAll,
    erc721.isApprovedForAll,
    erc721.tokenURI,
    erc721.totalSupply,
    erc721.tokenByIndex,
    erc721.tokenOfOwnerByIndex,
    erc721.name,
    erc721.symbol,
    erc721.is_minter,
    erc721.set_minter,
    erc721.nonces,
    erc721.permit,
    erc721.DOMAIN_SEPARATOR,
    erc721.owner,
    erc721.eip712Domain,
    erc721.transfer_ownership,
    erc721.renounce_ownership,
)

NAME: constant(String[25]) = "DynamicVault Asset"
SYMBOL: constant(String[5]) = "DVA"
EIP712_VERSION: constant(String[20]) = "1"


@deploy
@payable
def __init__(base_uri: String[80]):
    """
    @param base_uri Where each token's metadata is, up to its id: the API's `/api/metadata/`.
    """
    ow.__init__()
    erc721.__init__(NAME, SYMBOL, base_uri, NAME, EIP712_VERSION)


# Transfers of each token so far (its mint is none).
transfers: public(HashMap[uint256, uint256])


@external
def mint(owner: address, token_id: uint256):
    """
    @notice Mint `token_id` to `owner`. Only a minter may; an id minted before is refused.
    """
    assert erc721.is_minter[msg.sender], "AssetToken: access is denied"
    erc721._mint(owner, token_id)


@external
@payable
def transferFrom(owner: address, to: address, token_id: uint256):
    """
    @notice ERC-721 `transferFrom`, counting the transfer first.
    """
    assert erc721._is_approved_or_owner(msg.sender, token_id), "erc721: caller is not token owner or approved"
    self.transfers[token_id] += 1
    erc721._transfer(owner, to, token_id)


@external
@payable
def safeTransferFrom(owner: address, to: address, token_id: uint256, data: Bytes[1_024] = b""):
    """
    @notice ERC-721 `safeTransferFrom`, counting the transfer before the receiver is called.
    """
    assert erc721._is_approved_or_owner(msg.sender, token_id), "erc721: caller is not token owner or approved"
    self.transfers[token_id] += 1
    erc721._safe_transfer(owner, to, token_id, data)
