# pragma version ~=0.4.3
"""
@title Minimal ERC-1271 smart-contract wallet
@notice One owner, set at deployment. `isValidSignature` accepts a 65-byte
        (r, s, v) ECDSA signature over `hash` made by the owner's key and
        answers with the ERC-1271 magic value; anything else gets 0xffffffff.
        Used by the tests of Sign-In with Ethereum for contract accounts.
"""

# bytes4(keccak256("isValidSignature(bytes32,bytes)"))
_MAGIC_VALUE: constant(bytes4) = 0x1626ba7e
_INVALID: constant(bytes4) = 0xffffffff
# secp256k1n / 2: larger `s` values are the malleable twin of a valid signature (EIP-2).
_S_UPPER_BOUND: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168


owner: public(address)


@deploy
def __init__(owner: address):
    assert owner != empty(address), "ERC1271Wallet: owner is the zero address"
    self.owner = owner


@external
@view
def isValidSignature(hash: bytes32, signature: Bytes[65]) -> bytes4:
    """
    @notice ERC-1271: the magic value 0x1626ba7e when `signature` is the
            owner's signature of `hash`, else 0xffffffff.
    """
    if len(signature) != 65:
        return _INVALID
    r: uint256 = convert(slice(signature, 0, 32), uint256)
    s: uint256 = convert(slice(signature, 32, 32), uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    if v < 27:
        v += 27
    if v != 27 and v != 28:
        return _INVALID
    if s > _S_UPPER_BOUND:
        return _INVALID
    signer: address = ecrecover(hash, v, r, s)
    if signer == empty(address) or signer != self.owner:
        return _INVALID
    return _MAGIC_VALUE
