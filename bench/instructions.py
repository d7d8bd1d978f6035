"""Instructions chatsite executes per request, counted by valgrind's callgrind: unlike CPU time, the
count does not move with the host's speed or its neighbours, so two commits can be compared on a
noisy machine in one run each (bench/README.md).

    .venv/bin/python bench/instructions.py           # 2 rounds of 50 two-delta replies at once
    .venv/bin/python bench/instructions.py --floor   # the same through bench/stack_floor.py

The rounds are relay.py's `requests` row: the same servers, sockets and messages, with chatsite's
daphne run under callgrind and counting only while a round runs. Needs valgrind (Debian's package).
Counted instructions leave out the kernel's work (system time) and what the caches and the GIL cost,
so they rank changes to the code, not the CPU time a request takes.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay  # bench/ is not a package: its directory is on the path above

WARM_STREAMS = 3


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, check=True)


def total_instructions(profile: Path) -> int:
    for line in profile.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no total in {profile}")


def rounds_runner(rounds: int, streams: int, out: Path) -> relay.LevelsRunner:
    async def run_rounds(
        run: relay.Run, conversations: list[str], _levels: list[int]
    ) -> list[dict[str, Any]]:
        from conversations import upstream

        # Warm imports, first queries and pooled connections, uncounted.
        warm = replace(run, deltas=5, pace_ms=0)
        await relay.chatsite_level(warm, conversations[:1])
        await relay.chatsite_level(warm, conversations[1:WARM_STREAMS])
        short = replace(run, deltas=2, pace_ms=0, pause_after_first_ms=relay.REQUEST_PAUSE_MS)
        pid = str(run.chatsite_pid)
        callgrind_control("--instr=on", pid)
        rows = []
        for number in range(rounds):
            start = WARM_STREAMS + number * streams
            callgrind_control("--zero", pid)
            measured = await relay.chatsite_level(short, conversations[start : start + streams])
            callgrind_control(f"--dump=round{number}", pid)
            dumps = sorted(out.glob(f"callgrind.{pid}.*"), key=lambda path: path.stat().st_mtime)
            row = relay.summarize(streams, "requests", measured, 2)
            row["instructions_per_request"] = total_instructions(dumps[-1]) / streams
            rows.append(row)
        await upstream.close_client()
        return rows

    return run_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description="chatsite's instructions per request (callgrind).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", type=int, default=relay.REQUEST_STREAMS, help="replies at once")
    parser.add_argument("--floor", action="store_true", help="run bench/stack_floor.py in chatsite's place")
    parser.add_argument(
        "--application",
        default="chatsite.asgi:application",
        help="the ASGI application to count (a variant of chatsite's, on PYTHONPATH)",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind profiles in DIR")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="chatsite-callgrind-") as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        launcher = (
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out.resolve()}/callgrind.%p",
        )
        settings = argparse.Namespace(
            levels=[], profile=None, logs=None, pg_database="chatsite_bench", deltas=2, pace_ms=0, timeout=900
        )
        report = relay.benchmark(
            settings,
            runner=rounds_runner(args.rounds, args.streams, out),
            conversations=WARM_STREAMS + args.rounds * args.streams,
            launcher=launcher,
            application="bench.stack_floor:application" if args.floor else args.application,
        )
    name = "the stack's floor (bench/stack_floor.py)" if args.floor else args.application
    print(f"{report['date']}, {report['engines']}, {name}, {args.streams} two-delta replies at once")
    for number, row in enumerate(report["rows"]):
        complete = f"{row['complete']}/{row['streams']} complete"
        print(
            f"round {number}: {row['instructions_per_request'] / 1e6:.2f} M instructions per request, {complete}"
        )


if __name__ == "__main__":
    main()
