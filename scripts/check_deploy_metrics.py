#!/usr/bin/env python3
"""Checks the operations kit (deploy/) against callgate's real metrics.

Called by scripts/check-deploy.sh; runs from the repository root.

    check_deploy_metrics.py inventory                 the registered metrics, by type
    check_deploy_metrics.py check [--live FILE]       every callgate_* name in the
        dashboard and the alert rules is registered in the sources (a
        histogram's _bucket/_sum/_count included), counters are only read
        through rate()/irate()/increase(), gauges never are, and
        histogram_quantile() reads _bucket series; with --live, a /metrics
        text of a running server: the names it always shows are there, with
        the types the sources give them
    check_deploy_metrics.py dashboard                 the Grafana JSON's structure
    check_deploy_metrics.py promql-rules OUT          the dashboard's queries as a
        Prometheus rules file (Grafana variables replaced) for promtool
    check_deploy_metrics.py compose-env [VAR=VALUE…] [ENV_FILE]  the callgate
        service's environment from docker-compose.yml, ${…} resolved from
        the arguments (VAR=VALUE before the file's lines), as NAME=VALUE lines
    check_deploy_metrics.py doc-blocks                docs/deploying.md shows the
        nginx and Caddy files of deploy/ as they are

Exits 1 with a message per problem.
"""

import json
import os
import re
import sys

# Other files can be checked in their place (the script's self-test does).
DASHBOARD = os.environ.get("CHECK_DEPLOY_DASHBOARD", "deploy/grafana/callgate.json")
ALERTS = os.environ.get("CHECK_DEPLOY_ALERTS", "deploy/prometheus/alerts.yml")
COMPOSE = "docker-compose.yml"

# Crates whose sources register metrics (tests, benches, fuzz targets and
# the load generator, which only reads /metrics, are left out).
SOURCE_DIRS = [
    "src",
    "admission/src",
    "calls/src",
    "sfu/src",
    "signaling/src",
    "metering/src",
    "turn-relay/src",
    "udp-batch/src",
]
EXCLUDED = ("src/loadtest/",)

# Vectors created without any label value: they are absent from /metrics
# until something increments or sets them (their sources say so).
SHOWN_ONCE_USED = {
    "callgate_turn_dropped_packets_total",  # TurnMetrics::dropped
    "callgate_turn_stream_connections",  # a TCP/TLS client connected
    "callgate_calls_ended_total",  # a call ended
    "callgate_call_rings_total",  # a callee rung
}

HIST_SUFFIXES = ("_bucket", "_sum", "_count")
NAME = re.compile(r"\bcallgate_[A-Za-z0-9_]+")
CONSTRUCTOR = re.compile(
    r"(IntCounterVec|IntCounter|CounterVec|Counter|IntGaugeVec|IntGauge|GaugeVec|Gauge"
    r"|HistogramOpts|HistogramVec|Histogram|\bgauge\(|\bcounter\()"
)


def fail(problems):
    for p in problems:
        print(f"  FAIL: {p}", file=sys.stderr)
    sys.exit(1)


def registered():
    """name -> type ("counter", "gauge", "histogram") of every metric the
    sources construct: a "callgate_…" literal with a prometheus constructor
    before it in the same statement."""
    found = {}
    for d in SOURCE_DIRS:
        for dirpath, _, files in os.walk(d):
            for f in files:
                path = os.path.join(dirpath, f)
                if not f.endswith(".rs") or path.startswith(EXCLUDED):
                    continue
                text = open(path, encoding="utf-8").read()
                for m in re.finditer(r'"(callgate_[a-z0-9_]+)"', text):
                    before = text[max(0, m.start() - 300) : m.start()]
                    # Stay within the statement the literal is in.
                    before = before[before.rfind(";") + 1 :]
                    ctors = CONSTRUCTOR.findall(before)
                    if not ctors:
                        continue
                    c = ctors[-1].lower()
                    kind = (
                        "histogram"
                        if "histogram" in c
                        else "counter"
                        if "counter" in c
                        else "gauge"
                    )
                    name = m.group(1)
                    if found.get(name, kind) != kind:
                        fail([f"{name} is constructed as {found[name]} and as {kind}"])
                    found[name] = kind
    if not found:
        fail(["no metric found in the sources: run from the repository root"])
    return found


