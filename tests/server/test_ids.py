"""Ids are a prefix and 32 hex digits: 12 of milliseconds since the epoch, 20 random."""

from __future__ import annotations

import re
import time

from aegis_server.ids import new_id, new_request_id


def test_format_and_time_prefix() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id("dec_")
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"dec_[0-9a-f]{32}", made)
    assert before <= int(made[4:16], 16) <= after


def test_later_ids_sort_later_and_none_repeat() -> None:
    first = [new_id("aud_") for _ in range(2000)]
    time.sleep(0.002)
    second = [new_id("aud_") for _ in range(2000)]
    assert max(first) < min(second)
    assert len(set(first + second)) == 4000
    assert len({made[16:] for made in first}) == 2000  # the random part differs within one millisecond too


def test_request_ids_have_the_same_shape() -> None:
    assert re.fullmatch(r"req_[0-9a-f]{32}", new_request_id())
