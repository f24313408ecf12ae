"""Checks docker-compose.yml without a Docker engine.

1. Validates it against the Compose specification JSON schema (SCHEMA: compose_spec.json).
2. For every service built from the hixbus image, checks that its command is a real `hixbus`
   subcommand (asks the binary for its help) and that every HIXBUS_* variable it sets is one
   that subcommand reads (clap lists them as `[env: NAME=]`).

usage: compose-check.py COMPOSE_FILE SCHEMA HIXBUS_BIN
"""

import json
import subprocess
import sys

import jsonschema
import yaml


def main():
    compose_path, schema_path, hixbus = sys.argv[1:4]
    with open(compose_path) as f:
        compose = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = json.load(f)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    for e in errors:
        print(f"{compose_path}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    if errors:
        sys.exit(1)

    problems = []
    checked = 0
    for name, service in compose["services"].items():
        if not str(service.get("image", "")).startswith("hixbus") and "build" not in service:
            continue
        command = service.get("command") or []
        # The subcommand path is the leading words; arguments follow the first flag.
        path = []
        for w in command:
            if w.startswith("-"):
                break
            path.append(w)
        help_run = subprocess.run([hixbus, *path, "--help"], capture_output=True, text=True)
        if help_run.returncode != 0 or not path:
            problems.append(f"service {name}: `hixbus {' '.join(path)}` is not a hixbus command")
            continue
        help_text = help_run.stdout
        for flag in (w for w in command if w.startswith("--")):
            if flag.split("=")[0] not in help_text:
                problems.append(f"service {name}: `hixbus {' '.join(path)}` has no {flag} option")
        for var in service.get("environment", {}):
            if var.startswith("HIXBUS_") and var not in ("HIXBUS_LOG", "HIXBUS_LOG_FORMAT"):
                if f"[env: {var}=" not in help_text:
                    problems.append(f"service {name}: `hixbus {' '.join(path)}` does not read {var}")
        checked += 1
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"{compose_path}: valid Compose file; {checked} hixbus services use real commands and variables")


if __name__ == "__main__":
    main()