def base_of(name, metrics):
    """The registered metric a series name belongs to, or None."""
    if name in metrics:
        return name
    for s in HIST_SUFFIXES:
        if name.endswith(s) and metrics.get(name[: -len(s)]) == "histogram":
            return name[: -len(s)]
    return None


def dashboard_exprs():
    d = json.load(open(DASHBOARD, encoding="utf-8"))
    out = []
    for p in panels(d):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"{DASHBOARD} panel {p.get('title')!r}", t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            out.append((f"{DASHBOARD} variable {v.get('name')}", q))
    return out


def alert_exprs():
    import yaml

    doc = yaml.safe_load(open(ALERTS, encoding="utf-8"))
    out = []
    for g in doc["groups"]:
        for r in g["rules"]:
            out.append((f"{ALERTS} {r.get('alert') or r.get('record')}", str(r["expr"])))
    return out


def panels(d):
    for p in d.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:
            yield q


def check_promql(where, expr, metrics, problems):
    # label_values(metric, label) in a variable reads a metric directly.
    for m in NAME.finditer(expr):
        name = m.group(0)
        base = base_of(name, metrics)
        if base is None:
            continue  # reported by the name check
        kind = metrics[base]
        prefix = expr[: m.start()]
        in_rate = re.search(r"\b(rate|irate|increase)\(\s*$", prefix) is not None
        in_label_values = re.search(r"label_values\(\s*$", prefix) is not None
        if kind == "counter" and not (in_rate or in_label_values):
            problems.append(f"{where}: counter {name} read without rate()/increase(): {expr}")
        if kind == "gauge" and in_rate:
            problems.append(f"{where}: gauge {name} inside rate()/increase(): {expr}")
        if kind == "histogram":
            if name == base:
                problems.append(f"{where}: histogram {name} has no series of that name (use _bucket/_sum/_count)")
            elif not (in_rate or in_label_values):
                problems.append(f"{where}: histogram series {name} read without rate()/increase(): {expr}")
    if "histogram_quantile" in expr and "_bucket" not in expr:
        problems.append(f"{where}: histogram_quantile() over no _bucket series: {expr}")


def parse_live(path):
    types = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            types[name] = kind
    return types


def cmd_inventory():
    metrics = registered()
    for name in sorted(metrics):
        print(f"{metrics[name]:9} {name}")


def cmd_check(args):
    metrics = registered()
    problems = []
    used = {}
    for path in (DASHBOARD, ALERTS):
        text = open(path, encoding="utf-8").read()
        for m in NAME.finditer(text):
            used.setdefault(m.group(0), set()).add(path)
    for name, where in sorted(used.items()):
        if base_of(name, metrics) is None:
            problems.append(
                f"{name} (in {', '.join(sorted(where))}) is not a metric callgate registers"
            )
    exprs = dashboard_exprs() + alert_exprs()
    for where, expr in exprs:
        check_promql(where, expr, metrics, problems)
    bases = {base_of(n, metrics) for n in used} - {None}
    if not problems:
        print(
            f"  {len(used)} callgate_* names in {DASHBOARD} and {ALERTS}: "
            f"{len(bases)} of the {len(metrics)} metrics registered in the sources; "
            f"{len(exprs)} queries read counters through rate()/increase()"
        )
    unused = sorted(set(metrics) - bases)
    if unused:
        print(f"  registered but on no panel or alert: {', '.join(unused)}")
    if "--live" in args:
        live = parse_live(args[args.index("--live") + 1])
        for name in sorted(bases):
            if name not in live:
                if name in SHOWN_ONCE_USED:
                    continue
                problems.append(f"{name} is registered in the sources but not on the live /metrics")
            elif live[name] != metrics[name]:
                problems.append(f"{name} is a {live[name]} on /metrics but a {metrics[name]} in the sources")
        newer = sorted(n for n in live if n.startswith("callgate_") and n not in metrics)
        if newer:
            print(
                "  note: the binary exports metrics these sources do not register "
                f"(a binary newer than this tree?): {', '.join(newer)}"
            )
        if not problems:
            print(
                f"  live /metrics: {len([n for n in live if n.startswith('callgate_')])} callgate_* "
                "metrics, with the types the sources give them; every one the kit uses is there "
                f"but {', '.join(sorted(SHOWN_ONCE_USED & bases))}, which appear once first used"
            )
    if problems:
        fail(problems)


