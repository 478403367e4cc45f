"""The deployment files: alert rules, Prometheus config, compose files, Grafana dashboard.

Validated with the real tools (``promtool``, ``prometheus``, ``docker-compose``), which
``scripts/ensure_tools.sh`` installs (``scripts/test.sh`` runs it): a missing tool fails
these tests rather than skipping them. The metric names the rules and the dashboard use are
checked against a live daemon, and a real Prometheus server evaluates the rules against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from log_capturer.config.loader import load_config
from log_capturer.docker.endpoint import resolve_endpoint
from log_capturer_testkit import REPO, TEST_IMAGE, Daemon, Fleet, free_port, wait_for

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_OBS = REPO / "docker-compose.observability.yml"
DAEMON_CONFIG = DEPLOY / "log_capturer" / "config.yaml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "log_capturer.json"
EXCLUDE_LABEL = "io.log_capturer.exclude"

# Grafana's template variables, replaced to give plain PromQL.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not installed: run scripts/ensure_tools.sh (scripts/test.sh does)")
    return path


def run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr).strip()


def assert_promtool_lints_clean(metrics_text: str) -> None:
    """``promtool check metrics``: exit 0 and not a single warning."""
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=metrics_text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and output(result) == "", output(result)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        if panel.get("datasource", {}).get("type") != "prometheus":
            continue
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            exprs.append(expr)
    return exprs


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:log_capturer|process)_[a-z0-9_]+)", expr))


def exposed_families(metrics_text: str) -> set[str]:
    """Every name a query can use: each family, histogram series names included."""
    names = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", metrics_text, re.M):
        name, kind = match.groups()
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def compose_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_") and k != "DOCKER_GID"
    }
    env.update(extra)
    return env


# -- alert rules ---------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run([tool("promtool"), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, output(result)
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout, output(result)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = run([tool("promtool"), "test", "rules", ALERTS_TEST.name], cwd=PROM_DIR)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout, output(result)


def test_every_alert_is_labelled_annotated_and_tested_both_ways() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert name in firing, f"{name}: no promtool case where it fires"
        assert name in silent, f"{name}: no promtool case where it stays silent"
    expected = {
        "LogCapturerDown",
        "LogCapturerTargetMissing",
        "LogCapturerDiscoveryDown",
        "LogCapturerFileDescriptorGrowth",
        "LogCapturerThreadGrowth",
        "LogCapturerMemoryGrowth",
        "LogCapturerDockerPoolSaturated",
        "LogCapturerDockerPoolWaits",
        "LogCapturerDockerPoolWaitTimeouts",
        "LogCapturerSinkErrors",
        "LogCapturerDeadLetters",
        "LogCapturerSpoolFilling",
        "LogCapturerDeliveryLagHigh",
        "LogCapturerQueueNearlyFull",
    }
    assert expected <= set(names)


# -- Prometheus config ---------------------------------------------------------------------


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-swarm.yml"])
def test_promtool_check_config(tmp_path: Path, config: str) -> None:
    """The compose deployment's config and the Swarm one (dockerswarm_sd_configs; it runs
    against a live swarm in tests/integration/test_swarm.py)."""
    # a copy: promtool resolves rule_files beside the config and must not touch the repo
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, copy)
    result = run([tool("promtool"), "check", "config", config], cwd=copy)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout and "alerts.yml" in result.stdout, output(result)


def test_prometheus_scrapes_the_daemon_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROM_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "log_capturer"]
    interval = job.get("scrape_interval", config["global"]["scrape_interval"])
    assert 5 <= int(interval.rstrip("s")) <= 15
    assert job["static_configs"] == [{"targets": ["log_capturer:8001"]}]


# -- compose -------------------------------------------------------------------------------


def compose_config(*files: Path, **env: str) -> dict[str, Any]:
    cmd = [tool("docker-compose")]
    for f in files:
        cmd += ["-f", str(f)]
    check = run([*cmd, "config", "-q"], cwd=REPO, env=compose_env(**env))
    assert check.returncode == 0, output(check)
    assert output(check) == "", output(check)  # no warnings either
    full = run([*cmd, "config"], cwd=REPO, env=compose_env(**env))
    assert full.returncode == 0, output(full)
    return yaml.safe_load(full.stdout)  # type: ignore[no-any-return]


def test_compose_file_is_valid_and_deploys_the_daemon_as_intended() -> None:
    config = compose_config(COMPOSE, DOCKER_GID="4242")
    services = config["services"]
    assert {"log_capturer", "prometheus"} <= set(services)
    lc = services["log_capturer"]
    assert lc["image"] == "log-capturer:local"
    assert Path(lc["build"]["context"]) == REPO
    assert lc["restart"] == "unless-stopped"
    assert [str(g) for g in lc["group_add"]] == ["4242"]
    assert lc["mem_limit"] and float(lc["cpus"]) > 0
    volumes = lc["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in volumes
    assert f"{DAEMON_CONFIG}:/etc/log_capturer/config.yaml:ro" in volumes
    assert "log_capturer_data:/var/lib/log_capturer:rw" in volumes
    assert "log_capturer_data" in config["volumes"]
    assert any(str(p).endswith(":8001/tcp") or str(p).endswith(":8001") for p in lc["ports"])
    health = " ".join(lc["healthcheck"]["test"])
    assert "python3" in health and "/health" in health
    # the daemon's label is one its config excludes: it never captures itself
    excluded = load_config(DAEMON_CONFIG, environ={}).container_monitor.exclude_labels
    assert lc["labels"][EXCLUDE_LABEL] == excluded[EXCLUDE_LABEL]

    generators = [s for name, s in services.items() if name.startswith("log_generator")]
    assert generators
    for generator in generators:
        assert generator["image"] == TEST_IMAGE
        assert generator["logging"]["driver"] == "json-file"
        assert {"max-size", "max-file"} <= set(generator["logging"]["options"])

    prometheus = services["prometheus"]
    assert prometheus["image"] == "prom/prometheus"
    assert f"{PROM_DIR}:/etc/prometheus:ro" in prometheus["volumes"]

    # the images come from the environment
    other = compose_config(
        COMPOSE, GENERATOR_IMAGE="mirror/busybox:2", PROMETHEUS_IMAGE="mirror/prometheus:2"
    )
    assert other["services"]["log_generator"]["image"] == "mirror/busybox:2"
    assert other["services"]["prometheus"]["image"] == "mirror/prometheus:2"
    assert [str(g) for g in other["services"]["log_capturer"]["group_add"]] == ["999"]


def test_observability_override_is_valid_and_ships_to_loki() -> None:
    config = compose_config(COMPOSE, COMPOSE_OBS)
    services = config["services"]
    assert {"log_capturer", "prometheus", "loki", "grafana"} <= set(services)
    assert services["loki"]["labels"][EXCLUDE_LABEL] == "true"  # no feedback loop
    env = {k: str(v) for k, v in services["log_capturer"]["environment"].items()}
    loaded = load_config(DAEMON_CONFIG, environ=env)
    assert loaded.sinks.loki.enabled and loaded.sinks.loki.url == "http://loki:3100"
    assert loaded.sinks.loki.spool_dir.startswith("/var/lib/log_capturer/")
    # and through OTLP into the same Loki, its spool and dead letters in the volume too
    otlp = loaded.sinks.otlp
    assert otlp.enabled and otlp.endpoint == "http://loki:3100/otlp"
    assert otlp.spool_dir.startswith("/var/lib/log_capturer/")
    assert otlp.dead_letter_path.startswith("/var/lib/log_capturer/")
    assert otlp.resource_attributes == {"deployment.environment": "compose-otlp"}
    assert loaded.sinks.file.enabled
    grafana_volumes = services["grafana"]["volumes"]
    assert f"{GRAFANA / 'provisioning'}:/etc/grafana/provisioning:ro" in grafana_volumes
    assert f"{GRAFANA / 'dashboards'}:/etc/grafana/dashboards:ro" in grafana_volumes


def test_deploy_daemon_config() -> None:
    config = load_config(DAEMON_CONFIG, environ={})
    assert config.server.listen == "0.0.0.0:8001"
    assert config.positions.path.startswith("/var/lib/log_capturer/")
    assert config.sinks.file.enabled and config.sinks.file.path.startswith("/var/lib/log_capturer/")
    assert config.container_monitor.exclude_labels == {EXCLUDE_LABEL: "true"}
    assert resolve_endpoint(config.docker, environ={}).address == "unix:///var/run/docker.sock"
    assert "# loki:" in DAEMON_CONFIG.read_text()  # the commented example


@pytest.fixture
def compose_project(run_id: str) -> Iterator[tuple[list[str], str]]:
    project = f"lcdeploy{run_id}"
    cmd = [tool("docker-compose"), "-f", str(COMPOSE), "-p", project]
    yield cmd, project
    down = run([*cmd, "down", "-v", "--remove-orphans", "-t", "2"], cwd=REPO, env=compose_env())
    assert down.returncode == 0, output(down)


def test_compose_generators_run_with_rotated_numbered_logs(
    compose_project: tuple[list[str], str], docker_client: Any
) -> None:
    """docker-compose 1.29 drives this engine, and the example generators really log."""
    cmd, project = compose_project
    up = run(
        [*cmd, "up", "-d", "--no-build", "log_generator", "log_generator_tty"],
        cwd=REPO,
        env=compose_env(GENERATOR_INTERVAL="0.05"),
    )
    assert up.returncode == 0, output(up)

    def started() -> list[Any]:
        found = docker_client.containers.list(
            filters={"label": f"com.docker.compose.project={project}"}
        )
        return found if len(found) == 2 else []

    running = {c.labels["com.docker.compose.service"]: c for c in wait_for(started, 30)}

    def numbered(service: str, prefix: str, stream: dict[str, bool]) -> list[str]:
        text = running[service].logs(**stream).decode()
        return [line.strip() for line in text.splitlines() if line.startswith(prefix)]

    lines = wait_for(
        lambda: (
            len(numbered("log_generator", "generator line", {"stderr": False})) >= 20
            and numbered("log_generator", "generator line", {"stderr": False})
        ),
        30,
        what="generator lines",
    )
    assert lines[:20] == [f"generator line {i}" for i in range(1, 21)]
    errors = wait_for(
        lambda: numbered("log_generator", "generator error", {"stdout": False}),
        30,
        what="generator stderr",
    )
    assert errors[0] == "generator error 10"
    tty = wait_for(lambda: numbered("log_generator_tty", "tty line", {}), 30, what="tty lines")
    assert tty[0] == "tty line 1"
    for container in running.values():
        container.reload()
        log_config = container.attrs["HostConfig"]["LogConfig"]
        assert log_config["Type"] == "json-file"
        assert log_config["Config"]["max-size"] and log_config["Config"]["max-file"]
    assert running["log_generator_tty"].attrs["Config"]["Tty"] is True


def compose_records(container: Any) -> list[dict[str, Any]]:
    # Rotated files first (their names sort by time): on a busy host the sink rotates.
    script = "cd /var/lib/log_capturer && cat $(ls logs.jsonl.* 2>/dev/null | sort) logs.jsonl"
    result = container.exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    lines = result.output.decode().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n")]  # skip a partial one


@pytest.mark.timeout(900)  # a cold image build takes minutes
def test_compose_deployment_captures_the_generators_and_not_itself(
    compose_project: tuple[list[str], str],
    daemon_image: str,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    """docker-compose up of the daemon and the generators, as an operator runs it.

    The daemon captures only this project's containers (the project's own label, set as
    an operator would in an override file): on a shared engine, other containers' logs
    would rotate its file sink under the test's reads."""
    cmd, project = compose_project
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(
        'version: "2.4"\nservices:\n  log_capturer:\n    environment:\n'
        "      LOG_CAPTURER__CONTAINER_MONITOR__INCLUDE_LABELS: "
        f"'{{com.docker.compose.project: {project}}}'\n"
    )
    cmd = [*cmd[:3], "-f", str(override), *cmd[3:]]
    gid = os.stat("/var/run/docker.sock").st_gid
    port = free_port()
    env = compose_env(DOCKER_GID=str(gid), LOG_CAPTURER_PORT=str(port))
    up = run(
        [*cmd, "up", "-d", "--no-build", "log_capturer", "log_generator", "log_generator_tty"],
        cwd=REPO,
        env=env,
    )
    assert up.returncode == 0, output(up)
    (daemon,) = docker_client.containers.list(
        filters={
            "label": [
                f"com.docker.compose.project={project}",
                "com.docker.compose.service=log_capturer",
            ]
        }
    )
    host = daemon.attrs["HostConfig"]
    assert host["GroupAdd"] == [str(gid)]
    assert host["Memory"] > 0 and host["NanoCpus"] > 0 and host["PidsLimit"] > 0
    assert host["CapDrop"] == ["ALL"] and host["RestartPolicy"]["Name"] == "unless-stopped"
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in host["Binds"]
    assert daemon.attrs["Config"]["Labels"][EXCLUDE_LABEL] == "true"

    def healthy() -> bool:
        daemon.reload()
        assert daemon.status == "running", daemon.logs(tail=30).decode(errors="replace")
        return bool(daemon.attrs["State"]["Health"]["Status"] == "healthy")

    wait_for(healthy, 60, interval=1, what="the compose healthcheck")
    status = urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5).status
    assert status == 200
    generator = f"{project}_log_generator_1"
    tty = f"{project}_log_generator_tty_1"
    own = f"{project}_log_capturer_1"

    def mine() -> list[dict[str, Any]]:
        return [r for r in compose_records(daemon) if r["container_name"] in (generator, tty)]

    def check(records: list[dict[str, Any]], at_least: int) -> bool:
        lines = [
            r["message"]
            for r in records
            if r["container_name"] == generator and r["stream"] == "stdout"
        ]
        errors = [
            r["message"]
            for r in records
            if r["container_name"] == generator and r["stream"] == "stderr"
        ]
        ttys = [r["message"].strip() for r in records if r["container_name"] == tty]
        if len(lines) < at_least or not errors or not ttys:
            return False
        # every line exactly once, in order, from the first
        assert lines == [f"generator line {i}" for i in range(1, len(lines) + 1)]
        assert errors == [f"generator error {10 * i}" for i in range(1, len(errors) + 1)]
        assert ttys == [f"tty line {i}" for i in range(1, len(ttys) + 1)]
        return True

    wait_for(lambda: check(mine(), 30), 60, interval=1, what="the generators' lines")
    assert not [r for r in compose_records(daemon) if r["container_name"] == own]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    monitored = re.search(r"^log_capturer_containers_monitored (\S+)$", metrics, re.M)
    assert monitored and float(monitored.group(1)) >= 2, metrics  # + any others on the host

    # a restart resumes from the positions in the named volume: no line twice, none lost
    before = len(mine())
    stop = run([*cmd, "stop", "log_capturer"], cwd=REPO, env=env)
    assert stop.returncode == 0, output(stop)
    daemon.reload()
    assert daemon.attrs["State"]["ExitCode"] == 0, daemon.logs(tail=30).decode(errors="replace")
    start = run([*cmd, "start", "log_capturer"], cwd=REPO, env=env)
    assert start.returncode == 0, output(start)
    wait_for(
        lambda: len(mine()) > before + 20 and check(mine(), 0),
        60,
        interval=1,
        what="lines after the restart",
    )


