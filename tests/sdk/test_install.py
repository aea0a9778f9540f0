"""`pip install ./sdk` gives a working SDK on its own: built from sdk/pyproject.toml, installed into
a throwaway virtualenv with nothing but its declared dependencies, imported without the exchange's
code anywhere on the path, and used there to ping the live exchange.

pip builds in an isolated environment (setuptools from the package index, usually from pip's
cache) and resolves httpx2 and cryptography from the index, as a partner's pip would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.conftest import PROJECT_ROOT
from tests.sdk.conftest import Partner
from tests.sdk.live import Server

PIP_TIMEOUT_S = 180

PROBE = """
import importlib.metadata as metadata, importlib.util, json, pathlib, sys, sdk
print(json.dumps({
    "file": sdk.__file__,
    "version": sdk.__version__,
    "distribution_version": metadata.version("alliance-sdk"),
    "requires": sorted(metadata.requires("alliance-sdk")),
    "typed": (pathlib.Path(sdk.__file__).parent / "py.typed").exists(),
    "services": [m for m in ("core", "merchants", "exchange", "settlement", "console", "server",
                             "cli", "fastapi", "asyncpg", "pydantic")
                 if importlib.util.find_spec(m)],
    "client": sdk.AllianceClient.__module__,
}))
"""


def write_key(partner: Partner, path: Path) -> Path:
    path.write_bytes(
        partner.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_pip_install_of_the_sdk_works_without_the_exchange(
    tmp_path: Path, exchange: Server, partner: Partner
):
    source = tmp_path / "sdk"
    shutil.copytree(
        PROJECT_ROOT / "sdk",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
    )
    assert installed.returncode == 0, installed.stderr

    clean_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    probe = subprocess.run(
        [str(python), "-I", "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env,
        check=True,
    )
    found = json.loads(probe.stdout)
    assert Path(found["file"]).is_relative_to(venv)
    assert found["version"] == found["distribution_version"]
    assert found["requires"] == ["cryptography>=42", "httpx2>=2.16"]
    assert found["typed"] is True
    assert found["services"] == []
    assert found["client"] == "sdk._client"

    ping = subprocess.run(
        [str(python), "-I", "-m", "sdk", "ping"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **clean_env,
            "ALLIANCE_BASE_URL": exchange.url,
            "ALLIANCE_KEY_ID": partner.key_id,
            "ALLIANCE_KEY_FILE": str(write_key(partner, tmp_path / "partner.pem")),
        },
        timeout=60,
    )
    assert ping.returncode == 0, ping.stderr
    assert f"key {partner.key_id} accepted" in ping.stdout