def cmd_dashboard():
    problems = []
    try:
        d = json.load(open(DASHBOARD, encoding="utf-8"))
    except ValueError as e:
        fail([f"{DASHBOARD}: not JSON: {e}"])
    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        if key not in d:
            problems.append(f"{DASHBOARD}: no {key!r}")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{DASHBOARD}: no datasource variable of type prometheus")
    if "instance" not in variables:
        problems.append(f"{DASHBOARD}: no instance (node) variable")
    ids = set()
    count = 0
    for p in panels(d):
        pid, title, kind = p.get("id"), p.get("title"), p.get("type")
        if pid in ids:
            problems.append(f"{DASHBOARD}: panel id {pid} twice")
        ids.add(pid)
        if "gridPos" not in p:
            problems.append(f"{DASHBOARD}: panel {title!r} has no gridPos")
        if kind in ("row", "text"):
            continue
        count += 1
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{DASHBOARD}: panel {title!r} does not use the datasource variable")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{DASHBOARD}: panel {title!r} has no targets")
        refs = set()
        for t in targets:
            if not t.get("expr") or not t.get("refId"):
                problems.append(f"{DASHBOARD}: panel {title!r} has a target without expr or refId")
            if t.get("refId") in refs:
                problems.append(f"{DASHBOARD}: panel {title!r} repeats refId {t.get('refId')}")
            refs.add(t.get("refId"))
            if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                problems.append(f"{DASHBOARD}: a target of {title!r} names another datasource")
            if "instance=~\"$instance\"" not in t.get("expr", ""):
                problems.append(f"{DASHBOARD}: a target of {title!r} ignores the node variable")
    if problems:
        fail(problems)
    print(f"  {DASHBOARD}: {count} panels with queries, datasource and node variables")


def grafana_to_promql(expr):
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
        .replace("$job", "callgate")
        .replace("$worker", ".*")
    )


def cmd_promql_rules(out):
    rules = []
    for i, (where, expr) in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        rules.append({"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)})
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
    print(f"  {len(rules)} dashboard queries written to {out}")


def cmd_compose_env(args):
    import yaml

    given = {}
    for a in args:
        if "=" in a:
            k, v = a.split("=", 1)
            given[k] = v
        else:  # an env file: NAME=VALUE lines, # comments
            for line in open(a, encoding="utf-8"):
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    given.setdefault(k, v)
    doc = yaml.safe_load(open(COMPOSE, encoding="utf-8"))
    env = doc["services"]["callgate"]["environment"]
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)

    def resolve(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in given and given[name] != "":
            return given[name]
        if op == ":-":
            return arg
        if op == ":?":
            fail([f"{COMPOSE}: {name} is required: {arg}"])
        return ""

    for k, v in env.items():
        v = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", resolve, str(v))
        print(f"{k}={v}")


def fenced_blocks(text, lang):
    return re.findall(r"```" + lang + r"\n(.*?)```", text, flags=re.S)


def cmd_doc_blocks():
    doc = open("docs/deploying.md", encoding="utf-8").read()
    problems = []
    for lang, path in (("nginx", "deploy/nginx/callgate.conf"), ("caddyfile", "deploy/caddy/Caddyfile")):
        want = open(path, encoding="utf-8").read()
        if want not in fenced_blocks(doc, lang):
            problems.append(f"docs/deploying.md has no ```{lang} block equal to {path}")
    if problems:
        fail(problems)
    print("  docs/deploying.md shows deploy/nginx/callgate.conf and deploy/caddy/Caddyfile as they are")


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        sys.exit(2)
    cmd, rest = args[0], args[1:]
    if cmd == "inventory":
        cmd_inventory()
    elif cmd == "check":
        cmd_check(rest)
    elif cmd == "dashboard":
        cmd_dashboard()
    elif cmd == "promql-rules":
        cmd_promql_rules(rest[0])
    elif cmd == "compose-env":
        cmd_compose_env(rest)
    elif cmd == "doc-blocks":
        cmd_doc_blocks()
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
