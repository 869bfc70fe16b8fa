"""scripts/package.sh (`make package`): its decisions, without building anything.

Each test runs a copy of the script in a throwaway "repository" (tmp/scripts/), so its ROOT, its
venv and its CA-bundle cache are the temporary ones, with stub `rustup` / `npm` commands first on
PATH. Only --print-arch and --print-ca-bundle are used: they stop before cargo-lambda.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1]
REPO_ROOT = SCRIPTS.parent
ARM = "aarch64-unknown-linux-gnu"
X86 = "x86_64-unknown-linux-gnu"


def write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    for name in ("package.sh", "lib.sh"):
        shutil.copy2(SCRIPTS / name, tmp_path / "scripts" / name)
    (tmp_path / "bin").mkdir()
    return tmp_path


def run(repo: Path, *args: str, targets: list[str] | None = None, npm: str | None = None, **env: str):
    """package.sh ARGS with a stub rustup listing TARGETS and, if given, a stub npm."""
    bin_dir = repo / "bin"
    if targets is not None:
        write_exe(bin_dir / "rustup", "#!/bin/sh\nprintf '%s\\n' " + " ".join(targets) + "\n")
    if npm is not None:
        write_exe(bin_dir / "npm", npm)
    full_env = {k: v for k, v in os.environ.items() if k not in ("ARCH", "RDS_CA_BUNDLE")}
    full_env.update(env, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return subprocess.run(
        ["bash", str(repo / "scripts" / "package.sh"), *args],
        cwd=repo, env=full_env, capture_output=True, text=True, timeout=60,
    )


# --- ARCH ---------------------------------------------------------------------------


@pytest.mark.parametrize("targets,arch_env,expected", [
    ([X86, ARM], "", "arm64"),
    ([ARM], "", "arm64"),
    ([X86, ARM], "x86_64", "x86_64"),
    ([X86, ARM], "arm64", "arm64"),
    ([X86], "x86_64", "x86_64"),
])
def test_arch_choice(repo, targets, arch_env, expected):
    proc = run(repo, "--print-arch", targets=targets, ARCH=arch_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected
    assert proc.stderr == "", "no explanation is needed when arm64 is built or ARCH was given"


def test_default_falls_back_to_x86_64_and_says_why(repo):
    proc = run(repo, "--print-arch", targets=[X86, "wasm32-unknown-unknown"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "x86_64"
    assert len(proc.stderr.strip().splitlines()) == 1
    assert ARM in proc.stderr and 'lambda_architecture = "x86_64"' in proc.stderr


def test_explicit_arm64_without_its_target_fails_with_the_fix(repo):
    proc = run(repo, "--print-arch", targets=[X86], ARCH="arm64")
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"rustup target add {ARM}" in proc.stderr


@pytest.mark.parametrize("targets,arch_env,message", [
    ([X86, ARM], "amd64", "ARCH must be arm64 or x86_64"),
    (["wasm32-unknown-unknown"], "", "rustup target add"),
    ([ARM], "x86_64", f"rustup target add {X86}"),
])
def test_arch_errors(repo, targets, arch_env, message):
    proc = run(repo, "--print-arch", targets=targets, ARCH=arch_env)
    assert proc.returncode != 0 and proc.stdout == ""
    assert message in proc.stderr


# --- RDS CA bundle --------------------------------------------------------------------


def test_given_bundle_must_exist(repo):
    proc = run(repo, "--print-ca-bundle", RDS_CA_BUNDLE=str(repo / "missing.pem"))
    assert proc.returncode != 0 and "no such file" in proc.stderr


def test_given_bundle_must_hold_a_certificate(repo):
    bad = repo / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    proc = run(repo, "--print-ca-bundle", RDS_CA_BUNDLE=str(bad))
    assert proc.returncode != 0 and "not usable" in proc.stderr


def test_given_bundle_with_certificates_is_used(repo):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    pem = repo / "ca.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=package.sh test CA", "-days", "1", "-keyout", str(repo / "ca.key"), "-out", str(pem)],
        check=True, capture_output=True, timeout=60,
    )
    proc = run(repo, "--print-ca-bundle", RDS_CA_BUNDLE=str(pem))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(pem)
    assert "1 certificates" in proc.stderr and "/var/task/global-bundle.pem" in proc.stderr


def test_without_the_npm_package_it_fails_naming_what_is_missing(repo):
    proc = run(repo, "--print-ca-bundle", npm="#!/bin/sh\necho 'npm ERR! network' >&2\nexit 1\n")
    assert proc.returncode != 0 and proc.stdout == ""
    assert "RDS CA bundle missing" in proc.stderr
    assert "@aws-amplify/graphql-schema-generator@" in proc.stderr
    assert "RDS_CA_BUNDLE=" in proc.stderr


def test_a_tampered_npm_tarball_is_refused(repo):
    # A stub `npm pack` that writes a tarball with the right member but other bytes.
    npm = """#!/bin/sh
mkdir -p package/certs && echo tampered > package/certs/aws-rds-global-bundle.pem
tar -czf aws-amplify-graphql-schema-generator.tgz package && rm -rf package
"""
    proc = run(repo, "--print-ca-bundle", npm=npm)
    assert proc.returncode != 0
    assert "tarball has SHA-256" in proc.stderr
    assert not (repo / ".local" / "rds-ca" / "global-bundle.pem").exists()


# --- Contracts with terraform/ ---------------------------------------------------------------


def script_text() -> str:
    return (SCRIPTS / "package.sh").read_text()


def tf_default(name: str) -> str:
    text = (REPO_ROOT / "terraform" / "variables.tf").read_text()
    m = re.search(rf'variable "{name}" \{{.*?default\s*=\s*"([^"]*)"', text, re.S)
    assert m, f"variable {name} with a string default"
    return m.group(1)


def test_ca_bundle_lands_where_terraform_points_database_ssl_root_cert():
    name = re.search(r'^CA_ZIP_NAME="([^"]+)"', script_text(), re.M).group(1)
    assert tf_default("database_ssl_root_cert") == f"/var/task/{name}"


def test_zips_are_written_where_terraform_reads_them():
    text = script_text()
    assert 'LAMBDA_DIR="$ROOT/target/lambda"' in text
    packages = dict(re.findall(r'^  "([a-z-]+)\|([^|]+)\|(?:yes|no)"$', text, re.M))
    assert packages == {
        "producer-api": "-p producer-api --bin producer-api",
        "stream-consumer": "-p stream-consumer --bin stream-consumer",
        "compactor": "-p lake-tools --bin compactor",
        "forget": "-p lake-tools --bin forget",
    }
    for var, name in (("producer_zip", "producer-api"), ("consumer_zip", "stream-consumer"), ("compactor_zip", "compactor"), ("forget_zip", "forget")):
        assert tf_default(var) == f"../target/lambda/{name}/bootstrap.zip"


def test_packaging_tools_are_hash_pinned_outside_the_default_venv():
    req = SCRIPTS / "requirements" / "on-demand" / "package.txt"
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", req.read_text(), re.M)
    assert dict(pins) == {"cargo-lambda": "1.9.2", "ziglang": "0.13.0.post1"}
    assert req.read_text().count("--hash=sha256:") >= 2 * len(pins)
    # venv.sh installs scripts/requirements/*.txt for every test run; the ~90 MB toolchain is not one of them.
    assert not (SCRIPTS / "requirements" / "package.txt").exists()
