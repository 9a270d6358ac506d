"""Run the benchmarks and write bench/RESULTS.md (and a plot): `make bench`.

python -m bench.run                 # every benchmark, 5 repeats each
python -m bench.run --only 1,7      # some of them
python -m bench.run --smoke --out /tmp/r.md   # tiny sizes, 1 repeat: proves the code runs
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, Context, Result

HISTORY = ROOT / "bench" / "HISTORY.md"
# (module, the table rows it measures)
MODULES = [
    ("bench.b1_end_to_end", {1, 2}),
    ("bench.b3_upload", {3}),
    ("bench.b4_stream", {4}),
    ("bench.b4_14_accel", {4, 14}),
    ("bench.b5_videos_query", {5}),
    ("bench.b6_fanout", {6}),
    ("bench.b7_worker_throughput", {7}),
    ("bench.b8_access", {8}),
    ("bench.b9_metrics", {9}),
    ("bench.b10_reindex", {10}),
    ("bench.b11_ladder", {11}),
    ("bench.b12_playable", {12}),
    ("bench.b13_ladder_end_to_end", {13}),
    ("bench.b14_segments", {14}),
    ("bench.b15_tus", {15, 16}),
    ("bench.b17_webhooks", {17, 18}),
    ("bench.b19_storage", {19, 20}),
]


def version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (done.stdout or done.stderr).strip().splitlines()[0]


def machine() -> list[str]:
    memory = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )  # fmt: skip
    return [
        f"- cores: {os.cpu_count()}, RAM: {int(memory) / 1024**2:.1f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {version(['ffmpeg', '-version'])}",
        f"- {version(['redis-server', '--version'])}; {version(['nginx', '-v'])}",
    ]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}–{max(values):.3g})"


def report(results: list[Result], failures: list[str], seconds: float, smoke: bool) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {seconds:.0f} s"
        + (" (SMOKE RUN: tiny sizes, 1 repeat; the numbers mean nothing)" if smoke else "")
        + ". Each row ran clipo-gql and its baseline alternately in the same run; values are"
        " medians with (min–max). For times the ratio is ours ÷ baseline (lower is better), for"
        " rates ours ÷ baseline (higher is better).",
        "",
        *machine(),
        "",
        "| # | what | unit | clipo-gql | baseline | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(results, key=lambda r: r.number):
        sign = "≥" if r.higher_is_better else "≤"
        lines.append(
            f"| {r.number} | {r.name} | {r.unit} | {spread(r.ours)} | {spread(r.baseline)} "
            f"({r.baseline_name}) | {r.ratio:.2f} | {sign} {r.target} | "
            f"{'yes' if r.met else '**no**'} |"
        )
    notes = [f"- #{r.number}: {note}" for r in results for note in r.notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    if failures:
        lines += ["", "## Benchmarks that did not run", "", *failures]
    if HISTORY.is_file() and not smoke:
        # Written by hand: what was changed for which miss, with before/after ratios.
        lines += ["", HISTORY.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ordered = sorted(results, key=lambda r: r.number)
    fig, ax = plt.subplots(figsize=(9, 4))
    # A row with several results (4: whole file, ranges req/s, ranges MB/s) gets 4a, 4b, ...
    per_row = {n: [r for r in ordered if r.number == n] for n in {r.number for r in ordered}}
    labels = [
        f"#{r.number}{'abcdef'[per_row[r.number].index(r)] if len(per_row[r.number]) > 1 else ''}"
        f" {r.unit}"
        for r in ordered
    ]
    # Normalised so that 1.0 is the target and higher is better for every row.
    # A lower-is-better row may measure 0 (16: no byte sent again): drawn at 3× its target.
    scores = [
        (r.ratio / r.target) if r.higher_is_better else min(r.target / max(r.ratio, 1e-9), 3.0)
        for r in ordered
    ]
    ax.bar(labels, scores, color=["#15803d" if r.met else "#b91c1c" for r in ordered])
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_ylabel("score vs target (≥ 1 = target met)")
    ax.set_title("clipo-gql against its baselines, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


async def run_all(ctx: Context, only: set[int] | None) -> tuple[list[Result], list[str]]:
    results: list[Result] = []
    failures: list[str] = []
    for name, rows in MODULES:
        if only is not None and not rows & only:
            continue
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(name)
            found = await module.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            failures.append(f"- `{name}`: {type(exc).__name__}: {exc}")
            continue
        results += [r for r in found if only is None or r.number in only]
        print(f"bench: {name} took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return results, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="comma-separated table rows, e.g. 1,3")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    only = {int(n) for n in args.only.split(",")} if args.only else None
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="clipo-bench-") as workdir:
        ctx = Context(
            workdir=Path(workdir),
            repeats=1 if args.smoke else max(args.repeats, 1),
            smoke=args.smoke,
            redis_url=redis_url,
        )
        results, failures = asyncio.run(run_all(ctx, only))
    args.out.write_text(report(results, failures, time.monotonic() - started, args.smoke))
    picture = args.out.with_suffix(".png")
    if results and plot(results, picture):
        with args.out.open("a") as out:
            out.write(f"\n![ratios against targets]({picture.name})\n")
    print(args.out.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not installed: run ./scripts/setup first")
    sys.exit(main())
