"""The same API flows on a real PostgreSQL server (the default is SQLite)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.coordinator import test_flow, test_runs
from tests.coordinator.conftest import Env

pytestmark = pytest.mark.postgres


@pytest.fixture()
def pg_env(make_env: Any, postgres_url: str) -> Any:
    import psycopg

    def factory(**kw: Any) -> Env:
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = postgres_url.rsplit("/", 1)[0] + "/" + name
        return make_env(database_url=url, **kw)  # type: ignore[no-any-return]

    return factory


def test_flow_on_postgres(pg_env: Any) -> None:
    env: Env = pg_env()
    env.setup_room()
    test_flow.test_room_upload_bundle_run_receipt_output(env)


def test_budget_race_on_postgres(pg_env: Any) -> None:
    test_runs.test_concurrent_runs_over_budget_exactly_one_succeeds(
        lambda **kw: pg_env(**kw))


def test_idempotency_and_reconcile_on_postgres(pg_env: Any) -> None:
    env: Env = pg_env()
    env.setup_room()
    test_runs.test_idempotency_key(env)
