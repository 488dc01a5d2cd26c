#!/usr/bin/env python3
"""Counts the tests a `cargo test` run executed, from its output (libtest's "Running" and
"test result:" lines), and fails when the run proves less than it should:

- a test binary that has tests (an integration test file under tests/, or a library's unit
  tests) ran none of them: a file whose tests were all compiled out or filtered away would
  otherwise pass in silence. A binary whose every test is #[ignore]d is reported, not failed
  (an ignore carries its reason in the source and shows in the output);
- the total number of tests run is below the number recorded in the repository (MIN_FILE):
  removing tests must be a deliberate change of that number.

Usage: count-tests.py LOG MIN_FILE
"""
import re
import sys

RUNNING = re.compile(r"^\s+Running (\S+) \((\S+)\)")
RUNNING_UNIT = re.compile(r"^\s+Running unittests (\S+) \((\S+)\)")
RESULT = re.compile(
    r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; (\d+) measured; "
    r"(\d+) filtered out"
)


def binaries(lines):
    """(source, binary, passed, failed, ignored, filtered) per test binary, in run order."""
    current = None
    for line in lines:
        match = RUNNING_UNIT.match(line) or RUNNING.match(line)
        if match:
            current = (match.group(1), match.group(2).rsplit("/", 1)[-1])
            continue
        match = RESULT.match(line)
        if match and current:
            passed, failed, ignored, _, filtered = map(int, match.groups()[1:])
            yield current[0], current[1], passed, failed, ignored, filtered
            current = None


def has_tests(source):
    """Whether a binary built from `source` is meant to hold tests."""
    return source.startswith("tests/") or source.endswith("lib.rs")


def main(log_path, min_path):
    with open(log_path, encoding="utf-8", errors="replace") as log:
        runs = list(binaries(log))
    with open(min_path, encoding="utf-8") as f:
        minimum = int(f.read().split()[0])
    problems = []
    total = ignored_total = 0
    for source, binary, passed, failed, ignored, filtered in runs:
        total += passed + failed
        ignored_total += ignored
        if passed + failed > 0 or not has_tests(source):
            continue
        if ignored > 0 and filtered == 0:
            print(f"tests: note: {source} ({binary}) ran none, all {ignored} ignored")
        else:
            problems.append(f"{source} ({binary}) ran no test")
    print(
        f"tests: {total} run ({ignored_total} ignored) in {len(runs)} test binaries; "
        f"at least {minimum} required ({min_path})"
    )
    if not runs:
        problems.append("no libtest result found in the output")
    if total < minimum:
        problems.append(
            f"{total} tests run, fewer than the {minimum} recorded in {min_path}: "
            "if tests were removed on purpose, lower that number in the same change"
        )
    for problem in problems:
        print(f"tests: FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
