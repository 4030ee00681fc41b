"""Compares two runs' metrics.jsonl key by key (every key except time/* and perf/*): the check
that a refactor left results unchanged (benchmarks/RESULTS.md, "Architecture refactor").

  python benchmarks/compare_runs.py BEFORE_WORKDIR AFTER_WORKDIR
"""

import json
import pathlib
import sys


def rows(workdir: str) -> list[dict]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def compare(before: list[dict], after: list[dict]) -> dict:
    """{rows, compared, differ: {key: max abs difference}, only_before, only_after}."""
    if [r["step"] for r in before] != [r["step"] for r in after]:
        raise SystemExit("the runs logged different steps")
    differ, compared, only_before, only_after = {}, 0, set(), set()
    for a, b in zip(before, after):
        only_before |= set(a) - set(b)
        only_after |= set(b) - set(a)
        for k in sorted(set(a) & set(b) - {"step"}):
            if k.startswith(("time/", "perf/")):
                continue
            compared += 1
            if a[k] != b[k]:
                gap = abs(a[k] - b[k]) if None not in (a[k], b[k]) else float("inf")
                differ[k] = max(differ.get(k, 0.0), gap)
    return dict(
        rows=len(before),
        compared=compared,
        differ=differ,
        only_before=sorted(only_before),
        only_after=sorted(only_after),
    )


if __name__ == "__main__":
    print(json.dumps(compare(rows(sys.argv[1]), rows(sys.argv[2])), indent=1))
