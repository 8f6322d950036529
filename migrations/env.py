"""Alembic environment: migrates the daemon's connection, or alembic.ini's URL from the CLI."""

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator

from daemon.storage import database, schema

config = context.config
target_metadata = schema.Base.metadata

if config.config_file_name is not None:
    # Only the alembic command line has a file (alembic.ini); the daemon keeps its own logging.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the project's TypeDecorators as their plain SQL type: revisions stay frozen."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters most things by rebuilding the table
        transactional_ddl=True,  # true here: the "begin" hook wraps DDL in BEGIN IMMEDIATE
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
    # Foreign keys are off while migrating (see create_migration_engine): check before commit.
    database.check_foreign_keys(connection)


def cli_url() -> str:
    """`alembic -x url=...` wins over alembic.ini's sqlalchemy.url."""
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise database.DatabaseError("no database URL: set sqlalchemy.url or pass -x url=...")
    return url


def run_from_cli() -> None:
    engine = database.create_migration_engine(cli_url())
    try:
        with engine.begin() as connection:
            run_on(connection)
    finally:
        engine.dispose()


def run_offline() -> None:
    context.configure(
        url=cli_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif isinstance(shared := config.attributes.get("connection"), Connection):
    run_on(shared)  # upgrade_database(): its connection, already inside BEGIN IMMEDIATE
else:
    run_from_cli()
