"""Plant one realistic bug at a time in the source and check that the test suite turns red.

    python tools/plant_bugs.py              # every bug of planted_bugs.py, each against the tests that should catch it
    python tools/plant_bugs.py --full       # each against the whole suite (slow: minutes per surviving bug)
    python tools/plant_bugs.py --only loss  # the bugs whose name contains "loss"
    python tools/plant_bugs.py --only "cache|jitter"  # several words: the bugs whose name contains any

Each bug is one edit of one line (the text must occur exactly once). The file is restored after each
run, also on Ctrl-C. Prints one line per bug (caught / SURVIVED) and exits 1 when any survived.
Run it with nothing else on the machine's cores; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aticnet"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from planted_bugs import BUGS  # noqa: E402  (the list, beside this script)


def run_tests(tests: list[str], timeout: float) -> tuple[bool, float]:
    """(passed, seconds) of pytest on ``tests`` (stops at the first failure)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start
    return done.returncode == 0, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="run the whole suite for each bug")
    parser.add_argument("--only", default="", help="only the bugs whose name contains this ('a|b': either)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    survived = []
    bugs = [b for b in BUGS if any(word in b[0] for word in args.only.split("|"))]
    for name, rel, text, replacement, tests in bugs:
        path = SRC / rel
        original = path.read_text()
        if original.count(text) != 1:
            print(f"STALE  {name}: the text to replace occurs {original.count(text)} times in {rel}", flush=True)
            survived.append(name)
            continue
        path.write_text(original.replace(text, replacement))
        try:
            passed, seconds = run_tests(["tests"] if args.full else [f"tests/{t}" for t in tests.split()], args.timeout)
        finally:
            path.write_text(original)
        print(f"{'SURVIVED' if passed else 'caught  '} {name} ({rel}, {seconds:.0f} s)", flush=True)
        if passed:
            survived.append(name)
    print(f"{len(bugs) - len(survived)} of {len(bugs)} planted bugs caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
