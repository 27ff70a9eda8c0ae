"""Renders and lints the drakkar chart with the Helm v4 SDK (pip install helm-python-sdk).

Usage: python render.py CHART_DIR < request.json > result.json

request: {"values": {...}, "name": "release", "namespace": "ns"}
result:  {"helm": "<sdk version>", "lint": <helm lint report>, "schema_error": null | "<message>",
          "manifests": {"<template path>": "<rendered YAML>"}, "render_error": null | "<message>"}

Called by operator/tests/chart.rs, which parses and checks the rendered objects.
"""

import json
import sys

import helm_python as helm


def main() -> None:
    chart_dir = sys.argv[1]
    request = json.load(sys.stdin)
    values = request.get("values") or {}
    chart = helm.Chart.load(chart_dir)
    result = {
        "helm": helm.helm_sdk_version(),
        "lint": helm.lint(chart_dir, values, strict=True, namespace=request["namespace"]),
        "schema_error": None,
        "manifests": {},
        "render_error": None,
    }
    try:
        chart.validate_schema(values)
    except helm.HelmError as e:
        result["schema_error"] = str(e)
    try:
        result["manifests"] = chart.render(
            values, name=request["name"], namespace=request["namespace"], is_install=True
        )
    except helm.HelmError as e:
        result["render_error"] = str(e)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
