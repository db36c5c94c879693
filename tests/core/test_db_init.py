"""init_db: the storage layout always; the schema unless MIGRATE_ON_START is off (the
launcher migrates once, then starts its services with it off)."""

import sqlite3
from pathlib import Path

from services.core.db import init_db
from services.core.settings import Settings


def _tables(storage: Path) -> set[str]:
    database = storage / "videos.db"
    if not database.exists():
        return set()
    with sqlite3.connect(database) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_with_migrate_on_start_off_the_layout_is_made_and_the_schema_left(tmp_path):
    settings = Settings(storage_dir=tmp_path / "storage", database_url="", migrate_on_start=False)
    init_db(settings)
    assert (tmp_path / "storage" / "originals").is_dir()
    assert (tmp_path / "storage" / "hls").is_dir()
    assert "alembic_version" not in _tables(tmp_path / "storage")


def test_migrate_true_migrates_whatever_the_setting_and_the_default_migrates(tmp_path):
    off = Settings(storage_dir=tmp_path / "a", database_url="", migrate_on_start=False)
    init_db(off, migrate=True)
    assert {"alembic_version", "videos", "jobs"} <= _tables(tmp_path / "a")

    default = Settings(storage_dir=tmp_path / "b", database_url="")
    assert default.migrate_on_start is True
    init_db(default)
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a")


def test_chunk_rows_keep_their_sha256_as_a_digest_across_the_0009_migration(tmp_path):
    from alembic import command

    from services.core.db import alembic_config

    url = f"sqlite:///{tmp_path / 'videos.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0008")
    sha = "ab" * 32
    with sqlite3.connect(tmp_path / "videos.db") as db:
        db.execute(
            "INSERT INTO uploads (id, filename, total_chunks, completed, created_at, updated_at)"
            " VALUES ('u1', 'a.mp4', 2, 0, '2026-12-06', '2026-12-06')"
        )
        db.execute("INSERT INTO upload_chunks VALUES ('u1', 0, 10, ?)", (sha,))
    command.upgrade(config, "head")
    with sqlite3.connect(tmp_path / "videos.db") as db:
        db.execute("INSERT INTO upload_chunks VALUES ('u1', 1, 5, 'xxh3-128:' || ?)", ("cd" * 16,))
        rows = db.execute('SELECT "index", digest FROM upload_chunks ORDER BY "index"').fetchall()
    assert rows == [(0, f"sha256:{sha}"), (1, f"xxh3-128:{'cd' * 16}")]
    # Back down: the sha256 row is what it was; the row with no sha256 is dropped (missing).
    command.downgrade(config, "0008")
    with sqlite3.connect(tmp_path / "videos.db") as db:
        assert db.execute("SELECT * FROM upload_chunks").fetchall() == [("u1", 0, 10, sha)]
