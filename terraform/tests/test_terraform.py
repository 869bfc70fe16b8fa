"""Run the Terraform CLI itself, offline: fmt, then init/validate/test against a local provider.

The hashicorp/aws provider cannot be downloaded here (no registry access); it is taken from a
filesystem plugin directory instead: $TF_PLUGIN_DIR, default /opt/tf-plugins (laid out as
registry.terraform.io/hashicorp/aws/<version>/<os_arch>/). Tests that need it are skipped with
a message when it is absent; `terraform fmt` needs no provider.

init/validate/test run in a temporary copy of the files the configuration reads
(terraform/ with tests/ and the shared tests/mocks/*.tfmock.hcl, producer-api/openapi.yaml,
schemas/lake_columns.json, grafana/) plus placeholder Lambda zips at the default artifact
paths, so the repository gets no .terraform/ or state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tfconfig import REPO_ROOT, TF_DIR

TERRAFORM = shutil.which("terraform")
PLUGIN_DIR = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))
HAS_AWS_PROVIDER = (PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws").is_dir()

needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="terraform CLI not on PATH")
needs_provider = pytest.mark.skipif(
    not HAS_AWS_PROVIDER,
    reason=f"no hashicorp/aws provider under {PLUGIN_DIR} (set TF_PLUGIN_DIR); the registry is unreachable here",
)


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1", NO_COLOR="1")
    for var in ("TF_CLI_ARGS", "TF_PLUGIN_CACHE_DIR", "TF_DATA_DIR"):
        env.pop(var, None)
    return subprocess.run([TERRAFORM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


@needs_terraform
def test_terraform_fmt_is_clean():
    proc = run(["fmt", "-check", "-recursive", "-diff", str(TF_DIR)], cwd=REPO_ROOT)
    assert proc.returncode == 0, "run `terraform fmt -recursive terraform`\n" + explain(proc)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A throwaway copy laid out like the repository, initialised from the plugin directory."""
    root = tmp_path_factory.mktemp("tf")
    ignore = shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*", "__pycache__", ".pytest_cache")
    shutil.copytree(TF_DIR, root / "terraform", ignore=ignore)
    # mock_provider "aws" { source = "./tests/mocks" } in every .tftest.hcl
    assert list((root / "terraform" / "tests" / "mocks").glob("*.tfmock.hcl")), "the shared mocks were not copied"
    shutil.copytree(REPO_ROOT / "grafana", root / "grafana", ignore=ignore)
    for rel in ("producer-api/openapi.yaml", "schemas/lake_columns.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, root / rel)
    for crate in ("producer-api", "stream-consumer", "compactor", "forget"):
        artifact = root / "target" / "lambda" / crate / "bootstrap.zip"
        artifact.parent.mkdir(parents=True)
        with zipfile.ZipFile(artifact, "w") as z:
            z.writestr("bootstrap", "placeholder: terraform tests never deploy\n")
    proc = run(["init", "-backend=false", f"-plugin-dir={PLUGIN_DIR}"], cwd=root / "terraform")
    assert proc.returncode == 0, explain(proc)
    return root / "terraform"


@needs_terraform
@needs_provider
def test_terraform_validate(workdir):
    proc = run(["validate", "-no-color"], cwd=workdir)
    assert proc.returncode == 0, explain(proc)


@needs_terraform
@needs_provider
def test_terraform_test_with_mocked_aws(workdir):
    """tests/plan.tftest.hcl: fake-applies the stack with a mocked provider and checks it."""
    proc = run(["test", "-no-color"], cwd=workdir)
    assert proc.returncode == 0, explain(proc)
    assert "0 failed" in proc.stdout, explain(proc)
