"""ListUsers' pages over a real store (SQLite and PostgreSQL): every user once, oldest
first, ties broken by id, a user registered meanwhile on a later page, live keys counted,
bad sizes and tokens refused."""

from __future__ import annotations

import pytest

from services.auth.api_keys import ApiKey, User
from services.auth.store import Store
from services.auth.user_listing import MAX_PAGE_SIZE, UserListing
from services.common import page_tokens
from services.common.database import Database
from services.common.errors import InvalidArgument
from tests.clock import Clock
from tests.tamper import changed_at


async def walk(listing: UserListing, size: int) -> list[list[str]]:
    """Every page's user ids, following next_page_token to the end."""
    pages, token = [], ""
    while True:
        page, token = await listing.page(size, token)
        pages.append([user.user_id for user, _, _ in page])
        if not token:
            return pages


async def test_pages_hold_every_user_once_oldest_first_ties_by_id(db: Database) -> None:
    store = Store(db)
    # Three share a creation time: the cursor must break the tie by id, not skip or repeat.
    made = [("usr_e", 3.0), ("usr_c", 2.0), ("usr_b", 2.0), ("usr_d", 2.0), ("usr_a", 1.0)]
    made += [("usr_f", 4.5), ("usr_g", 5.25)]
    for user_id, at in made:
        assert await store.add_user(User(user_id, "default", at, f"{user_id}@example.com"))
    pages = await walk(UserListing(store, Clock()), 3)
    assert pages == [["usr_a", "usr_b", "usr_c"], ["usr_d", "usr_e", "usr_f"], ["usr_g"]]
    assert await walk(UserListing(store, Clock()), 0) == [[u for p in pages for u in p]]


async def test_a_user_registered_meanwhile_comes_on_a_later_page(db: Database) -> None:
    store = Store(db)
    for i in range(4):
        await store.add_user(User(f"usr_{i}", "default", float(i)))
    listing = UserListing(store, Clock())
    first, token = await listing.page(2, "")
    await store.add_user(User("usr_new", "default", 10.0, "new@example.com"))
    second, token = await listing.page(2, token)
    third, token = await listing.page(2, token)
    seen = [u.user_id for u, _, _ in first + second + third]
    assert seen == ["usr_0", "usr_1", "usr_2", "usr_3", "usr_new"]
    assert token == ""
    assert third[0][0].email == "new@example.com"


async def test_only_live_keys_are_counted_and_scopes_listed(db: Database) -> None:
    store, clock = Store(db), Clock()
    await store.add_user(User("usr_k", "default", 1.0), scopes=("execute", "sessions"))
    await store.add_user(User("usr_none", "default", 2.0))
    now = clock()

    async def key(key_id: str, **times: float) -> None:
        record = ApiKey(key_id, "usr_k", key_id, "saga_ak_x", ("execute",), now - 10, **times)
        await store.add_key(record, f"hash-{key_id}", limit=100, now=now - 10)

    await key("key_live")
    await key("key_later", expires_at=now + 60)
    await key("key_revoked", revoked_at=now - 1)
    await key("key_expired", expires_at=now - 1)
    page, _ = await UserListing(store, clock).page(0, "")
    assert [(u.user_id, scopes, live) for u, scopes, live in page] == [
        ("usr_k", ("execute", "sessions"), 2),
        ("usr_none", (), 0),
    ]


@pytest.mark.parametrize("size", [-1, MAX_PAGE_SIZE + 1])
async def test_a_page_size_out_of_range_is_refused(db: Database, size: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await UserListing(Store(db), Clock()).page(size, "")
    assert refused.value.reason == "PAGE_SIZE_INVALID"


async def test_a_token_altered_or_from_another_query_is_refused(db: Database) -> None:
    store = Store(db)
    for i in range(3):
        await store.add_user(User(f"usr_{i}", "default", float(i)))
    listing = UserListing(store, Clock())
    _, token = await listing.page(1, "")
    assert token
    forged = [
        changed_at(token, 5),
        page_tokens.encode(("1.0", "usr_1"), ("usr_0",)),  # another query's filters
        page_tokens.encode(("not-a-time", "usr_1"), ()),
        page_tokens.encode(("nan", "usr_1"), ()),
        page_tokens.encode(("1.0",), ()),
    ]
    for bad in forged:
        with pytest.raises(InvalidArgument) as refused:
            await listing.page(1, bad)
        assert refused.value.reason == "PAGE_TOKEN_INVALID", bad
