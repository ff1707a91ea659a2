"""`deploy/` checked offline: promtool over the alert rules and the Prometheus config
(Debian's `prometheus` package), the rules' own unit tests, the metric names the rules
and the dashboard use, the Compose file against the Compose specification's schema
(bundled with check-jsonschema), the Kubernetes manifests against Kubernetes' schemas
(bundled with kubernetes-validate), and the structure both need to work.

Nothing here starts a container or talks to a cluster: no Docker engine and no
Kubernetes are needed (deploy/README.md says what that leaves unchecked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from streams import metrics
from streams.settings import Settings, environment_variables

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
METRIC_NAME = re.compile(r"\bstreams_[A-Za-z0-9_:]+")
SETTINGS_VARIABLES = set(environment_variables())


Promtool = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def promtool() -> Promtool:
    """Runs promtool in deploy/prometheus and asserts it succeeded (a fixture, so that the
    tests needing the binary are marked `component`)."""
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS
        )
        assert result.returncode == 0, (
            f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
        )
        return result

    return run


def load_yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# -- Prometheus ------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules(promtool: Promtool) -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml").stdout


def test_promtool_accepts_the_prometheus_config_and_its_rule_files(
    promtool: Promtool,
) -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in result.stdout


def test_alert_rules_fire_on_lag_stall_stop_expiries_dead_letters_and_not_when_healthy(
    promtool: Promtool,
) -> None:
    """deploy/prometheus/alerts.test.yml: promtool's unit tests of the rules."""
    promtool("test", "rules", "alerts.test.yml")


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_metrics_module_defines_every_metric_ops_asked_for():
    names = metrics.exported_names()
    assert all(name.startswith("streams_") for name in names)
    assert {
        "streams_events_total",
        "streams_event_processing_seconds_bucket",
        "streams_dials_granted_total",
        "streams_outcomes_total",
        "streams_lease_expiries_total",
        "streams_dial_resends_total",
        "streams_dead_letters_total",
        "streams_active_calls",
        "streams_waiting_leads",
        "streams_business_active_calls",
        "streams_business_waiting_leads",
        "streams_oldest_waiting_seconds",
        "streams_consumer_lag_records",
        "streams_consumer_lag_seconds",
        "streams_twilio_errors_total",
        "streams_twilio_cps_throttled_total",
        "streams_webhook_signature_failures_total",
        "streams_dialer_calls_created_total",
    } <= names
    body, content_type = metrics.metrics_text()
    assert content_type.startswith("text/plain") and b"streams_dials_granted_total" in body


def test_rules_and_dashboard_use_only_metrics_we_export():
    exported = metrics.exported_names()
    used = {
        "deploy/prometheus/alerts.yml": {
            name
            for rule in alert_rules().values()
            for name in METRIC_NAME.findall(rule["expr"])
        },
        "deploy/grafana/dashboard.json": {
            name for expr in dashboard_exprs() for name in METRIC_NAME.findall(expr)
        },
        "deploy/prometheus/alerts.test.yml": set(
            METRIC_NAME.findall((PROMETHEUS / "alerts.test.yml").read_text())
        ),
    }
    for where, names in used.items():
        assert names, f"{where} uses no streams_* metric?"
        assert names <= exported, f"{where} uses metrics nobody exports: {names - exported}"


def test_the_alerts_ops_asked_for_exist():
    rules = alert_rules()
    by_metric = {
        name: [alert for alert, rule in rules.items() if name in rule["expr"]]
        for name in (
            "streams_consumer_lag_seconds",
            "streams_lease_expiries_total",
            "streams_dead_letters_total",
            "streams_twilio_errors_total",
        )
    }
    assert all(by_metric.values()), by_metric
    statuses = {rule.get("labels", {}).get("status") for rule in rules.values()}
    assert {"STALL", "STOP"} <= statuses
    for alert, rule in rules.items():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), alert
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], alert