# -- Grafana -------------------------------------------------------------------------------


def test_grafana_provisioning_and_dashboard(tmp_path: Path) -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    uids = {d["uid"]: d["type"] for d in datasources["datasources"]}
    assert uids == {"prometheus": "prometheus", "loki": "loki"}
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert uids.get(panel["datasource"]["uid"]) == panel["datasource"]["type"], panel["title"]
        assert panel["targets"], panel["title"]
    all_exprs = " ".join(dashboard_exprs())
    for needed in (
        "log_capturer_threads",
        "log_capturer_file_descriptors_open",
        "log_capturer_docker_pool_connections",
        "log_capturer_docker_pool_max_open",
        "log_capturer_docker_pool_waits_total",
        "log_capturer_docker_pool_reuse_ratio",
        "log_capturer_lines_captured_total",
        "log_capturer_sink_send_duration_seconds_bucket",
        "log_capturer_queue_records",
        "log_capturer_spool_bytes",
        "log_capturer_delivery_lag_seconds_bucket",
    ):
        assert needed in all_exprs, needed

    # every query is valid PromQL: promtool parses them as recording rules
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{n}", "expr": expr}
                    for n, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, output(result)


# -- against a live daemon -----------------------------------------------------------------


def test_live_metrics_pass_promtool_lint_and_cover_every_query(
    make_daemon: Callable[..., Daemon],
) -> None:
    # the harness daemon only captures containers labelled with this test's run id: none
    daemon = make_daemon().start()
    text = daemon.metrics_text()
    assert_promtool_lints_clean(text)

    exposed = exposed_families(text)
    referenced = set()
    for rule in alert_rules():
        referenced |= metric_names(rule["expr"])
    for expr in dashboard_exprs():
        referenced |= metric_names(expr)
    assert not referenced - exposed, f"queried but not exported: {sorted(referenced - exposed)}"
    assert daemon.stop() == 0


