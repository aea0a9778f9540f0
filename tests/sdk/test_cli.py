"""`python -m sdk keygen` and `python -m sdk ping`, as a new partner meets them: a key pair, the
operator registering its public half with the real `alliance merchant add-key`, then a ping of
the live exchange with it."""

from __future__ import annotations

import io
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from core.database import Database
from merchants import service as merchants
from merchants.keys import parse_public_key
from sdk import AllianceClient, AsyncAllianceClient, ConfigurationError, load_private_key
from sdk._cli import main
from tests.conftest import PROJECT_ROOT
from tests.factories import CREATED_AT, unique
from tests.sdk.conftest import Partner
from tests.sdk.live import Server, alliance_command, alliance_env

ENV_NAMES = ("ALLIANCE_BASE_URL", "ALLIANCE_KEY_ID", "ALLIANCE_KEY_FILE")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_client_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path):
    private = tmp_path / "tea_house.pem"

    status, out, err = run("keygen", "--out", str(private))

    assert status == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_private_key(private)
    raw_public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    # stdout is the public key alone, in a form the exchange's own parser takes.
    assert parse_public_key(out.strip()) == raw_public
    public_pem = (tmp_path / "tea_house.pub.pem").read_text()
    assert parse_public_key(public_pem) == raw_public
    assert "alliance merchant add-key" in err


def test_keygen_never_overwrites_a_key_unless_forced(tmp_path: Path):
    private = tmp_path / "key.pem"
    run("keygen", "--out", str(private))
    first = private.read_bytes()

    status, _, err = run("keygen", "--out", str(private))
    assert (status, private.read_bytes()) == (1, first)
    assert "--force" in err

    assert run("keygen", "--out", str(private), "--force")[0] == 0
    assert private.read_bytes() != first
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


async def test_a_new_partner_generates_registers_and_pings(
    tmp_path: Path, db: Database, database_url: str, exchange: Server, monkeypatch
):
    merchant = await merchants.create_merchant(
        db, name=unique("new-partner"), liability_limit=10**9, now=CREATED_AT
    )
    private = tmp_path / "partner.pem"
    _, public, _ = run("keygen", "--out", str(private))
    key_id = unique("key")

    registered = subprocess.run(
        [
            *alliance_command(),
            "merchant",
            "add-key",
            merchant.merchant_id,
            f"--public-key={public.strip()}",
            "--key-id",
            key_id,
        ],
        env=alliance_env(database_url),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert registered.returncode == 0, registered.stderr + registered.stdout

    status, out, err = run(
        "ping", "--base-url", exchange.url, "--key-id", key_id, "--key-file", str(private)
    )
    assert (status, err) == (0, "")
    assert f"ok         key {key_id} accepted" in out

    # The same, configured through the environment.
    monkeypatch.setenv("ALLIANCE_BASE_URL", exchange.url)
    monkeypatch.setenv("ALLIANCE_KEY_ID", key_id)
    monkeypatch.setenv("ALLIANCE_KEY_FILE", str(private))
    assert run("ping")[0] == 0


def test_ping_with_an_unregistered_key_says_so(tmp_path: Path, exchange: Server):
    private = tmp_path / "stranger.pem"
    run("keygen", "--out", str(private))

    status, _, err = run(
        "ping", "--base-url", exchange.url, "--key-id", "key_nobody", "--key-file", str(private)
    )

    assert status == 1
    assert "401 unknown_key" in err
    assert "alliance merchant add-key" in err


def test_ping_without_a_key_is_a_configuration_error(partner: Partner):
    status, _, err = run("ping", "--key-id", partner.key_id)

    assert status == 2
    assert "ALLIANCE_KEY_FILE" in err


def test_ping_with_a_key_file_that_is_not_a_key(tmp_path: Path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")

    status, _, err = run("ping", "--key-id", "k", "--key-file", str(bogus))

    assert status == 2
    assert str(bogus) in err


def test_ping_of_an_exchange_that_is_not_there(tmp_path: Path):
    private = tmp_path / "k.pem"
    run("keygen", "--out", str(private))

    status, _, err = run(
        "ping", "--base-url", "http://127.0.0.1:9", "--key-id", "k", "--key-file", str(private)
    )

    assert status == 1
    assert "ConnectError" in err


async def test_from_env_configures_both_clients(
    tmp_path: Path, exchange: Server, partner: Partner, monkeypatch
):
    key_file = tmp_path / "partner.pem"
    key_file.write_bytes(
        partner.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigurationError, match="ALLIANCE_KEY_ID"):
        AllianceClient.from_env()
    monkeypatch.setenv("ALLIANCE_BASE_URL", exchange.url)
    monkeypatch.setenv("ALLIANCE_KEY_ID", partner.key_id)
    monkeypatch.setenv("ALLIANCE_KEY_FILE", str(key_file))

    with AllianceClient.from_env() as client:
        assert client.key_id == partner.key_id
        assert client.list_transactions().data == []
    async with AsyncAllianceClient.from_env() as async_client:
        assert (await async_client.list_transactions()).data == []
