"""Build N project databases of M records each, the way ingestd would, for read benchmarks.

Records go through the real parser and loader (``records.build`` and ``Store``),
so the schema, columns and indexes are what production has. Bodies are realistic
~200-byte JSON events with a handful of keys. A data directory that already holds
the requested projects with the requested counts is reused.

    .venv/bin/python bench/make_projects.py --data bench/.data/data --projects 300 --records 10000
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from pathlib import Path

import click

from ingestd.ingest.records import build
from ingestd.model.request import Request
from ingestd.store.pool import Store

PAGES = ["/checkout", "/home", "/search", "/product/42", "/cart", "/profile"]
EVENTS = ["click", "view", "scroll", "submit", "error"]


def request(rng: random.Random, project: str, n: int, start: float) -> Request:
    body = json.dumps(
        {
            "user": f"user{rng.randint(1, 500)}",
            "event": rng.choice(EVENTS),
            "page": rng.choice(PAGES),
            "ms": rng.randint(1, 5000),
            "score": round(rng.random() * 100, 2),
            "meta": {"browser": rng.choice(["firefox", "chrome", "safari"]), "v": rng.randint(90, 130)},
        }
    ).encode()
    return Request(
        request_id=f"{rng.getrandbits(128):032x}",
        project=project,
        received=start + n * 60,
        method="POST",
        uri="/events",
        content_type="application/json",
        content_length=len(body),
        remote_addr="127.0.0.1",
        user_agent="bench",
        body=body,
    )


def existing_count(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("select count(*) from records").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def make(data: Path, projects: int, records: int, batch: int = 5000) -> None:
    store = Store(data, max_columns=200, open_databases=4)
    start = time.time() - records * 60
    names = [f"bench-{i:03d}" for i in range(projects)]
    todo = [name for name in names if existing_count(data / f"{name}.db") != records]
    with click.progressbar(todo, label=f"{len(todo)} projects x {records} records") as bar:
        for name in bar:
            (data / f"{name}.db").unlink(missing_ok=True)
            rng = random.Random(name)
            for first in range(0, records, batch):
                numbers = range(first, min(records, first + batch))
                built = [build(request(rng, name, n, start)) for n in numbers]
                store.write(name, built, [])
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/.data/data"))
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--records", type=int, default=10000)
    args = parser.parse_args()
    make(args.data, args.projects, args.records)


if __name__ == "__main__":
    main()
