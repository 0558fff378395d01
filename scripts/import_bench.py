#!/usr/bin/env python3
"""Import rate of `mxmedia import synapse`, release build, on this machine.

    python3 scripts/import_bench.py [--small 10000] [--large 4] [--large-mib 256]

Makes a media store and a SQLite database shaped like Synapse's (its tables
and `aa/bb/rest` file layout): SMALL files of 1-64 KiB of assorted text and
binary, and LARGE files of LARGE_MIB each, every row with its SHA-256 as
Synapse >= 1.128 records it. Then imports each set with the release binary
into the embedded default (a local directory with fsync, and sled), with
`--no-thumbnails` (the files are not images) and again with `--verify`, and
prints items/s and MB/s. It writes the table into docs/benchmarks.md
(section `import_bench`).
"""

import argparse
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_NAME = "bench.test"


def make_store(dir, items):
    """A Synapse-shaped store in `dir` with `items` = [(id, bytes producer, size)]."""
    db = sqlite3.connect(os.path.join(dir, "homeserver.db"))
    db.execute(
        "CREATE TABLE local_media_repository (media_id TEXT, media_type TEXT,"
        " media_length INTEGER, created_ts BIGINT, upload_name TEXT, user_id TEXT,"
        " quarantined_by TEXT, url_cache TEXT, last_access_ts BIGINT,"
        " safe_from_quarantine BOOLEAN DEFAULT 0 NOT NULL,"
        " authenticated BOOLEAN DEFAULT 0 NOT NULL, sha256 TEXT, UNIQUE (media_id))"
    )
    db.execute(
        "CREATE TABLE remote_media_cache (media_origin TEXT, media_id TEXT,"
        " media_type TEXT, created_ts BIGINT, upload_name TEXT, media_length INTEGER,"
        " filesystem_id TEXT, last_access_ts BIGINT, quarantined_by TEXT,"
        " authenticated BOOLEAN DEFAULT 0 NOT NULL, sha256 TEXT)"
    )
    total = 0
    for media_id, chunks in items:
        path = os.path.join(dir, "media_store", "local_content", media_id[0:2], media_id[2:4])
        os.makedirs(path, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with open(os.path.join(path, media_id[4:]), "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
        total += size
        db.execute(
            "INSERT INTO local_media_repository (media_id, media_type, media_length,"
            " created_ts, upload_name, user_id, sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (media_id, "application/octet-stream", size, 1_700_000_000_000, media_id + ".bin",
             "@mover:" + SERVER_NAME, digest.hexdigest()),
        )
    db.commit()
    db.close()
    return total


def small_items(count):
    rng = random.Random(7)
    for i in range(count):
        size = rng.randint(1024, 64 * 1024)
        if i % 2:
            data = (f"text file {i} " * (size // 12 + 1)).encode()[:size]
        else:
            data = rng.randbytes(size)
        yield f"small{i:07d}abcdefghij", [data]


def large_items(count, mib):
    rng = random.Random(11)
    block = rng.randbytes(1024 * 1024)
    for i in range(count):
        # Each file differs in its first bytes, so none deduplicates.
        yield f"large{i:07d}abcdefghij", [f"large {i}".encode()] + [block] * mib


def run_import(binary, store, target, extra):
    config = os.path.join(target, "config.yaml")
    with open(config, "w") as f:
        f.write(
            f"server_name: {SERVER_NAME}\ndata_dir: {target}\nselfcheck_on_start: false\n"
            f"homeserver: {{url: 'http://127.0.0.1:9'}}\n"
            f"datastores:\n  - {{type: local, id: local, path: {target}/media}}\n"
        )
    started = time.monotonic()
    out = subprocess.run(
        [binary, "import", "synapse", "--config", config, "--media-store",
         os.path.join(store, "media_store"), "--database",
         os.path.join(store, "homeserver.db"), "--no-thumbnails"] + extra,
        capture_output=True, text=True, check=True,
    )
    elapsed = time.monotonic() - started
    report = json.loads(out.stdout[out.stdout.index("{"):])
    return elapsed, report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=10000)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=256)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "mxmedia")
    rows = []
    sets = [
        (f"{args.small:,} small files (1-64 KiB)", lambda: small_items(args.small), args.small),
        (f"{args.large} large files ({args.large_mib} MiB)",
         lambda: large_items(args.large, args.large_mib), args.large),
    ]
    for name, items, count in sets:
        with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "target")) as work:
            store = os.path.join(work, "synapse")
            os.makedirs(store)
            total = make_store(store, items())
            for label, extra in [("import", []), ("import --verify", ["--verify"])]:
                target = os.path.join(work, label.replace(" ", "_").replace("-", ""))
                os.makedirs(target)
                subprocess.run(["sync"], check=True)
                elapsed, report = run_import(binary, store, target, extra)
                assert report["local"] == count, report
                rows.append((name, label, count / elapsed, total / elapsed / 1e6, elapsed))
                print(f"{name}, {label}: {count / elapsed:,.2f} items/s, "
                      f"{total / elapsed / 1e6:,.1f} MB/s ({elapsed:.1f} s)", flush=True)
    table = ["| media store | run | items/s | MB/s | seconds |", "|---|---|---:|---:|---:|"]
    for name, label, rate, mbs, elapsed in rows:
        shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"
        table.append(f"| {name} | `{label}` | {shown} | {mbs:,.1f} | {elapsed:.1f} |")
    text = "\n".join(table)
    print(text)
    benchdoc.replace_section(
        "import_bench",
        "Synapse import rate (`scripts/import_bench.py`: release build, local "
        "datastore with fsync, sled, 2 cores):\n\n" + text,
    )


if __name__ == "__main__":
    sys.exit(main())
