"""Run a multi-statement SQL script inside an Alembic migration.

asyncpg's prepared statements take one command each; its simple-query path (`execute` with no
arguments) takes a whole script, so scripts go straight to the driver connection.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.util import await_


def run_script(sql: str) -> None:
    driver_connection = op.get_bind().connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
    await_(driver_connection.execute(sql))
