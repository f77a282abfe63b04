"""`make bench`: Keel's benchmarks and their figures.

The hollow-agent benchmarks (fake driver, many hosts) arrive with the benchmark issue. Until
then this says so, and points at the SLI measurement that runs against a live fleet.
"""

from __future__ import annotations


def main() -> None:
    print("no benchmarks yet: the hollow-agent benchmarks arrive with the benchmark issue.")
    print("Convergence SLIs on a live fleet: run `make run`, then in another terminal")
    print("  .venv/bin/python -m bench.slis")


if __name__ == "__main__":
    main()
