"""A rollback made on one replica restores the earlier behaviour on every replica of the database (SQLite
file and PostgreSQL): the other picks it up through the bumped policy revision at its next check."""

from __future__ import annotations

from .conftest import ServerFactory, email_allowed_then_denied, send_email, versions


async def test_rollback_reaches_every_replica(make_server: ServerFactory, store_url: str) -> None:
    async with (
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as first,
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await email_allowed_then_denied(a)
        before = await send_email(b)
        assert (before["outcome"], before["policy_version"]) == ("DENY", 4)

        result = (await a.post("/api/v1/policy-versions/3/rollback")).json()
        assert result["changed"] is True and result["version"] == 5

        after = await send_email(b)
        assert (after["outcome"], after["policy_version"]) == ("ALLOW", 5)
        assert second.service.policies.active.version == 5
        assert [v["version"] for v in await versions(b) if v["active"]] == [5]
        assert len(await versions(b)) == 5  # the second replica recorded no version of its own


async def test_a_replica_checking_rarely_keeps_its_set_until_it_checks(make_server: ServerFactory) -> None:
    async with (
        make_server(policy_refresh_interval_seconds=0) as first,
        make_server(policy_refresh_interval_seconds=3600) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await email_allowed_then_denied(a)
        assert second.service.policies.active.version == 1  # it has not checked the revision yet
        await second.service.policies.load()  # a restart (or the next check) picks the change up
        assert (await send_email(b))["policy_version"] == 4
