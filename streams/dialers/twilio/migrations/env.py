"""Alembic's entry point for the ledger: `Ledger.migrate()` hands it a connection (in
`config.attributes["connection"]`); `alembic upgrade head` run by hand builds one from
`sqlalchemy.url` in alembic.ini or, unset, from `DATABASE_URL`."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from streams.dialers.twilio.schema import make_engine
from streams.settings import Settings


def run(connection: Connection) -> None:
    context.configure(connection=connection, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        run(given)
        return
    url = (
        context.config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
    )
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()


main()
