"""docs/observability: the alert rules pass promtool and their unit tests, Alertmanager's
config passes amtool, and the rules, the dashboard and the runbooks agree with the metrics
Empath exports and with each other.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages,
which ``scripts/bootstrap --test`` installs: without them these tests fail, they do not skip.
"""

import json
import re
import shutil
import subprocess

import pytest
from support import ROOT

OBS = ROOT / "docs" / "observability"
RULES = OBS / "prometheus-alerts.yml"
RULE_TESTS = OBS / "tests" / "alerts_test.yml"
ALERTMANAGER = OBS / "alertmanager.yml"
DASHBOARD = OBS / "grafana-dashboard.json"
RUNBOOKS = OBS / "RUNBOOKS.md"

# What the daemon exports (docs/observability/metrics.md), and prometheus-client's process collector.
METRICS = {
    "empath_smtp_connections_open",
    "empath_smtp_connections_total",
    "empath_smtp_commands_rejected_total",
    "empath_smtp_messages_received_total",
    "empath_smtp_received_bytes_total",
    "empath_smtp_tls_handshakes_total",
    "empath_smtp_auth_total",
    "empath_smtp_recipient_verifications_total",
    "empath_queue_recipients",
    "empath_queue_oldest_message_age_seconds",
    "empath_queue_messages_in_total",
    "empath_queue_messages_out_total",
    "empath_queue_database_bytes",
    "empath_queue_wal_bytes",
    "empath_data_dir_free_bytes",
    "empath_delivery_attempts_total",
    "empath_dns_lookups_total",
    "empath_dns_cache_hits_total",
    "empath_dns_cache_misses_total",
    "empath_dns_failures_total",
    "empath_delivery_rate_limited_total",
    "empath_delivery_rate_limit_delay_seconds_total",
    "empath_delivery_breaker_open",
    "empath_delivery_connection_reuse_total",
    "empath_delivery_tls_total",
    "empath_greenlets",
    "empath_tls_certificate_expiry_timestamp_seconds",
    "empath_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "up",  # Prometheus' own, per target
}
HISTOGRAMS = {"empath_delivery_time_in_queue_seconds", "empath_delivery_latency_seconds"}
EXPORTED = METRICS | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}

PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_KEYWORDS |= {"offset", "bool", "inf", "nan"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run scripts/bootstrap --test, which installs it "
            "(Debian packages prometheus and prometheus-alertmanager)",
            pytrace=False,
        )
    return path


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, cwd=OBS, timeout=60)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    return result.stdout


def rule_exprs(text: str) -> list[str]:
    """The ``expr:`` of every rule, block scalars included (no YAML library needed)."""
    exprs = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest in ("|", "|-", ">", ">-"):
            block = []
            for following in lines[number + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following)
            exprs.append("\n".join(block))
        else:
            exprs.append(rest)
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges, subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(?![\w:])(\s*\()?", expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def alerts() -> dict[str, str]:
    """Alert name -> the text of its rule."""
    text = RULES.read_text()
    blocks = re.split(r"(?m)^\s*- (?=alert:|record:)", text)
    return {m.group(1): block for block in blocks if (m := re.match(r"alert:\s*(\S+)", block))}


def recording_rules() -> set[str]:
    return set(re.findall(r"(?m)^\s*- record:\s*(\S+)", RULES.read_text()))


def dashboard_exprs() -> list[str]:
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", []) if t.get("expr")]


def test_promtool_checks_the_rules():
    out = run(tool("promtool"), "check", "rules", str(RULES))
    assert "SUCCESS" in out


def test_alert_unit_tests_pass():
    out = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out


def test_every_alert_is_unit_tested():
    tested = set(re.findall(r"(?m)^\s*alertname:\s*(\S+)", RULE_TESTS.read_text()))
    assert set(alerts()) - tested == set()


def test_alerts_cover_both_severities_and_carry_their_annotations():
    rules = alerts()
    assert len(rules) >= 12
    severities = {}
    for name, block in rules.items():
        m = re.search(r"severity:\s*(\S+)", block)
        assert m, f"{name} has no severity"
        severities[name] = m.group(1)
        for annotation in ("summary", "description", "runbook_url"):
            assert re.search(rf"(?m)^\s*{annotation}:", block), f"{name} has no {annotation}"
        url = re.search(r"runbook_url:\s*\"?([^\"\s]+)", block).group(1)
        assert url.endswith("RUNBOOKS.md#" + name.lower()), f"{name}: runbook_url {url}"
    assert set(severities.values()) == {"critical", "warning"}


def test_every_alert_has_a_runbook_section():
    sections = set(re.findall(r"(?m)^## (\S+)\s*$", RUNBOOKS.read_text()))
    assert set(alerts()) - sections == set()


def test_rules_use_only_exported_metrics():
    known = EXPORTED | recording_rules()
    used = set().union(*(metric_names(e) for e in rule_exprs(RULES.read_text())))
    assert used - known == set()
    assert "empath_delivery_attempts_total" in used  # the extraction found something


def test_the_metrics_named_here_are_the_documented_ones():
    # docs/observability/metrics.md documents what the daemon exports: a rename there must reach the rules.
    documented = (OBS / "metrics.md").read_text()
    ours = {m for m in METRICS | HISTOGRAMS if m.startswith("empath_")}
    assert {m for m in ours if not re.search(rf"`{m}[`{{]", documented)} == set()


def test_dashboard_uses_only_exported_metrics_and_parses():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - (EXPORTED | recording_rules()) == set()
    titles = " ".join(p["title"] for p in dashboard["panels"] if p["type"] == "row").lower()
    for part in ("queue", "delivery", "smtp", "capacity"):
        assert part in titles


def test_dashboard_queries_are_valid_promql(tmp_path):
    # promtool has no query parser of its own: check the expressions as recording rules.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        lines += [f"      - record: dashboard:query{number}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(lines) + "\n")
    run(tool("promtool"), "check", "rules", str(path))


def test_amtool_checks_the_config_and_its_template():
    out = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert "1 templates" in out
    run(
        tool("amtool"),
        "template",
        "render",
        "--template.glob=" + str(OBS / "alertmanager-templates.tmpl"),
        '--template.text={{ template "empath.subject" . }}{{ template "empath.text" . }}',
    )


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=EmpathDown"], "empath-critical"),
        (["severity=warning", "alertname=EmpathQueueBacklogHigh"], "empath-warning"),
    ],
)
def test_alerts_are_routed_by_severity(labels, receiver):
    out = run(tool("amtool"), "config", "routes", "test", "--config.file=" + str(ALERTMANAGER), *labels)
    assert out.split() == [receiver]
