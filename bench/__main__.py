"""`make bench`: Keel's benchmarks (hollow agents on the fake driver) and their figures.

The benchmark issue fills this in; until then it says so rather than printing made-up numbers.
"""

from __future__ import annotations


def main() -> None:
    print("no benchmarks yet: they arrive with the benchmark issue (see README, Benchmarks)")


if __name__ == "__main__":
    main()
