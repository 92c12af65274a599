#!/usr/bin/env python3
"""Writes palisade-dashboard.json (Grafana 10+, import via Dashboards > New > Import).

The dashboard is generated so that every panel has the same shape; edit the PANELS table and run
`python3 examples/grafana/generate.py`. A test checks that every palisade_* metric the dashboard names
is one the gateway exports, and that the committed JSON is what this script writes.
"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "${datasource}"}

# (row title, [(panel title, unit, [(legend, expr)], kind)])
ROWS = [
    ("Traffic", [
        ("Requests/s by route", "reqps", [("{{route}}", 'sum by (route) (rate(palisade_requests_total{instance=~"$instance"}[$__rate_interval]))')], "timeseries"),
        ("Requests/s by status class", "reqps", [("{{status_class}}", 'sum by (status_class) (rate(palisade_requests_total{instance=~"$instance"}[$__rate_interval]))')], "timeseries"),
        ("Latency by route (p50, p99)", "s", [
            ("p50 {{route}}", 'histogram_quantile(0.5, sum by (le, route) (rate(palisade_request_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))'),
            ("p99 {{route}}", 'histogram_quantile(0.99, sum by (le, route) (rate(palisade_request_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))'),
        ], "timeseries"),
        ("Open connections", "short", [("{{instance}}", 'palisade_open_connections{instance=~"$instance"}')], "timeseries"),
    ]),
    ("Decisions", [
        ("Refusals/s by stage", "reqps", [("{{stage}}", 'sum by (stage) (rate(palisade_denials_total{instance=~"$instance"}[$__rate_interval]))')], "timeseries"),
        ("Top refusal reasons (1h)", "short", [("{{stage}} {{reason}}", 'topk(10, sum by (stage, reason) (increase(palisade_denials_total{instance=~"$instance"}[1h])))')], "bargauge"),
        ("Refused credentials/s by reason", "reqps", [("{{reason}}", 'sum by (reason) (rate(palisade_auth_decisions_total{outcome="refused",instance=~"$instance"}[$__rate_interval]))')], "timeseries"),
        ("Rate-limited/s by route", "reqps", [("{{route}}", 'sum by (route) (rate(palisade_rate_limit_decisions_total{outcome="limited",instance=~"$instance"}[$__rate_interval]))')], "timeseries"),
        ("Connections refused or cut/s", "short", [
            ("rejected {{reason}}", 'sum by (reason) (rate(palisade_connections_rejected_total{instance=~"$instance"}[$__rate_interval]))'),
            ("cut {{reason}}", 'sum by (reason) (rate(palisade_connections_cut_total{instance=~"$instance"}[$__rate_interval]))'),
            ("tls {{reason}}", 'sum by (reason) (rate(palisade_tls_handshake_failures_total{instance=~"$instance"}[$__rate_interval]))'),
        ], "timeseries"),
    ]),
    ("Alerts and responses", [
        ("Alerts open by detector", "short", [("{{detector}}", 'sum by (detector) (palisade_alerts_open{instance=~"$instance"})')], "timeseries"),
        ("Alerts opened (1h)", "short", [("{{detector}} {{severity}}", 'sum by (detector, severity) (increase(palisade_alerts_opened_total{instance=~"$instance"}[1h]))')], "bargauge"),
        ("Blocks and limits in force", "short", [("{{action}} ({{source}})", 'sum by (action, source) (palisade_responses_active{instance=~"$instance"})')], "timeseries"),
        ("Anomaly score by detector", "short", [("{{detector}}", 'max by (detector) (palisade_anomaly_score{instance=~"$instance"})')], "timeseries"),
    ]),
    ("Upstreams", [
        ("Healthy targets by cluster", "short", [("{{cluster}}", 'sum by (cluster) (palisade_upstream_healthy{instance=~"$instance"})')], "timeseries"),
        ("Ejections (1h)", "short", [("{{cluster}} {{target}}", 'sum by (cluster, target) (increase(palisade_upstream_ejections_total{instance=~"$instance"}[1h]))')], "bargauge"),
        ("Upstream latency p99 by cluster", "s", [("{{cluster}}", 'histogram_quantile(0.99, sum by (le, cluster) (rate(palisade_upstream_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))')], "timeseries"),
        ("Retries/s by cluster", "short", [("{{cluster}}", 'sum by (cluster) (rate(palisade_upstream_retries_total{instance=~"$instance"}[$__rate_interval]))')], "timeseries"),
    ]),
    ("Certificates and operations", [
        ("Workload certificate expiry", "s", [("{{instance}}", 'palisade_identity_expiry_seconds{instance=~"$instance"}')], "timeseries"),
        ("Configs alive and last reload", "short", [
            ("generations {{instance}}", 'palisade_config_generations{instance=~"$instance"}'),
            ("last reload ok {{instance}}", 'palisade_config_last_reload_ok{instance=~"$instance"}'),
        ], "timeseries"),
        ("Audit pipeline", "short", [
            ("written/s", 'sum(rate(palisade_audit_events_written_total{instance=~"$instance"}[$__rate_interval]))'),
            ("dropped/s", 'sum(rate(palisade_audit_events_dropped_total{instance=~"$instance"}[$__rate_interval]))'),
            ("queue depth", 'sum(palisade_audit_queue_depth{instance=~"$instance"})'),
        ], "timeseries"),
        ("Rate-limit store", "short", [
            ("up {{instance}}", 'palisade_rate_limit_store_up{instance=~"$instance"}'),
            ("fallbacks/s {{instance}}", 'rate(palisade_rate_limit_store_fallbacks_total{instance=~"$instance"}[$__rate_interval])'),
        ], "timeseries"),
    ]),
]


def panel(panel_id, title, unit, targets, kind, x, y):
    return {
        "id": panel_id,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 6, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {"orientation": "horizontal"},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard():
    panels, panel_id, y = [], 1, 0
    for row_title, row in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id += 1
        y += 1
        for i, (title, unit, targets, kind) in enumerate(row):
            panels.append(panel(panel_id, title, unit, targets, kind, (i % 4) * 6, y + (i // 4) * 8))
            panel_id += 1
        y += ((len(row) + 3) // 4) * 8
    return {
        "title": "Palisade",
        "uid": "palisade-overview",
        "tags": ["palisade", "security"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "instance", "type": "query", "datasource": DS, "label": "Instance",
             "query": {"query": "label_values(palisade_open_connections, instance)", "refId": "instance"},
             "definition": "label_values(palisade_open_connections, instance)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    out = pathlib.Path(__file__).with_name("palisade-dashboard.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
