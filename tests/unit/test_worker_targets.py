"""What a worker dials: one coordinator, a list of them, or a DNS name gRPC balances over."""

from __future__ import annotations

import pytest

from taskmaster.config import Settings
from taskmaster.worker.runtime import Worker, parse_targets


def test_one_address_a_list_and_a_dns_name() -> None:
    assert parse_targets("127.0.0.1:8080") == ["127.0.0.1:8080"]
    assert parse_targets(" a:8080, b:8080 ,") == ["a:8080", "b:8080"]
    assert parse_targets("dns:///coordinator:8080") == ["dns:///coordinator:8080"]


def test_no_address_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="TASKMASTER_COORDINATOR"):
        parse_targets(" , ")


def test_workers_start_on_different_coordinators_of_a_list() -> None:
    # a random first pick spreads a pool over the list; each worker then goes round it
    starts = {Worker(Settings(), coordinator="a:1,b:2,c:3").target for _ in range(60)}
    assert starts == {"a:1", "b:2", "c:3"}
