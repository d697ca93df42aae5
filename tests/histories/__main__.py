"""The history checker from the command line (run from the project root, with the venv):

    python -m tests.histories survey --tier sqlite --seeds 1-40 [--steps 300]
        the CI tier's histories for these seeds, each run to its end (not stopped at the first
        problem): per seed, every check that failed, with its first message. How the seeds of
        tests/integration/test_histories.py and tests/histories/FOUND.md were chosen.
    python -m tests.histories soak --minutes 30 [--tier pair|sqlite] [--steps 400]
        `make soak MINUTES=30`: random seeds until the time is up, real loader processes and real
        server faults (tests/histories/soak.py); a failing history is shrunk and printed.
    python -m tests.histories replay FILE [--tier pair|sqlite] [--real]
        a history a soak run wrote (JSON), played again.

The pair tier starts a MariaDB master/replica pair of its own with scripts/db-pair (in a fresh
folder on free ports; destroyed at the end) unless SLUICE_PAIR_DIR names a running one. Redis is
the machine's (SLUICE_TEST_REDIS_HOST/PORT, default 127.0.0.1:6379): the checker's keys live under
a prefix of their own, and nothing is flushed.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("SLUICE_LOG", "0")


def seed_list(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += range(int(low), int(high or low) + 1)
    return seeds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.histories", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    survey = commands.add_parser("survey", help="run CI-tier histories to their end and list what failed")
    survey.add_argument("--tier", choices=("sqlite", "pair"), default="sqlite")
    survey.add_argument("--seeds", type=seed_list, required=True, help="e.g. 1-40 or 3,7,12")
    survey.add_argument("--steps", type=int, default=300)
    soak = commands.add_parser("soak", help="random seeds, real processes and faults, shrinking")
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--tier", choices=("sqlite", "pair"), default="pair")
    soak.add_argument("--steps", type=int, default=400)
    soak.add_argument("--seed", type=int, default=None, help="start from this seed (default: random)")
    soak.add_argument("--shrink-minutes", type=float, default=10.0)
    replay = commands.add_parser("replay", help="play a history a soak run wrote")
    replay.add_argument("file")
    replay.add_argument("--tier", choices=("sqlite", "pair"), default="pair")
    replay.add_argument("--real", action="store_true", help="real processes and faults, as the soak tier")
    args = parser.parse_args(argv)

    from tests.histories import soak as tiers

    if args.command == "survey":
        return tiers.survey(args.tier, args.seeds, args.steps)
    if args.command == "soak":
        return tiers.soak(args.minutes, args.tier, args.steps, args.seed, args.shrink_minutes)
    return tiers.replay(args.file, args.tier, args.real)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
