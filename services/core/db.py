"""Engine and sessions. One code path for SQLite and PostgreSQL; SQLite gets WAL and a busy
timeout so five services and a worker can share the file."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session

from services.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from alembic.config import Config


class Base(DeclarativeBase):
    """Declarative base of every table."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (streaming, admin) run while a worker writes progress.
    cur.execute("PRAGMA journal_mode=WAL")
    # Several processes write the same file: wait for the lock instead of failing at once.
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


# Each process's connections to the database: kept open, and opened beyond those when busy.
POOL_SIZE = 5
POOL_OVERFLOW = 10
# Of those, how many a service's requests may hold at once (`services.core.deps`): the rest
# stay for the work that opens sessions of its own meanwhile (the chunk path, workers, a
# request's nested transaction), so that work never waits for a request that waits for it.
REQUEST_SESSIONS = POOL_SIZE + POOL_OVERFLOW - 5


def make_engine(url: str) -> Engine:
    """An engine for `url` with the pragmas/pool settings the platform needs."""
    pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 10, "check_same_thread": False}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the configured database."""
    settings = settings or get_settings()
    return _engine_for(settings.effective_database_url)


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> "Config":
    """Alembic's configuration for `url`, without an ini file."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def init_db(settings: Settings | None = None, *, migrate: bool | None = None) -> None:
    """Create the storage layout and bring the schema to the latest migration (`migrate`:
    whether to look at the schema at all; by default the MIGRATE_ON_START setting, which the
    launcher turns off for the services it starts once it has migrated)."""
    from services.core.storage import Storage

    settings = settings or get_settings()
    Storage(settings.storage_dir).ensure_layout()
    if not (settings.migrate_on_start if migrate is None else migrate):
        return
    url = settings.effective_database_url
    if _current_revision(url) != _head_revision(url):
        from alembic import command

        command.upgrade(alembic_config(url), "head")


def _head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def _current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with _engine_for(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def new_session(settings: Settings | None = None) -> Session:
    """A session on the configured database (it connects at its first query).

    A plain Session, not one from a `sessionmaker` made per call: each sessionmaker makes a
    Session subclass of its own, whose event dispatch (the doorbell's listeners on Session)
    SQLAlchemy then sets up afresh, about a fifth of a raw upload chunk's Python time."""
    return Session(engine(settings), expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with new_session(settings) as session, session.begin():
        yield session
