"""The profile writes other domains make through the auth service (media sets the avatar URL)."""

import pytest

from app.auth import service
from app.auth.documents import User
from app.lib.errors import NotFound
from tests import factories


async def test_set_avatar_url_returns_the_url_it_replaces(client, settings):
    login = await factories.login(settings)
    assert await service.set_avatar_url(login.wallet, "https://cdn.example/a.jpg") is None
    assert (
        await service.set_avatar_url(login.user_id, "https://cdn.example/b.jpg")
        == "https://cdn.example/a.jpg"
    )
    assert await service.set_avatar_url(login.wallet.lower(), None) == "https://cdn.example/b.jpg"
    user = await User.find_one(User.walletAddress == login.wallet)
    assert user.profileInfo.avatarUrl is None
    assert user.roles == ["user"] and user.status == "active"  # nothing else was written


async def test_set_avatar_url_of_an_unknown_user_is_404(client):
    for who in (factories.new_account().address, "0123456789abcdef01234567", "not-an-id"):
        with pytest.raises(NotFound):
            await service.set_avatar_url(who, "https://cdn.example/a.jpg")
    assert await User.count() == 0


async def test_find_user_by_wallet_is_none_for_an_unknown_wallet(client, settings):
    login = await factories.login(settings)
    assert (await service.find_user_by_wallet(login.wallet)).walletAddress == login.wallet
    assert await service.find_user_by_wallet(factories.new_account().address) is None
