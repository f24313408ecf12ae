"""Checks docker-compose.yml without a Docker engine.

1. Validates it against the Compose specification JSON schema (SCHEMA: compose_spec.json).
2. For every service built from the hixbus image, checks that its command is a real `hixbus`
   subcommand (asks the binary for its help) and that every HIXBUS_* variable it sets is one
   that subcommand reads (clap lists them as `[env: NAME=]`; for `serve NAME`, NAME's own).
3. Every ${VARIABLE} it uses is set in .env, and .env sets nothing it does not use.
4. Kafka principals: the script `hixbus topics acls` writes for the organizations and projects
   the compose file mounts names every principal; the ACL step passes each its password
   variable; every service connects with SASL/SCRAM-SHA-512 as a principal of that script with
   that principal's own password variable.
5. Every file it mounts, or names under /etc/hixbus, exists.
6. Prometheus scrapes every hixbus service at the port it listens on, and nothing else.
7. The demo organizations' keys in .env match the digests in the organizations file it mounts,
   and that file has the same organizations as infra/organizations.demo.toml.

usage: compose-check.py COMPOSE_FILE SCHEMA HIXBUS_BIN
"""

import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib

import jsonschema
import yaml

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")
INFRA_IN_CONTAINER = "/etc/hixbus/"


def read_env(path):
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def host_path(root, container_path):
    return os.path.join(root, "infra", container_path[len(INFRA_IN_CONTAINER):])


def hixbus_services(compose):
    for name, service in compose["services"].items():
        if str(service.get("image", "")).startswith("hixbus") or "build" in service:
            yield name, service


def command_path(service):
    path = []
    for w in service.get("command") or []:
        if w.startswith("-"):
            break
        path.append(w)
    return path


def check_commands(compose, hixbus, problems):
    checked = 0
    for name, service in hixbus_services(compose):
        command = service.get("command") or []
        path = command_path(service)
        help_run = subprocess.run([hixbus, *path, "--help"], capture_output=True, text=True)
        if help_run.returncode != 0 or not path:
            problems.append(f"service {name}: `hixbus {' '.join(path)}` is not a hixbus command")
            continue
        help_text = help_run.stdout
        if path[0] == "serve" and len(path) == 2:
            # `serve --help` lists every service's settings; take this one's block.
            block = re.search(rf"^  {re.escape(path[1])}:\n((?:    .*\n?)*)", help_text, re.M)
            help_text = block.group(1) if block else ""
        for flag in (w for w in command if w.startswith("--")):
            if flag.split("=")[0] not in help_run.stdout:
                problems.append(f"service {name}: `hixbus {' '.join(path)}` has no {flag} option")
        for var in service.get("environment", {}):
            if var.startswith("HIXBUS_") and var not in ("HIXBUS_LOG", "HIXBUS_LOG_FORMAT"):
                if f"[env: {var}=" not in help_text:
                    problems.append(f"service {name}: `hixbus {' '.join(path)}` does not read {var}")
        checked += 1
    return checked


def check_variables(compose_text, env, problems):
    code = "\n".join(l for l in compose_text.splitlines() if not l.lstrip().startswith("#"))
    used = set(VARIABLE.findall(code))
    for var in sorted(used - env.keys()):
        problems.append(f"${{{var}}} is used but .env does not set it")
    for var in sorted(env.keys() - used - {k for k in env if k.startswith("HIXBUS_DEMO_KEY_")}):
        problems.append(f".env sets {var}, which nothing uses")


