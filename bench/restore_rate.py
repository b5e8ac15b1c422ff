"""Restore rate: ``smalltable restore`` from a real SeaweedFS on loopback, against replay.

The log of ``load_rate.py`` (generated as nginx writes it, cached in ``bench/.data/``)
is cut into SEGMENTS rotated files, archived by the real archiver
(``ingestd/ops/archive.py``) into a SeaweedFS of its own (``weed mini``, as the tests
run it), then, in the same run:

- restore: ``smalltable restore --from s3://… --home NEW`` (the real CLI: list, verify
  the chain, download and SHA-256 every segment, load with the daemon's loader);
- baseline: ``smalltable replay --jobs 1`` of the same files already on disk (loading
  alone, no S3, no verification).

Both must load the same rows (records + rejects), or it stops. Printed: rows/s and
MiB/s of each (wall clock, interpreter start-up included) and their ratio.
``--short``: 100,000 lines; else 1,000,000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from load_rate import count_rows, ensure_log  # noqa: E402

from ingestd.config import load_config  # noqa: E402
from ingestd.ops.archive import Archiver  # noqa: E402
from tests.conftest import free_ports  # noqa: E402
from tests.s3lib import BUCKET, credentials_env, start_seaweed  # noqa: E402

SEGMENTS = 8
MIB = 1 << 20


def split(log: Path, logs: Path, parts: int) -> list[Path]:
    """``log`` cut at line ends into ``parts`` rotated files, oldest with the highest number."""
    data = log.read_bytes()
    step, start, paths = len(data) // parts, 0, []
    for n in range(parts):
        end = len(data) if n == parts - 1 else data.index(b"\n", start + step) + 1
        path = logs / f"ingest.log.{parts - n}"
        path.write_bytes(data[start:end])
        when = time.time() - 3600 + n
        os.utime(path, (when, when))
        paths.append(path)
        start = end
    return paths


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """The command's wall clock and the last line it printed (its summary)."""
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return time.monotonic() - started, done.stdout.strip().splitlines()[-1]


def main() -> None:
    lines = 100_000 if "--short" in sys.argv else 1_000_000
    log = ensure_log(lines)
    size = log.stat().st_size
    with tempfile.TemporaryDirectory(prefix="restore-rate-") as work:
        work = Path(work)
        seaweed = start_seaweed(work / "seaweed", free_ports(10))
        try:
            env = {**os.environ, **credentials_env(), "AWS_ENDPOINT_URL": seaweed.endpoint}
            os.environ.update(env)
            url = f"s3://{BUCKET}/restore-rate"
            config = load_config(None, {"home": str(work / "lost"), "archive": url})
            config.path("log_dir").mkdir(parents=True)
            files = split(log, config.path("log_dir"), SEGMENTS)
            started = time.monotonic()
            Archiver(config).run_pass()
            archive_seconds = time.monotonic() - started
            # The quota is lifted, as load_rate.py does: the biggest project outgrows the
            # default 100 MiB, and over-quota is decided per batch (docs/development.md).
            lifted = work / "lifted.json"
            lifted.write_text(json.dumps({"projects": {"quota_mb": 100_000}}))
            smalltable = [sys.executable, "-m", "ingestd"]
            restore, said = timed(
                [*smalltable, "restore", "--config", str(lifted), "--from", url, "--home", str(work / "new")],
                env,
            )
            replay, _ = timed(
                [
                    *smalltable,
                    "replay",
                    "--config",
                    str(lifted),
                    "--home",
                    str(work / "replayed"),
                    "--jobs",
                    "1",
                    *[a for f in files for a in ("--from", str(f))],
                ],
                env,
            )
            rows = {
                name: count_rows(sorted((work / name / "data").glob("[!_]*.db")), ("records", "rejects"))
                for name in ("new", "replayed")
            }
            if rows["new"] != rows["replayed"]:
                raise SystemExit(f"restore and replay loaded different rows: {rows}")
        finally:
            seaweed.stop()
    print(f"{rows['new']:,} rows (records + rejects) loaded by both")
    print(
        f"{lines:,} lines, {size / MIB:.1f} MiB in {SEGMENTS} segments (archived in {archive_seconds:.1f} s)"
    )
    for name, seconds in (("restore (S3, verified)", restore), ("replay --jobs 1 (local)", replay)):
        print(
            f"{name:26} {seconds:6.1f} s  {lines / seconds:9,.0f} rows/s  {size / MIB / seconds:6.1f} MiB/s"
        )
    print(f"restore / replay: {replay / restore:.2f}x the rate")
    print(f"restore said: {said}")


if __name__ == "__main__":
    main()
