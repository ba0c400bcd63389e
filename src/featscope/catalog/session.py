"""Engine and session factory for the catalog (SQLite file by default, any SQLAlchemy URL)."""

from __future__ import annotations

from pathlib import Path

from contextlib import nullcontext

from sqlalchemy import Connection, Engine, create_engine, event, inspect, literal, text
from sqlalchemy.orm import Session, sessionmaker

from featscope.catalog.models import Base


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout for concurrent workers."""
    if url.startswith("sqlite:///"):
        db_path = Path(url.removeprefix("sqlite:///"))
        if str(db_path) not in ("", ":memory:"):
            db_path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(postgres_driver(url), pool_pre_ping=True)


def postgres_driver(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs name the psycopg (3) driver featscope installs; SQLAlchemy
    would otherwise look for psycopg2. URLs naming a driver (``postgresql+...://``) are kept as given."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def open_catalog(url: str) -> sessionmaker[Session]:
    """Create the schema if needed and return a session factory bound to it.

    On PostgreSQL the check-and-create runs under a transaction-scoped advisory lock, so a web server and
    several workers starting at once against an empty database do not race to create the same tables."""
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            Base.metadata.create_all(conn)
            add_missing_columns(conn)
    else:
        Base.metadata.create_all(engine)
        add_missing_columns(engine)
    return sessionmaker(engine, expire_on_commit=False)


_SCHEMA_LOCK = 0x66656174  # any constant shared by every featscope process ("feat")


def add_missing_columns(engine: Engine | Connection) -> list[str]:
    """Add columns that newer models have and an existing catalog lacks (additive upgrades only).

    ``create_all`` creates missing tables but never alters existing ones, so a catalog made by an
    older featscope would fail on a new column. New columns are always nullable or have a scalar
    default, which ``ALTER TABLE ... ADD COLUMN`` supports on SQLite and PostgreSQL alike; rows
    already stored keep their values. Returns the ``table.column`` names added."""
    insp = inspect(engine)
    added = []
    with (nullcontext(engine) if isinstance(engine, Connection) else engine.begin()) as conn:
        for table in Base.metadata.sorted_tables:
            if not insp.has_table(table.name):
                continue
            have = {c["name"] for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name in have:
                    continue
                ddl = f"ALTER TABLE {table.name} ADD COLUMN {col.name} {col.type.compile(dialect=engine.dialect)}"
                default = col.default.arg if col.default is not None and col.default.is_scalar else None
                if default is not None:
                    value = literal(default, col.type).compile(dialect=engine.dialect,
                                                               compile_kwargs={"literal_binds": True})
                    ddl += f" DEFAULT {value}"
                elif not col.nullable:
                    raise RuntimeError(f"cannot add required column {table.name}.{col.name} without a default")
                conn.execute(text(ddl))
                added.append(f"{table.name}.{col.name}")
    return added
