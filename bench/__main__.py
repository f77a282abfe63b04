"""`make bench`: Keel's benchmarks and their figures.

- `bench` (what `make bench` runs; `make bench QUICK=1` is `--profile quick`; `--help` lists
  the flags): every scenario of the scale issue with a hollow fleet (`bench.suite`), one table
  and `bench/results/latest.json`.
- `bench.convergence`: a fleet of fake-driver agents, 500 workloads, changes at 20/s for 60 s;
  apply-to-placed p50/p99 and what keel_convergence_seconds reports for the same changes.
- `bench.slis`: against a fleet already running (`make run`), 100 creates and a crash loop.
"""

from __future__ import annotations

import os
import sys

# The bench forks (control planes, agents, keelctl) from a process holding gRPC channels; with
# gRPC's fork handlers on, every fork logs a warning and a child may crash before it execs.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from bench import suite  # after the setting above, which gRPC reads at import


def main() -> None:
    sys.exit(suite.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
