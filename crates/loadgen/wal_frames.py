#!/usr/bin/env python3
"""WAL pages a batch of new visitors writes on SQLite, by what the batch writes.

Not a benchmark of speed: it counts pages. It applies calltrail's SQLite migrations to a
file, then writes batches of new sessions as the visit writer does (one transaction each:
the sessions' multi-row insert, and for visitors who get a pool number their leases),
with automatic checkpoints off, and reads from
`PRAGMA wal_checkpoint` how many WAL frames (pages) the batches wrote. Ids are UUIDv7
strings, numbers are leased in id order and track codes handed out in turn, as calltrail
does. Each variant changes the schema after the migrations, to see what an index or a
table costs. Python's standard sqlite3 module only.

    python3 crates/loadgen/wal_frames.py              # every variant, batches of 8
    BATCH=16 python3 crates/loadgen/wal_frames.py sessions leases
    TREES=1 python3 crates/loadgen/wal_frames.py leases   # and the pages of each b-tree

With TREES=1 each variant also lists the pages a batch wrote to each table and index (read
from the WAL's frame headers, each page named through SQLite's `dbstat` table, which
Debian's SQLite has).
"""

import collections
import glob
import os
import random
import sqlite3
import struct
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = sorted(glob.glob(os.path.join(HERE, "../store/src/sqlite/migrations/*.sql")))
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/120.0 Safari/537.36")

# name: (SQL run after the migrations, what the batch writes for a visitor who gets a pool
# number: NO_LEASE (none: every visitor is shown the fallback), LEASE_ROWS (its lease row,
# as calltrail does), or IN_SESSION (no lease row: the session row, which names its number
# and lease, would be the lease, found through an index of sessions by number, a schema
# calltrail does not have; what it would save)
NO_LEASE, LEASE_ROWS, IN_SESSION = "none", "rows", "in session"
VARIANTS = {
    "sessions": ("", NO_LEASE),
    "leases": ("", LEASE_ROWS),
    "leases, no leases_number": ("DROP INDEX leases_number;", LEASE_ROWS),
    "leases, no leases_visitor": ("DROP INDEX leases_visitor;", LEASE_ROWS),
    "lease in the session row": (
        "CREATE INDEX sessions_number ON sessions(number_id, started_at);", IN_SESSION),
    "lease in the session row, by visitor": (
        "CREATE INDEX sessions_number ON sessions(number_id, started_at); "
        "CREATE INDEX sessions_visitor ON sessions(visitor_id);", IN_SESSION),
}


def v7(ms):
    """A UUIDv7 string of the time `ms`, as `uuid::Uuid::new_v7` makes them."""
    r = random.getrandbits(74)
    u = (ms << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1))
    return str(uuid.UUID(int=u))


def pages_by_tree(db, wal_file, page_size):
    """The WAL's frames counted by the table or index their page belongs to."""
    with open(wal_file, "rb") as f:
        wal = f.read()
    frame = 24 + page_size
    # A 32-byte header, then frames: a 24-byte header (the page number first) and the page.
    pages = [struct.unpack_from(">I", wal, 32 + i * frame)[0] for i in range((len(wal) - 32) // frame)]
    try:
        names = dict(db.execute("SELECT pageno, name FROM dbstat"))
    except sqlite3.OperationalError as e:
        sys.exit(f"TREES=1 needs SQLite's dbstat table: {e}")
    return collections.Counter(names.get(p, "(free or new)") for p in pages)


def frames(variant, batches, size, page_size, trees=False):
    sql, mode = VARIANTS[variant]
    with_leases = mode != NO_LEASE
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "calltrail.db"), isolation_level=None)
        db.execute(f"PRAGMA page_size = {page_size}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        for m in MIGRATIONS:
            with open(m) as f:
                db.executescript(f.read())
        db.executescript(sql)
        site, pool = v7(1), v7(2)
        numbers = [v7(3 + i) for i in range(batches * size)]
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        now, k = 1_700_000_000_000, 0
        for _ in range(batches):
            now += 3
            sessions, leases = [], []
            for _ in range(size):
                sid, vid, lid, number = v7(now), v7(now), v7(now), numbers[k]
                code = str(10_000 + k % 90_000)
                k += 1
                sessions.append((
                    sid, site, vid, now, now, code, "paid", "google", "cpc", "bench", None,
                    None, "https://www.google.com/", "google.com",
                    "https://bench.example/sofas?utm_source=google&utm_medium=cpc&utm_campaign=bench",
                    "/sofas", None, None, None, None, None, UA, "desktop", "Chrome", "Windows",
                    "127.0.0.1", None, "1920x1080", "en-US", 0, None, pool,
                    number if with_leases else None, lid if with_leases else None, 1, "Sofas", 1,
                    None if with_leases else "fallback",
                ))
                leases.append((lid, site, pool, number, sid, vid, "google", now, now, now + 900_000, None))
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO sessions (id, site_id, visitor_id, started_at, last_activity, track_code, "
                "channel, source, medium, campaign, content, keyword, referrer, referrer_domain, "
                "landing_url, landing_path, gclid, yclid, fbclid, ga_client_id, ym_client_id, "
                "user_agent, device, browser, os, ip, city, screen, lang, is_bot, rule_id, pool_id, "
                "number_id, lease_id, page_count, landing_title, landing_in_row, exhausted) VALUES ("
                + ", ".join(["?"] * 38) + ")",
                sessions,
            )
            if mode == LEASE_ROWS:
                db.executemany(
                    "INSERT INTO leases (id, site_id, pool_id, number_id, session_id, visitor_id, "
                    "source, leased_at, last_activity, hold_until, ended_at) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    leases,
                )
            db.execute("COMMIT")
        by_tree = pages_by_tree(db, os.path.join(d, "calltrail.db-wal"), page_size) if trees else {}
        _, log, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        db.close()
        return log / batches, by_tree


def main():
    size = int(os.environ.get("BATCH", "8"))
    page_size = int(os.environ.get("PAGE_SIZE", "4096"))
    trees = os.environ.get("TREES") == "1"
    batches = max(1, 3200 // size)
    names = sys.argv[1:] or list(VARIANTS)
    for name in names:
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    print(f"batches of {size} new visitors, {page_size}-byte pages, {batches} batches")
    for name in names:
        per_batch, by_tree = frames(name, batches, size, page_size, trees)
        print(f"{name:38s} {per_batch:6.2f} WAL pages a batch, {per_batch / size:5.2f} a visitor")
        for tree, n in sorted(by_tree.items(), key=lambda t: (-t[1], t[0])):
            print(f"    {tree:34s} {n / batches:6.2f}")


if __name__ == "__main__":
    main()
