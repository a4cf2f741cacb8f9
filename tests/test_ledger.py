"""The ledger (bench/ledger.py runs it for minutes): through recorder kill -9, SIGSTOP, a full disk
and restarts, the history is exactly the acknowledged rows and no time is accepted twice."""

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package sits at the repo root

from bench.ledger import Report, run

SECONDS = 3.0


def test_the_history_is_exactly_the_acknowledged_rows_through_every_fault() -> None:
    seed = int(os.environ.get("ZMQSTREAM_LEDGER_SEED") or random.randrange(2**32))
    print(f"\nledger seed {seed} (ZMQSTREAM_LEDGER_SEED={seed} runs this schedule again)")
    report = Report(seed)
    try:
        run(SECONDS, seed, report)
    finally:
        print(report)
    assert report.acknowledged > 0
    assert all(report.faults.values()) or report.skipped, report.faults
