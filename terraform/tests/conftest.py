"""pytest fixtures for the static Terraform tests."""

from __future__ import annotations

import pytest

from tfconfig import TF_DIR, Config, hcl2


@pytest.fixture(scope="session")
def tf() -> Config:
    if hcl2 is None:
        pytest.skip("hcl2 parser not installed: pip install --require-hashes -r scripts/requirements/terraform.txt")
    return Config(TF_DIR)
