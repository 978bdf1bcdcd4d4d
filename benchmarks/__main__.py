"""Run the benchmarks and print ratios: ``python -m benchmarks [--quick] [--part ...]``.

The parts: in-process (every scenario on asyncio and trio), instructions (instructions and
estimated cycles per request under callgrind, where valgrind is installed: the async
in-process scenarios, and the served apps behind uvicorn), served (requests per second behind
uvicorn and hypercorn under wrk), memory (RSS and tracemalloc over blocks of requests). A full
run, without --part or --quick, also draws docs/benchmarks.png.
"""

import argparse
import os
import platform
import sys
from pathlib import Path

from . import chart, instructions, memory, served, served_counts
from .inprocess import median, run
from .loadgen import find_load_tool
from .ratios import Ratio
from .scenarios import FLOORS, TARGETS

PARTS = ("inprocess", "instructions", "served", "memory")
DEFAULT_CHART = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.png"


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


def target_ratios(samples: dict[str, list[float]]) -> list[Ratio]:
    """The in-process targets: ratios of time per request, round by round."""
    return [Ratio.of(samples, name, anchor, bar, at_least=False) for name, anchor, bar in TARGETS]


def target_table(measured: list[Ratio]) -> list[str]:
    lines = [
        "| scenario | anchor | ratio (median of rounds) | bar | met |",
        "|---|---|---:|---:|---|",
    ]
    for r in measured:
        lines.append(
            f"| {r.scenario} | {r.anchor} | {r.median:.3f} | {r.bar_text} "
            f"| {'yes' if r.met else 'no'} |"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 in-process rounds of 100 requests, 2 served rounds of 1 s, "
        "2 memory blocks of 500 requests",
    )
    parser.add_argument("--part", choices=PARTS, action="append", help="default: all")
    parser.add_argument(
        "--backend", choices=["asyncio", "trio"], action="append", help="default: both"
    )
    inprocess = parser.add_argument_group("in-process")
    inprocess.add_argument("--rounds", type=int, default=9)
    inprocess.add_argument("--requests", type=int, default=2000, help="requests per round")
    serving = parser.add_argument_group("served")
    serving.add_argument("--server", choices=served.SERVERS, action="append", help="default: both")
    serving.add_argument(
        "--load-tool",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk, installed with apt-get if missing and root, else the Python fallback",
    )
    serving.add_argument("--served-rounds", type=int, default=9)
    serving.add_argument("--served-seconds", type=int, default=4, help="load per app and round")
    serving.add_argument(
        "--served-warmup", type=int, default=2, help="seconds of load per server before the rounds"
    )
    serving.add_argument("--connections", type=int, default=32)
    serving.add_argument(
        "--served-restart",
        action="store_true",
        help="start and stop the servers every round instead of once for all rounds",
    )
    mem = parser.add_argument_group("memory")
    mem.add_argument("--memory-blocks", type=int, default=4)
    mem.add_argument("--memory-requests", type=int, default=10_000, help="requests per block")
    drawing = parser.add_argument_group("chart")
    drawing.add_argument(
        "--chart",
        type=Path,
        help="where to write the PNG (default: docs/benchmarks.png on a full run; a --quick "
        "or --part run draws one only with --chart)",
    )
    drawing.add_argument("--no-chart", action="store_true")
    return parser.parse_args(argv)


def run_inprocess(args: argparse.Namespace, backends: list[str]) -> dict[str, list[Ratio]]:
    """Print the in-process tables; backend -> its target ratios."""
    rounds, requests = (3, 100) if args.quick else (args.rounds, args.requests)
    print(f"\n# In-process, {rounds} interleaved rounds of {requests} requests")
    measured = {}
    for backend in backends:
        samples = run(backend, rounds, requests)
        measured[backend] = target_ratios(samples)
        print(f"\n## {backend}\n")
        print("\n".join(ratio_table(samples)))
        print()
        print("\n".join(target_table(measured[backend])))
        floors = [Ratio.of(samples, *floor, at_least=False) for floor in FLOORS]
        print("\nThe floors: the contract's own mechanics without this package's code (see")
        print("FloorMiddleware); 'met' says whether any implementation could meet the bar.\n")
        print("\n".join(target_table(floors)))
    return measured


def run_instructions(args: argparse.Namespace, backends: list[str]) -> None:
    """Print the instruction counts; a --quick run counts two scenarios on asyncio."""
    if args.quick:
        # Not the served counts: uvicorn's start under callgrind alone takes minutes.
        instructions.run("asyncio", 10, 30, print, instructions.QUICK_SCENARIOS)
        return
    for backend in backends:
        instructions.run(backend, 100, 300, print, instructions.SCENARIOS)
    served_counts.run(200, 800, print)


def run_served(args: argparse.Namespace) -> dict[str, list[Ratio]]:
    """Print the served tables; server -> its target ratios."""
    settings = served.ServedSettings(
        rounds=2 if args.quick else args.served_rounds,
        seconds=1 if args.quick else args.served_seconds,
        warmup=1 if args.quick else args.served_warmup,
        restart=args.served_restart,
    )
    how = "started and stopped every round" if settings.restart else "started once for all rounds"
    print(
        f"\n# Served, {settings.rounds} interleaved rounds of {settings.seconds} s per app, "
        f"after {settings.warmup} s of warm-up; servers {how}\n"
    )
    tool = find_load_tool(args.load_tool, args.connections, print)
    print(f"load generator: {tool.description}")
    return served.run(args.server or list(served.SERVERS), tool, settings, print)


def run_memory(args: argparse.Namespace, backends: list[str]) -> None:
    """Print the memory tables."""
    blocks, requests = (2, 500) if args.quick else (args.memory_blocks, args.memory_requests)
    print(f"\n# Memory, in-process, {blocks} consecutive blocks of {requests:,} requests per app")
    memory.run(backends, blocks, requests, print)


def chart_path(args: argparse.Namespace) -> Path | None:
    """Where the chart goes: --chart, else the docs' chart on a full run, else nowhere."""
    if args.chart is not None:
        path: Path = args.chart
        return path
    return None if args.quick or args.part else DEFAULT_CHART


def draw(path: Path | None, panels: chart.Panels) -> None:
    """Write the chart if asked for and possible; say what happened either way."""
    if path is None:
        print("\nchart: not drawn (a --quick or --part run draws one only with --chart PATH)")
    elif not any(panels.values()):
        print("\nchart: not drawn (neither the in-process nor the served part ran)")
    elif not chart.available():
        print("\nchart: skipped, matplotlib is not installed (`make bench` installs it)")
    else:
        chart.write(path, panels)
        print(f"\nchart: {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.part or list(PARTS)
    backends = args.backend or ["asyncio", "trio"]
    python = f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}"
    print(f"{python}, {os.cpu_count()} CPUs")
    panels: chart.Panels = {}
    if "inprocess" in parts:
        panels["in-process: time per request, × anchor (lower is better)"] = run_inprocess(
            args, backends
        )
    if "instructions" in parts:
        run_instructions(args, backends)
    if "served" in parts:
        panels["served: requests per second, × anchor (higher is better)"] = run_served(args)
    if "memory" in parts:
        run_memory(args, backends)
    if not args.no_chart:
        draw(chart_path(args), panels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
