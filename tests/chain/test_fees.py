"""EIP-1559 fees from `eth_feeHistory`, and the bumps of a replacement."""

from app.chain import outbox
from app.chain.fees import Fees, bump, capped, suggest
from tests.chain.conftest import rpc

GWEI = 10**9


def test_a_suggestion_is_twice_the_next_base_fee_plus_the_median_tip():
    history_base = [10 * GWEI, 11 * GWEI, 12 * GWEI]  # the last is the next block's
    rewards = [[1 * GWEI], [3 * GWEI], [2 * GWEI]]
    assert suggest(history_base, rewards, min_tip=0) == Fees(26 * GWEI, 2 * GWEI)
    assert suggest(history_base, rewards, min_tip=5 * GWEI) == Fees(29 * GWEI, 5 * GWEI)  # the floor
    assert suggest([], [], min_tip=GWEI) == Fees(GWEI, GWEI)  # an empty history: the floor alone


def test_a_replacement_raises_both_fees_by_the_bump_and_never_under_a_fresh_suggestion():
    previous = Fees(100, 10)
    assert bump(previous, Fees(50, 5), 20) == Fees(120, 12)
    assert bump(previous, Fees(300, 30), 20) == Fees(300, 30)  # the market moved past the bump
    assert bump(Fees(1, 1), Fees(1, 1), 20) == Fees(2, 2)  # 20% of 1 wei is still a bump
    assert capped(Fees(300, 400), 250) == Fees(250, 250)


async def test_the_outbox_prices_from_the_nodes_fee_history(web3, settings):
    await rpc(web3, "anvil_setNextBlockBaseFeePerGas", hex(40 * GWEI))
    await rpc(web3, "anvil_mine", hex(1))
    history = await web3.eth.fee_history(1, "latest", [50])
    fees = await outbox.suggested_fees(web3, settings)
    assert fees.max_fee_per_gas >= 2 * history["baseFeePerGas"][-1] > 0
    assert fees.max_priority_fee_per_gas >= settings.chain.min_tip_wei
