"""The whole path on the 3-node SASL_SSL cluster: every command given only the client
properties file that `streams broker start --security sasl_ssl` writes.

`streams topics create`, the worker, `streams produce-leads`, the simulated and the
Twilio dialers, `streams business set-limit/pause/resume`, `streams status`, `streams
top`'s snapshot and `streams lag` all reach the brokers over TLS with SCRAM, at
replication 3, and the limit holds. (Refusals, such as a wrong password or an untrusted
CA, are tested where the client settings are.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streams.devtools.cluster import Cluster
from streams.dialers.simulated import concurrency_from_ledger
from tests.support.deployment import Deployment, Dialer, WorkerProcess
from tests.support.fake_twilio import FakeTwilio
from tests.support.waiting import eventually


def secured_deployment(cluster: Cluster, workdir: Path) -> Deployment:
    """A deployment whose every command reads its connection from the cluster's client
    properties file: its bootstrap, TLS (the throwaway CA) and SCRAM user."""
    deployment = Deployment(
        cluster.bootstrap,
        workdir,
        KAFKA_CLIENT_CONFIG=str(cluster.client_properties_file),
    )
    for variable in ("KAFKA_SASL_PASSWORD", "KAFKA_SECURITY_PROTOCOL"):
        deployment.env.pop(variable, None)
    settings = deployment.settings
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism is not None
    assert settings.kafka_sasl_mechanism.startswith("SCRAM-")
    return deployment


def streams(
    deployment: Deployment, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**deployment.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, f"{run.args}: {run.stderr}{run.stdout}"
    return run.stdout


def create_topics(deployment: Deployment) -> None:
    """`streams topics create` over SASL_SSL, each topic with three replicas, two of
    them required in sync."""
    listed = ok(streams(deployment, "topics", "create")).splitlines()
    rows = [line for line in listed if "\treplication " in line]
    assert rows, listed
    for row in rows:
        assert "\treplication 3\t" in row and "\tmin.insync.replicas 2" in row, row


def leads_file(path: Path, leads: list[dict]) -> Path:
    path.write_text("".join(json.dumps(lead) + "\n" for lead in leads))
    return path


def view(worker: WorkerProcess, business_id: str) -> dict:
    found = {b["business_id"]: b for b in worker.businesses() or ()}
    return found.get(business_id, {})


def start_simulated_dialer(
    deployment: Deployment, ledger: Path, log: Path
) -> subprocess.Popen[bytes]:
    """`streams dialer --simulate` as users run it, the calls it places in ``ledger``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams",
                "dialer",
                "--simulate",
                "--ledger",
                str(ledger),
                "--talk-seconds",
                "0.3,0.8",
            ],
            env=deployment.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_worker_simulated_dialer_and_every_command_on_the_secured_cluster(
    kafka_cluster_sasl_ssl: Cluster, tmp_path: Path
) -> None:
    deployment = secured_deployment(kafka_cluster_sasl_ssl, tmp_path)
    create_topics(deployment)
    worker = deployment.start_worker()
    here = f"127.0.0.1:{worker.web_port}"
    on_worker = {"WORKER_WEB_PORT": str(worker.web_port)}
    ledger = tmp_path / "simulated.jsonl"
    dialer: subprocess.Popen[bytes] | None = None
    try:
        worker.wait_serving()
        # Business P paused with a limit of 1 before its leads come: they must wait.
        assert "paused" in ok(streams(deployment, "business", "pause", "P", env=on_worker))
        ok(streams(deployment, "business", "set-limit", "P", "1", env=on_worker))
        leads = [
            {"lead_id": f"P{n}", "business_id": "P", "phone": f"+1415555{n:04d}"}
            for n in range(4)
        ] + [
            {"lead_id": f"Q{n}", "business_id": "Q", "phone": f"+1415666{n:04d}"}
            for n in range(8)
        ]
        path = leads_file(tmp_path / "leads.jsonl", leads)
        sent = ok(streams(deployment, "produce-leads", "--file", str(path)))
        assert "sent 12 leads" in sent
        dialer = start_simulated_dialer(deployment, ledger, tmp_path / "dialer.log")

        q_leads = {lead["lead_id"] for lead in leads if lead["business_id"] == "Q"}
        q_done = deployment.read(
            "leads.outcomes", until=lambda recs: q_leads <= {r["lead_id"] for r in recs}
        )
        assert q_leads <= {r["lead_id"] for r in q_done}
        held = eventually(lambda: (v := view(worker, "P"))["waiting"] == 4 and v)
        assert held["paused"] and held["limit"] == 1 and held["active"] == []

        report = json.loads(ok(streams(deployment, "status", "--workers", here, "--json")))
        found = {b["business_id"]: b for b in report["businesses"]}
        assert (found["P"]["paused"], found["P"]["limit"], found["P"]["waiting"]) == (
            True,
            1,
            4,
        )
        lines = ok(streams(deployment, "top", "--workers", here)).splitlines()
        group = deployment.settings.topic_prefix + deployment.settings.app_id
        assert lines[2].startswith(f"lag {group}"), lines
        assert "unavailable" not in lines[2], lines[2]
        lag = json.loads(ok(streams(deployment, "lag", "--json", "--samples", "1")))
        statuses = {g["group"]: g["status"] for g in lag["groups"]}
        assert group in statuses and "ERR" not in statuses.values(), lag

        ok(streams(deployment, "business", "resume", "P", env=on_worker))
        outcomes = deployment.outcomes(leads, timeout=90)
        assert set(outcomes) == {lead["lead_id"] for lead in leads}
        peaks = concurrency_from_ledger(ledger)
        assert peaks["P"] == 1  # the limit set at runtime
        assert peaks["Q"] <= 3
    finally:
        if dialer is not None:
            dialer.terminate()
            dialer.wait(30)
        deployment.close()
    assert worker.process.returncode == 0, worker.log()


def test_the_twilio_dialer_on_the_secured_cluster(
    kafka_cluster_sasl_ssl: Cluster, tmp_path: Path
) -> None:
    deployment = secured_deployment(kafka_cluster_sasl_ssl, tmp_path)
    create_topics(deployment)
    worker = deployment.start_worker()
    leads = [
        {"lead_id": f"T{n}", "business_id": f"t{n % 2}", "phone": f"+1415777{n:04d}"}
        for n in range(8)
    ]
    with FakeTwilio(seed=3) as fake:
        dialer = Dialer(deployment, fake, f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            worker.wait_serving()
            dialer.start_process()
            assert dialer.health()[0] == 200, dialer.log()
            deployment.produce_leads(leads)
            outcomes = deployment.outcomes(leads, timeout=90)
            assert set(outcomes) == {lead["lead_id"] for lead in leads}
            assert fake.wait_idle(30)
            called = sorted(call["to"] for call in fake.calls())
            assert called == sorted(lead["phone"] for lead in leads)  # each once
        finally:
            dialer.stop()
            deployment.close()
