"""A short soak (bench/soak.py runs the long one): nothing grows while streams run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package sits at the repo root

from bench.soak import Sample, soak


def test_memory_and_descriptors_stay_flat_while_200_channels_stream() -> None:
    samples: list[Sample] = []
    soak(minutes=0.4, channels=200, every=3, report=samples.append)
    assert len(samples) >= 6
    settled, last = samples[1], samples[-1]
    growth = {name: round(mib - settled.rss_mib[name], 2) for name, mib in last.rss_mib.items()}
    print(f"\n[figure] soak 200 channels, {last.elapsed_s:.0f} s: RSS growth MiB {growth}, fds {last.fds}")
    assert all(s.rows_per_s > 0.8 * 200 * 10 for s in samples[1:]), [s.rows_per_s for s in samples]
    assert last.fds == settled.fds, "file descriptors leak"
    for name, mib in last.rss_mib.items():
        assert mib - settled.rss_mib[name] < 15, (
            f"{name} grew from {settled.rss_mib[name]:.1f} to {mib:.1f} MiB"
        )
