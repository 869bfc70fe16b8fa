"""Structure of grafana/docker-compose.yml and the configs it mounts (no Docker needed).

The main point: every path a service is configured to read (Promtail's tailed logs, each
service's config file, Grafana's provisioning and dashboards) is really mounted into that
container, and every mounted repo file exists. And the profiles: `aws` (what the EC2 host runs,
terraform/templates/grafana-user-data.sh.tftpl) starts Grafana alone, `local` all four.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest

from dashlib import GRAFANA_DIR

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (scripts/requirements/observability.txt)")

COMPOSE_FILE = GRAFANA_DIR / "docker-compose.yml"
DATASOURCES_DIR = GRAFANA_DIR / "provisioning" / "datasources"
REQUIRED_SERVICES = {"grafana", "prometheus", "loki", "promtail"}
# What each profile must start. On AWS the binaries are Lambdas reporting to CloudWatch: a
# Prometheus or Promtail there would have nothing to read.
PROFILES = {"aws": {"grafana"}, "local": REQUIRED_SERVICES}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, container path, read_only) of a service's volumes (short and long syntax)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target, ro = v.get("source", ""), v["target"], bool(v.get("read_only"))
        out.append((source, target, ro))
    return out


def is_bind(source: str) -> bool:
    return source.startswith(("./", "../", "/"))


def mount_for(service: dict, container_path: str):
    """The mount that makes container_path visible, or None (longest matching target wins)."""
    best = None
    p = PurePosixPath(container_path)
    for source, target, ro in mounts(service):
        t = PurePosixPath(target)
        if p == t or t in p.parents:
            if best is None or len(str(t)) > len(best[1]):
                best = (source, target, ro)
    return best


def repo_file_for(service: dict, container_path: str):
    """The repo file that is mounted at container_path (bind mount of ./...), or None."""
    m = mount_for(service, container_path)
    if m is None or not m[0].startswith("."):
        return None
    rel = PurePosixPath(container_path).relative_to(m[1])
    return (GRAFANA_DIR / m[0] / rel).resolve()


def flag(service: dict, name: str) -> str | None:
    cmd = service.get("command", [])
    if isinstance(cmd, str):
        cmd = cmd.split()
    for arg in cmd:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def mounted_config(services: dict, name: str, config_flag: str) -> tuple[str, dict]:
    """(path in the container, parsed YAML) of the config file service `name` is started with
    (its `config_flag` argument); that file must be mounted from a repo file."""
    svc = services[name]
    path = flag(svc, config_flag)
    assert path, f"{name} has no {config_flag}"
    repo_file = repo_file_for(svc, path)
    assert repo_file and repo_file.is_file(), f"{name} config {path} is not mounted from a repo file"
    return path, yaml.safe_load(repo_file.read_text())


def glob_base(path: str) -> str:
    """Directory part of a glob before the first wildcard: /var/log/*.log -> /var/log."""
    head = re.split(r"[*?\[{]", path, maxsplit=1)[0]
    return head.rstrip("/") if head.endswith("/") else str(PurePosixPath(head).parent)


def started(services: dict, profiles: set[str], named: tuple[str, ...] = ()) -> set[str]:
    """Services `docker compose --profile P... up [named...]` starts: those enabled by a profile
    (or without profiles), the named ones, and everything they depend on."""
    todo = [n for n, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])]
    todo += list(named)
    out: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo += list(services[name].get("depends_on") or [])
    return out


def datasources(path) -> list[dict]:
    return yaml.safe_load(path.read_text()).get("datasources", [])


def test_required_services(services):
    assert REQUIRED_SERVICES <= set(services), f"missing: {REQUIRED_SERVICES - set(services)}"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_starts_its_services(services, profile):
    assert started(services, {profile}) == PROFILES[profile]


def test_every_service_has_a_profile(services):
    # A service without one would start under every profile, the AWS host's included.
    assert not started(services, set()), "`docker compose up` without a profile should start nothing"
    for name, svc in services.items():
        assert set(svc.get("profiles", [])) <= set(PROFILES), f"{name}: unknown profile"


def test_dependencies_share_the_profiles_of_their_dependents(services):
    # Compose refuses (or, asked for a service by name, starts) a dependency whose profile is off:
    # either way `--profile aws` would not mean Grafana alone.
    for name, svc in services.items():
        for dep in svc.get("depends_on") or []:
            missing = set(svc.get("profiles", [])) - set(services[dep].get("profiles", []))
            assert not missing, f"{name} depends on {dep}, which is not in profile(s) {sorted(missing)}"
    assert started(services, {"aws"}, ("grafana",)) == {"grafana"}


def test_no_obsolete_version_key(compose):
    assert "version" not in compose


@pytest.mark.parametrize("name", sorted(REQUIRED_SERVICES))
def test_image_tag_pinned(services, name):
    image = services[name]["image"]
    assert ":" in image.rsplit("/", 1)[-1], f"{image} has no tag"
    tag = image.rsplit(":", 1)[1]
    assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact version"


@pytest.mark.parametrize("name", sorted(REQUIRED_SERVICES))
def test_bind_mounted_repo_paths_exist(services, name):
    for source, target, _ in mounts(services[name]):
        if source.startswith("."):
            assert (GRAFANA_DIR / source).exists(), f"{name}: {source} -> {target} does not exist"


@pytest.mark.parametrize("name", sorted(REQUIRED_SERVICES))
def test_named_volumes_declared(compose, services, name):
    declared = set(compose.get("volumes") or {})
    for source, target, _ in mounts(services[name]):
        if not is_bind(source):
            assert source in declared, f"{name}: volume {source} not declared"


# --- Promtail ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtail_config(services):
    return mounted_config(services, "promtail", "-config.file")[1]


def promtail_paths(cfg):
    for sc in cfg["scrape_configs"]:
        for static in sc.get("static_configs", []):
            if "__path__" in static.get("labels", {}):
                yield sc["job_name"], static["labels"]["__path__"]


def test_promtail_tails_mounted_host_paths(services, promtail_config):
    svc = services["promtail"]
    paths = list(promtail_paths(promtail_config))
    assert paths, "promtail tails nothing"
    for job, path in paths:
        base = glob_base(path)
        m = mount_for(svc, base)
        assert m is not None, f"promtail job {job}: {path} is not under any mount"
        source, target, ro = m
        assert source.startswith("/"), f"{job}: {path} must come from a host path, got {source}"
        # Same path on the host and in the container, so file names in labels are host paths.
        assert PurePosixPath(source) / PurePosixPath(base).relative_to(target) == PurePosixPath(base)
        assert ro, f"{job}: mount {source} should be read-only"


def test_promtail_tails_host_and_docker_logs(promtail_config):
    paths = dict(promtail_paths(promtail_config))
    assert any(p.startswith("/var/log/") for p in paths.values()), paths
    assert any(p.startswith("/var/lib/docker/containers/") and p.endswith("-json.log") for p in paths.values())


def test_promtail_positions_persist(services, promtail_config):
    positions = promtail_config["positions"]["filename"]
    m = mount_for(services["promtail"], str(PurePosixPath(positions).parent))
    assert m is not None and not is_bind(m[0]) and not m[2], "positions file must be on a writable volume"


def test_promtail_pushes_to_loki(services, promtail_config):
    _, loki_cfg = mounted_config(services, "loki", "-config.file")
    port = loki_cfg["server"]["http_listen_port"]
    urls = [c["url"] for c in promtail_config["clients"]]
    assert urls == [f"http://loki:{port}/loki/api/v1/push"]


# --- Loki -------------------------------------------------------------------------------------


def test_loki_config_mounted_and_storage_on_volume(services):
    svc = services["loki"]
    _, cfg = mounted_config(services, "loki", "-config.file")
    assert cfg["auth_enabled"] is False
    prefix = cfg["common"]["path_prefix"]
    m = mount_for(svc, prefix)
    assert m is not None and not is_bind(m[0]), f"loki path_prefix {prefix} is not on a named volume"
    for d in cfg["common"]["storage"]["filesystem"].values():
        assert mount_for(svc, d) == m, f"loki storage {d} outside the data volume"
    schema = cfg["schema_config"]["configs"][0]
    assert {"from", "store", "object_store", "schema", "index"} <= set(schema)
    assert schema["object_store"] == "filesystem"


# --- Prometheus -------------------------------------------------------------------------------


def test_prometheus_config_and_rules_mounted(services):
    svc = services["prometheus"]
    path, cfg = mounted_config(services, "prometheus", "--config.file")
    for rule in cfg.get("rule_files", []):
        container_rule = str(PurePosixPath(path).parent / rule)
        local = repo_file_for(svc, container_rule)
        assert local and local.is_file(), f"rule file {container_rule} is not mounted"
    storage = flag(svc, "--storage.tsdb.path")
    m = mount_for(svc, storage)
    assert m is not None and not is_bind(m[0]), "TSDB must be on a named volume"


def test_prometheus_scrapes_compose_services(services):
    _, cfg = mounted_config(services, "prometheus", "--config.file")
    jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]] for j in cfg["scrape_configs"]}
    assert jobs["prometheus"] == ["localhost:9090"]
    for name in ("grafana", "loki", "promtail"):
        hosts = {t.split(":")[0] for t in jobs[name]}
        assert hosts == {name}, f"job {name} should scrape the {name} service"
    assert {"producer", "consumer"} <= set(jobs), "keep the pipeline jobs for containerised runs"


# --- Grafana ----------------------------------------------------------------------------------


def test_grafana_provisioning_and_dashboards_mounted(services):
    svc = services["grafana"]
    prov = repo_file_for(svc, "/etc/grafana/provisioning")
    assert prov == (GRAFANA_DIR / "provisioning").resolve()
    providers = yaml.safe_load((prov / "dashboards" / "dashboards.yml").read_text())["providers"]
    for p in providers:
        dash_dir = repo_file_for(svc, p["options"]["path"])
        assert dash_dir == (GRAFANA_DIR / "dashboards").resolve(), p["options"]["path"]
    home = svc.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert repo_file_for(svc, home).is_file(), home
    m = mount_for(svc, "/var/lib/grafana")
    assert m is not None and not is_bind(m[0]), "Grafana state must be on a named volume"


def test_grafana_datasources_point_at_compose_services(services):
    ds = [d for f in sorted(DATASOURCES_DIR.glob("*.y*ml")) for d in datasources(f)]
    by_uid = {d["uid"]: d for d in ds}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["loki"]["url"] == "http://loki:3100"
    cw = by_uid["cloudwatch"]
    assert cw["jsonData"]["authType"] == "default", "use the AWS SDK default chain (instance role)"
    assert "secureJsonData" not in cw, "no static AWS keys"
    env = services["grafana"].get("environment", {})
    assert "AWS_REGION" in env, "defaultRegion: ${AWS_REGION} needs the variable in the container"


def test_datasources_of_local_only_services_are_in_their_own_file(services):
    """datasources.yml is what Grafana gets on AWS too: nothing in it may need a service the aws
    profile does not start. The Prometheus and Loki datasources are in a file of their own, which
    Terraform leaves off the host (terraform/tests/test_structure.py checks that side)."""
    aws = started(services, {"aws"})

    def compose_service(d):
        m = re.match(r"https?://([^:/]+)", str(d.get("url", "")))
        return m.group(1) if m and m.group(1) in services else None

    everywhere = datasources(DATASOURCES_DIR / "datasources.yml")
    assert {d["type"] for d in everywhere} == {"cloudwatch", "grafana-postgresql-datasource"}
    for d in everywhere:
        assert compose_service(d) in (None, *aws), f"{d['name']} needs a service the aws profile does not start"
    local_only = datasources(DATASOURCES_DIR / "prometheus-loki.yml")
    assert {d["uid"] for d in local_only} == {"prometheus", "loki"}
    for d in local_only:
        svc = compose_service(d)
        assert svc and svc not in aws, f"{d['name']} should point at a local-profile service, not {d.get('url')}"
    assert sorted(p.name for p in DATASOURCES_DIR.glob("*.y*ml")) == ["datasources.yml", "prometheus-loki.yml"]


def test_grafana_published_internal_services_loopback_only(services):
    assert any(str(p).endswith("3000:3000") for p in services["grafana"].get("ports", []))
    for name in ("prometheus", "loki", "promtail"):
        for p in services[name].get("ports", []):
            assert str(p).startswith("127.0.0.1:"), f"{name} publishes {p} on all interfaces"


def test_grafana_admin_password_not_hardcoded(services):
    env = services["grafana"].get("environment", {})
    pw = str(env.get("GF_SECURITY_ADMIN_PASSWORD", ""))
    assert pw.startswith("${"), "admin password must come from the environment"