def test_live_metrics_with_traffic_pass_promtool_lint(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    """Once lines flow, labelled counters and histograms have samples: lint those too."""
    daemon = make_daemon().start()
    container = containers.run("seq 1 50; echo oops >&2")
    containers.wait_exit(container)
    wait_for(lambda: len(daemon.records()) >= 51, 30, what="the container's lines")
    text = daemon.metrics_text()
    assert "log_capturer_delivery_lag_seconds_bucket{" in text
    assert 'log_capturer_lines_captured_total{stream="stderr"}' in text
    assert_promtool_lints_clean(text)
    assert daemon.stop() == 0


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_prometheus_server_scrapes_the_daemon_and_evaluates_the_rules(
    make_daemon: Callable[..., Daemon],
) -> None:
    """A real Prometheus (Debian's, as promtool) with the deploy config pointed at a daemon."""
    daemon = make_daemon().start()
    work = Path(tempfile.mkdtemp(prefix="lc-prometheus-"))
    try:
        shutil.copy(ALERTS, work / "alerts.yml")
        config = yaml.safe_load(PROM_CONFIG.read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        for job in config["scrape_configs"]:
            if job["job_name"] == "log_capturer":
                job.update(
                    scrape_interval="1s",
                    scrape_timeout="1s",
                    static_configs=[{"targets": [f"127.0.0.1:{daemon.port}"]}],
                )
        config["scrape_configs"] = [
            j for j in config["scrape_configs"] if j["job_name"] == "log_capturer"
        ]
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(work / "prometheus.log", "wb")  # noqa: SIM115 - the child writes it
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        log.close()
        api = f"http://127.0.0.1:{port}/api/v1"
        try:

            def query(expr: str) -> list[Any]:
                url = f"{api}/query?" + urllib.parse.urlencode({"query": expr})
                try:
                    body = http_json(url)
                except urllib.error.HTTPError as exc:
                    raise AssertionError(f"{expr}: {exc.read().decode()}") from exc
                assert body["status"] == "success", (expr, body)
                return body["data"]["result"]  # type: ignore[no-any-return]

            def prometheus_log() -> str:
                return (work / "prometheus.log").read_text(errors="replace")[-3000:]

            def scraped() -> bool:
                assert proc.poll() is None, prometheus_log()
                try:
                    result = query('up{job="log_capturer"}')
                except (OSError, AssertionError):
                    return False
                return bool(result) and result[0]["value"][1] == "1"

            wait_for(scraped, 60, what="Prometheus scraping the daemon")
            targets = http_json(f"{api}/targets")["data"]["activeTargets"]
            assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]

            healthy = (
                "LogCapturerDown",
                "LogCapturerTargetMissing",
                "LogCapturerDiscoveryDown",
                "LogCapturerQueueNearlyFull",
                "LogCapturerDockerPoolSaturated",
            )

            def evaluated() -> dict[str, str]:
                """Rule states once every rule evaluated without error after the first scrape."""
                groups = http_json(f"{api}/rules")["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                if not rules or any(r["health"] != "ok" for r in rules):
                    return {}
                states = {r["name"]: r["state"] for r in rules}
                # rules evaluated before the first scrape saw no target (TargetMissing pending)
                return states if all(states[name] == "inactive" for name in healthy) else {}

            states = wait_for(evaluated, 30, what="every rule evaluated, the daemon healthy")
            assert set(states) == {rule["alert"] for rule in alert_rules()}
            assert "firing" not in states.values(), states

            for expr in dashboard_exprs():
                query(expr)  # valid against real data (no error)
            for expr in (
                "log_capturer_threads",
                "log_capturer_file_descriptors_open",
                'log_capturer_docker_pool_connections{state="in_use"}',
                "log_capturer_docker_pool_max_open",
                "log_capturer_queue_capacity_records",
                "log_capturer_discovery_up == 1",
            ):
                assert query(expr), f"{expr}: no data from the daemon"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert daemon.stop() == 0
