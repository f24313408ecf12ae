"""The performance regression check: a short, fixed-size run of the codec and bus benchmarks,
whose ratios (never absolute times) are compared with infra/ci/perf-baseline.toml. Fails only
when a ratio falls below its floor.

usage: perf-check.py BASELINE RUN...

Each RUN is a copy of criterion's directory after a codec run, or a file the bus benchmark
printed. With several runs of one benchmark, each ratio is the best of them: a short run on
shared cores lands low now and then, never high by a regression.
"""

import json
import os
import re
import sys
import tomllib


def median_ns(criterion_dir, group, function, parameter):
    path = os.path.join(criterion_dir, group, function, parameter, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def main():
    baseline_path, *runs = sys.argv[1:]
    with open(baseline_path, "rb") as f:
        baseline = tomllib.load(f)
    measured = {}
    criterion_dirs = [r for r in runs if os.path.isdir(r)]
    bus_outputs = [r for r in runs if not os.path.isdir(r)]
    if not criterion_dirs or not bus_outputs:
        sys.exit("perf-check.py needs at least one codec run and one bus run")
    for criterion_dir in criterion_dirs:
        for op in ("encode", "decode"):
            typed = median_ns(criterion_dir, op, "hixbus typed", "3-line prescription")
            generic = median_ns(criterion_dir, op, "avro generic Value", "3-line prescription")
            key = f"codec.{op}_3_line"
            measured[key] = max(measured.get(key, 0.0), generic / typed)
    for bus_output in bus_outputs:
        with open(bus_output) as f:
            text = f.read()
        for op, label in (("publish", "publish (acked)"), ("consume", "consume")):
            row = re.search(rf"^\| {re.escape(label)} \| .* \| ([0-9.]+) \|$", text, re.M)
            if not row:
                sys.exit(f"the bus benchmark printed no '{label}' row:\n{text}")
            key = f"bus.{op}"
            measured[key] = max(measured.get(key, 0.0), float(row.group(1)))

    failed = False
    print("| Ratio | recorded | floor | this run |")
    print("|---|---|---|---|")
    for key, value in measured.items():
        section, name = key.split(".")
        ref = baseline[section][name]
        ok = value >= ref["floor"]
        failed |= not ok
        print(f"| {key} | {ref['recorded']} | {ref['floor']} | {value:.2f}{'' if ok else '  REGRESSION'} |")
    if failed:
        sys.exit("a ratio fell below its floor: a large performance regression (docs/performance.md)")


if __name__ == "__main__":
    main()
