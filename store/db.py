"""Database setup: SQLite in WAL mode with a busy timeout; the schema comes from Alembic migrations."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # Deleted or overwritten content (purged request texts) is zeroed, not left in free pages.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def make_engine(db_path: Path) -> Engine:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if not db_path.exists():
        # Create the file private before SQLite ever writes a byte of personal data to it.
        fd = os.open(db_path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    engine = create_engine(
        f"sqlite:///{db_path}", connect_args={"check_same_thread": False, "timeout": 15}
    )
    event.listen(engine, "connect", _pragmas)
    return engine


def alembic_config(db_path: Path):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{db_path}")
    return cfg


def migrate(db_path: Path) -> Engine:
    """Create or upgrade the schema to the newest revision, then return an engine on it."""
    from alembic import command

    engine = make_engine(db_path)
    cfg = alembic_config(db_path)
    with engine.connect() as conn:
        # A batch migration rebuilds a table (copy, drop, rename): dropping a table that other tables'
        # foreign keys point at fails while they are enforced. Off for the migration (outside its
        # transaction: SQLite ignores the pragma inside one), checked after it, on again for the pool.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migrated database has rows whose references are broken: {broken[:5]}")
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db_path) + suffix)
        if p.exists():
            os.chmod(p, 0o600)
    return engine


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