def test_the_dashboard_has_the_panels_ops_asked_for():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in (
        "lag (records)",
        "lag (seconds)",
        "active calls",
        "waiting leads",
        "top businesses",
        "outcomes by status",
        "dials granted",
        "lease expiries",
        "dead letters",
        "twilio errors",
        "processing time",
    ):
        assert wanted in titles, wanted
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# -- Docker ----------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_the_compose_file_matches_the_compose_specification():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_runs_kafka_two_workers_the_dialer_and_prometheus():
    services = compose()["services"]
    for node in kafka_nodes(services).values():
        assert node["image"].startswith("apache/kafka:")
        assert "broker,controller" in node["environment"]["KAFKA_PROCESS_ROLES"]
    workers = {name: s for name, s in services.items() if s.get("command") == ["worker"]}
    assert len(workers) == 2, sorted(services)
    volumes = [s["volumes"][0].split(":")[0] for s in workers.values()]
    assert len(set(volumes)) == 2, "each worker needs its own state volume"
    for name, service in workers.items():
        assert service["stop_grace_period"] == "60s", name
        assert service["environment"]["STREAMS_DATA_DIR"].startswith(
            service["volumes"][0].split(":")[1]
        ), name
    assert "--simulate" in services["dialer"]["command"]
    streams_services = [s for s in services.values() if "build" in s]
    assert len(streams_services) >= 4  # topics, two workers, dialer
    for service in streams_services:
        assert (
            ROOT / "deploy" / service["build"]["context"] / service["build"]["dockerfile"]
        ).resolve() == DEPLOY / "Dockerfile"
        unknown = set(service.get("environment", {})) - SETTINGS_VARIABLES
        assert not unknown, f"not settings of ours: {unknown}"
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        target
        for job in scrape["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    ports = {name: s["environment"]["WORKER_WEB_PORT"] for name, s in workers.items()}
    assert {f"{name}:{port}" for name, port in ports.items()} <= targets


def kafka_nodes(services: dict) -> dict[str, dict]:
    return {
        name: service
        for name, service in services.items()
        if service.get("image", "").startswith("apache/kafka:")
    }


def broker_properties(node: dict) -> dict[str, str]:
    """The apache/kafka image's mapping of KAFKA_* variables to broker properties: "_" is
    ".", "__" is "_", "___" is "-"."""
    return {
        var[len("KAFKA_") :]
        .lower()
        .replace("___", "-")
        .replace("__", "\0")
        .replace("_", ".")
        .replace("\0", "_"): str(value)
        for var, value in node["environment"].items()
        if var.startswith("KAFKA_")
    }


def test_the_compose_kafka_is_three_kraft_nodes_replicating_every_partition_three_times():
    nodes = kafka_nodes(compose()["services"])
    assert len(nodes) == 3, sorted(nodes)
    properties = {name: broker_properties(node) for name, node in nodes.items()}
    ids = {props["node.id"] for props in properties.values()}
    assert ids == {"1", "2", "3"}
    cluster_ids = {node["environment"]["CLUSTER_ID"] for node in nodes.values()}
    assert len(cluster_ids) == 1, "three nodes of one cluster share its id"
    for name, props in properties.items():
        voters = dict(v.split("@") for v in props["controller.quorum.voters"].split(","))
        assert set(voters) == ids and all(
            host.split(":")[0] in nodes for host in voters.values()
        ), name
        assert props["default.replication.factor"] == "3", name
        assert props["min.insync.replicas"] == "2", name
        assert props["unclean.leader.election.enable"] == "false", name
        for internal in ("offsets.topic", "transaction.state.log"):
            assert props[f"{internal}.replication.factor"] == "3", (name, internal)
        assert props["transaction.state.log.min.isr"] == "2", name
        volume, mounted_at = nodes[name]["volumes"][0].split(":")
        assert mounted_at == props["log.dirs"], name
        assert volume == f"{name}-data", "each node keeps its own disk"


def interpolated(env: dict[str, str]) -> dict[str, str]:
    """Compose's ${VAR:-default} as on a host that sets none of those variables."""
    return {
        var: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for var, value in env.items()
    }


def compose_secret_files(document: dict) -> dict[str, str]:
    """Where Compose mounts each secret a service lists: /run/secrets/NAME."""
    return {name: f"/run/secrets/{name}" for name in document.get("secrets", {})}


def test_compose_services_log_in_to_kafka_with_a_password_from_a_compose_secret(
    tmp_path: Path,
):
    """Our services reach the brokers' SASL listener as a user the brokers define, at
    replication 3, with the password only in a mounted secret; and those settings are
    valid together (Settings.from_env, the file standing in for the mounted secret)."""
    document = compose()
    services = document["services"]
    nodes = kafka_nodes(services)
    node_props = broker_properties(next(iter(nodes.values())))
    protocols = dict(
        entry.split(":")
        for entry in node_props["listener.security.protocol.map"].split(",")
    )
    client_listeners = {n: p for n, p in protocols.items() if n != "CONTROLLER"}
    assert client_listeners and all(
        p.startswith("SASL_") for p in client_listeners.values()
    )
    mechanisms = node_props["sasl.enabled.mechanisms"].split(",")
    jaas = node_props["listener.name.internal.plain.sasl.jaas.config"]
    secret_files = compose_secret_files(document)
    streams_services = {name: s for name, s in services.items() if "build" in s}
    for name, service in streams_services.items():
        env = service["environment"]
        assert "KAFKA_SASL_PASSWORD" not in env, f"{name}: a password in the environment"
        assert env["TOPIC_REPLICATION_FACTOR"] == "3", name
        assert int(env["TOPIC_REPLICATION_FACTOR"]) <= len(nodes)
        bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"].split(",")
        assert {host.split(":")[0] for host in bootstrap} == set(nodes), name
        assert all(host.endswith(":29092") for host in bootstrap), name  # INTERNAL
        assert env["KAFKA_SECURITY_PROTOCOL"] == protocols["INTERNAL"], name
        assert env["KAFKA_SASL_MECHANISM"] in mechanisms, name
        assert f'user_{env["KAFKA_SASL_USERNAME"]}="' in jaas, name
        (secret,) = service["secrets"]
        assert env["KAFKA_SASL_PASSWORD_FILE"] == secret_files[secret], name
        assert set(nodes) <= set(service["depends_on"]), name
        password = tmp_path / "password"
        password.write_text("from-the-secret\n")
        settings = Settings.from_env(
            {**interpolated(env), "KAFKA_SASL_PASSWORD_FILE": str(password)}
        )
        assert settings.kafka_sasl_password == "from-the-secret"
        assert settings.topic_replication_factor == 3
    secret = document["secrets"]["kafka_sasl_password"]
    assert secret == {"environment": "KAFKA_SASL_PASSWORD"}
    assert "${KAFKA_SASL_PASSWORD:?" in jaas, "the brokers know the same password"


def test_the_dockerfile_builds_one_non_root_image_with_the_streams_entrypoint():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    assert '\nENTRYPOINT ["streams"]\n' in text


# -- Kubernetes ------------------------------------------------------------------------


def k8s_resources() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_documents(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_the_kubernetes_manifests_match_the_kubernetes_schemas():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    versions = {"1.28", kubernetes_validate.latest_version()}
    for resource in k8s_resources().values():
        for version in versions:
            kubernetes_validate.validate(resource, version, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def env_sources(container: dict) -> set[tuple[str, str]]:
    return {
        (kind, ref["name"])
        for source in container.get("envFrom", [])
        for kind, ref in source.items()
    }


def probe_path(container: dict, probe: str) -> str | None:
    return container.get(probe, {}).get("httpGet", {}).get("path")


def test_workers_are_a_statefulset_with_state_volume_probes_and_a_graceful_stop():
    resources = k8s_resources()
    config = resources[("ConfigMap", "streams-config")]["data"]
    assert set(config) <= SETTINGS_VARIABLES, set(config) - SETTINGS_VARIABLES
    workers = resources[("StatefulSet", "streams-worker")]
    spec, pod = workers["spec"], workers["spec"]["template"]["spec"]
    assert ("Service", spec["serviceName"]) in resources
    assert resources[("Service", spec["serviceName"])]["spec"]["clusterIP"] == "None"
    assert spec["replicas"] <= int(config["TOPIC_PARTITIONS"])
    assert pod["terminationGracePeriodSeconds"] >= 60
    (container,) = pod["containers"]
    assert container["args"] == ["worker"]
    assert ("configMapRef", "streams-config") in env_sources(container)
    (claim,) = spec["volumeClaimTemplates"]
    mount = next(
        m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]
    )
    assert config["STREAMS_DATA_DIR"].startswith(mount["mountPath"])
    assert config["TABLE_STORE"] == "rocksdb://"
    assert probe_path(container, "readinessProbe") == "/ready/"
    instance = next(e for e in container["env"] if e["name"] == "WORKER_INSTANCE_ID")
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # stable
    assert probe_path(container, "livenessProbe") == "/counters/"  # never 503 in recovery
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["web"] == int(config["WORKER_WEB_PORT"])
    annotations = workers["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == config["WORKER_WEB_PORT"]


def kafka_secret_mount(pod: dict, container: dict) -> tuple[str, dict[str, str]]:
    """Where the streams-kafka Secret is mounted, and its keys by file name."""
    volume = next(
        v
        for v in pod["volumes"]
        if v.get("secret", {}).get("secretName") == "streams-kafka"
    )
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount.get("readOnly") is True
    return mount["mountPath"], {i["path"]: i["key"] for i in volume["secret"]["items"]}


@pytest.mark.parametrize(
    "kind,name", [("StatefulSet", "streams-worker"), ("Deployment", "streams-dialer")]
)
def test_kubernetes_pods_reach_kafka_over_sasl_ssl_with_credentials_from_a_secret(
    kind: str, name: str, tmp_path: Path
):
    """Worker and dialer: SASL_SSL and SCRAM at replication 3 from the ConfigMap, the
    user from the Secret, the password and CA as files of the Secret's volume (never an
    environment value); valid together as Settings.from_env reads them in the pod."""
    resources = k8s_resources()
    config = resources[("ConfigMap", "streams-config")]["data"]
    secret = resources[("Secret", "streams-kafka")]["stringData"]
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"].startswith("SCRAM-")
    assert config["TOPIC_REPLICATION_FACTOR"] == "3"
    for variables in (config, *(r.get("stringData", {}) for r in resources.values())):
        assert "KAFKA_SASL_PASSWORD" not in variables
    pod = resources[(kind, name)]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    mount_path, keys = kafka_secret_mount(pod, container)
    files = {}
    for variable in ("KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CA_LOCATION"):
        directory, _, file_name = config[variable].rpartition("/")
        assert directory == mount_path, variable
        assert keys[file_name] in secret, variable
        files[variable] = secret[keys[file_name]]
    assert "BEGIN CERTIFICATE" in files["KAFKA_SSL_CA_LOCATION"]
    user = next(e for e in container["env"] if e["name"] == "KAFKA_SASL_USERNAME")
    reference = user["valueFrom"]["secretKeyRef"]
    assert reference["name"] == "streams-kafka" and reference["key"] in secret
    env = {**config, "KAFKA_SASL_USERNAME": secret[reference["key"]]}
    for variable, content in files.items():
        local = tmp_path / variable
        local.write_text(content)
        env[variable] = str(local)
    settings = Settings.from_env(env)
    assert settings.kafka_sasl_password == secret["password"]
    assert settings.kafka_sasl_username == secret["username"]
    assert settings.topic_replication_factor == 3


def test_the_dialer_is_a_deployment_behind_its_webhook_service():
    resources = k8s_resources()
    config = resources[("ConfigMap", "streams-config")]["data"]
    secret = resources[("Secret", "streams-twilio")]["stringData"]
    assert {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"} <= set(secret) <= SETTINGS_VARIABLES
    dialer = resources[("Deployment", "streams-dialer")]
    (container,) = dialer["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["dialer"]
    assert env_sources(container) == {
        ("configMapRef", "streams-config"),
        ("secretRef", "streams-twilio"),
    }
    assert probe_path(container, "readinessProbe") == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["web"] == int(config["DIALER_WEB_PORT"])
    service = resources[("Service", "streams-dialer")]
    labels = dialer["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "web"
