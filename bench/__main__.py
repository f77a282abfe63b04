"""`make bench`: Keel's benchmarks and their figures.

- `bench.convergence` (what `make bench` runs; flags pass through, `--help` lists them): a
  fleet of its own with fake-driver agents, 500 workloads, changes at 20/s for 60 s; prints
  apply-to-placed p50/p99 and what keel_convergence_seconds reports for the same changes.
- `bench.slis`: against a fleet already running (`make run`), 100 creates and a crash loop.

The hollow-agent benchmarks (many hosts) arrive with the benchmark issue.
"""

from __future__ import annotations

import sys

from bench import convergence


def main() -> None:
    convergence.main(sys.argv[1:])


if __name__ == "__main__":
    main()
