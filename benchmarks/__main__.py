"""Run the benchmarks and print ratios: ``python -m benchmarks [--quick] [--backend ...]``."""

import argparse
import platform
import sys

from .inprocess import median, run
from .scenarios import TARGETS


def ratio_table(samples: dict[str, list[float]]) -> list[str]:
    bare = samples["bare"]
    lines = [
        f"| scenario | µs/request (median) | × bare | spread of × bare over {len(bare)} rounds |",
        "|---|---:|---:|---|",
    ]
    for name, times in samples.items():
        per_round = [t / b for t, b in zip(times, bare, strict=True)]
        lines.append(
            f"| {name} | {median(times) * 1e6:.2f} | {median(per_round):.3f} "
            f"| {min(per_round):.3f}–{max(per_round):.3f} |"
        )
    return lines


def target_table(samples: dict[str, list[float]]) -> list[str]:
    lines = [
        "| scenario | anchor | ratio (median of rounds) | bar | met |",
        "|---|---|---:|---:|---|",
    ]
    for name, anchor, bar in TARGETS:
        per_round = [t / a for t, a in zip(samples[name], samples[anchor], strict=True)]
        ratio = median(per_round)
        lines.append(
            f"| {name} | {anchor} | {ratio:.3f} | ≤ {bar:.2f} | {'yes' if ratio <= bar else 'no'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds, few requests")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument(
        "--backend", choices=["asyncio", "trio"], action="append", help="default: both"
    )
    args = parser.parse_args(argv)
    rounds, requests = (3, 100) if args.quick else (args.rounds, args.requests)
    print(f"# In-process, {rounds} interleaved rounds of {requests} requests")
    print(f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}")
    for backend in args.backend or ["asyncio", "trio"]:
        samples = run(backend, rounds, requests)
        print(f"\n## {backend}\n")
        print("\n".join(ratio_table(samples)))
        print()
        print("\n".join(target_table(samples)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