def check_principals(compose, root, hixbus, problems):
    plan = compose["services"]["kafka-plan"]["environment"]
    run = subprocess.run(
        [hixbus, "topics", "acls",
         "--organizations", host_path(root, plan["HIXBUS_ORGANIZATIONS"]),
         "--projects", host_path(root, plan["HIXBUS_PROJECTS"])],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        problems.append(f"hixbus topics acls failed: {run.stderr.strip()}")
        return 0
    principals = dict(re.findall(r'^scram (\S+) SCRAM-SHA-512 "\$\{(\w+):\?\}"$', run.stdout, re.M))
    granted = set(re.findall(r"^allow (\S+) ", run.stdout, re.M))
    for p in sorted(granted - principals.keys()):
        problems.append(f"the ACL script grants {p}, which it gives no credentials")
    acl_env = compose["services"]["kafka-acls"].get("environment", {})
    for p, var in principals.items():
        if acl_env.get(var) != f"${{{var}}}":
            problems.append(f"kafka-acls does not pass {var} (the password of principal {p})")
    for var in acl_env:
        if var.startswith("KAFKA_PASSWORD_") and var not in principals.values():
            problems.append(f"kafka-acls passes {var}, which is no principal's password")
    for name, service in hixbus_services(compose):
        if command_path(service)[:1] != ["serve"]:
            continue
        raw = service.get("environment", {}).get("HIXBUS_KAFKA_OPTIONS")
        if raw is None and f"hixbus-{command_path(service)[1]}" not in principals:
            # A service with no principal in the generated script talks to no broker (the
            # consoles): nothing to authenticate.
            if "HIXBUS_BOOTSTRAP_SERVERS" in service.get("environment", {}):
                problems.append(f"service {name}: names a broker but has no Kafka principal")
            continue
        if raw is None:
            problems.append(f"service {name}: no HIXBUS_KAFKA_OPTIONS: it would connect without SASL")
            continue
        options = tomllib.loads(f"options = {raw}")["options"]
        user = options.get("sasl.username")
        if options.get("security.protocol") not in ("SASL_PLAINTEXT", "SASL_SSL"):
            problems.append(f"service {name}: security.protocol is not SASL")
        if options.get("sasl.mechanism") != "SCRAM-SHA-512":
            problems.append(f"service {name}: sasl.mechanism is not SCRAM-SHA-512")
        if user not in principals:
            problems.append(f"service {name}: principal {user} is not in the ACL script")
        elif options.get("sasl.password") != f"${{{principals[user]}}}":
            problems.append(f"service {name}: the password is not {principals[user]}")
    return len(principals)


def check_files(compose, root, problems):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not os.path.exists(os.path.join(root, source)):
                problems.append(f"service {name} mounts {source}, which does not exist")
        for var, value in (service.get("environment") or {}).items():
            if isinstance(value, str) and value.startswith(INFRA_IN_CONTAINER):
                if not os.path.exists(host_path(root, value)):
                    problems.append(f"service {name}: {var}={value} is not in infra/")


def check_prometheus(compose, root, problems):
    with open(os.path.join(root, "infra/prometheus/prometheus.yml")) as f:
        prometheus = yaml.safe_load(f)
    scraped = {}
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = port
    for name, service in hixbus_services(compose):
        env = service.get("environment", {})
        listen = env.get("HIXBUS_LISTEN") or env.get("HIXBUS_REGISTRY_LISTEN")
        if not listen:
            continue
        port = listen.rsplit(":", 1)[1]
        if scraped.pop(name, None) != port:
            problems.append(f"Prometheus does not scrape {name}:{port}")
    for host, port in scraped.items():
        problems.append(f"Prometheus scrapes {host}:{port}, which is no hixbus service here")


def check_organizations(compose, root, env, problems):
    path = host_path(root, compose["services"]["schema-registry"]["environment"]["HIXBUS_REGISTRY_ORGANIZATIONS"])
    with open(path, "rb") as f:
        orgs = {o["id"]: o for o in tomllib.load(f)["organization"]}
    with open(os.path.join(root, "infra/organizations.demo.toml"), "rb") as f:
        demo = {o["id"]: o for o in tomllib.load(f)["organization"]}
    strip = lambda o: {k: v for k, v in o.items() if k != "api_key"}
    if {k: strip(v) for k, v in orgs.items()} != {k: strip(v) for k, v in demo.items()}:
        problems.append(f"{path} and infra/organizations.demo.toml list different organizations")
    keys = {"hixbus-operator": env.get("HIXBUS_OPERATOR_KEY")}
    for var, value in env.items():
        if var.startswith("HIXBUS_DEMO_KEY_"):
            org = var[len("HIXBUS_DEMO_KEY_"):].lower().replace("_", "-")
            keys[org] = value
    today = datetime.date.today()
    for org, key in keys.items():
        digest = hashlib.sha256((key or "").encode()).hexdigest()
        entries = [k for k in orgs.get(org, {}).get("api_key", []) if k["sha256"] == digest]
        if not entries:
            problems.append(f".env's key for {org} has no digest under {org} in {path}")
        elif entries[0]["expires_on"] <= today:
            problems.append(f".env's key for {org} expired on {entries[0]['expires_on']}")


def main():
    compose_path, schema_path, hixbus = sys.argv[1:4]
    root = os.path.dirname(os.path.abspath(compose_path))
    with open(compose_path) as f:
        compose_text = f.read()
    compose = yaml.safe_load(compose_text)
    with open(schema_path) as f:
        schema = json.load(f)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    for e in errors:
        print(f"{compose_path}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    if errors:
        sys.exit(1)

    env = read_env(os.path.join(root, ".env"))
    problems = []
    checked = check_commands(compose, hixbus, problems)
    check_variables(compose_text, env, problems)
    principals = check_principals(compose, root, hixbus, problems)
    check_files(compose, root, problems)
    check_prometheus(compose, root, problems)
    check_organizations(compose, root, env, problems)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(
        f"{compose_path}: valid Compose file; {checked} hixbus services use real commands and "
        f"variables; {principals} Kafka principals, each with credentials and ACLs; files, "
        "variables, scrape targets and keys agree"
    )


if __name__ == "__main__":
    main()
