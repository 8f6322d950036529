"""The README's "Querying the database" queries, read from the README itself and timed."""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import REPO_ROOT

SECTION = "## Querying the database"


@dataclass(frozen=True)
class ReadmeQuery:
    title: str  # the comment line above it in the README
    sql: str  # exactly as written there, without the final semicolon


@dataclass(frozen=True)
class QueryTiming:
    title: str
    rows: int
    seconds: list[float]  # each run, the first one from a freshly opened connection
    plan: list[str]  # EXPLAIN QUERY PLAN, one line per step


def readme_queries(readme: Path = REPO_ROOT / "README.md") -> list[ReadmeQuery]:
    """Every statement of the section's ```sql block, titled by its leading comment."""
    text = readme.read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    if block is None:
        raise ValueError(f"README.md: no sql block under {SECTION!r}")
    queries = []
    for statement in block.group(1).split(";"):
        lines = [line for line in statement.strip().splitlines() if line.strip()]
        if not lines:
            continue
        comments = [line for line in lines if line.lstrip().startswith("--")]
        title = comments[0].lstrip("- ").rstrip(".") if comments else lines[0]
        sql = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
        queries.append(ReadmeQuery(title, sql))
    return queries


def read_only(db_path: Path) -> sqlite3.Connection:
    """A connection as `sqlite3 -readonly` opens one: nothing it runs can write."""
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)


def time_query(db_path: Path, query: ReadmeQuery, runs: int = 3) -> QueryTiming:
    seconds = []
    rows = 0
    connection = read_only(db_path)
    try:
        plan = [str(row[3]) for row in connection.execute(f"EXPLAIN QUERY PLAN {query.sql}")]
        for _ in range(runs):
            started = time.perf_counter()
            rows = len(connection.execute(query.sql).fetchall())
            seconds.append(time.perf_counter() - started)
    finally:
        connection.close()
    return QueryTiming(query.title, rows, seconds, plan)
