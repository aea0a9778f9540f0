"""The key that signs the console's cookies: long enough, or the console does not start; when
none is configured, a random one kept private on disk and shared by every worker."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from console.app import SECRET_ENV, SECRET_FILE, resolve_secret


@pytest.mark.parametrize("length", [1, 16, 31])
def test_a_configured_secret_shorter_than_32_characters_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, length: int
) -> None:
    monkeypatch.setenv(SECRET_ENV, "k" * length)
    with pytest.raises(ValueError, match="at least 32 characters"):
        resolve_secret(tmp_path)
    assert not (tmp_path / SECRET_FILE).exists(), "a refused secret is not replaced silently"


def test_a_configured_secret_of_32_characters_is_used_as_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SECRET_ENV, "s" * 32)
    assert resolve_secret(tmp_path) == "s" * 32


def test_without_one_a_random_secret_is_kept_private_and_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    first = resolve_secret(tmp_path)
    path = tmp_path / SECRET_FILE
    assert len(first) == 64
    assert int(first, 16) > 0, "64 hex digits: 256 random bits"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_secret(tmp_path) == first, "the next start and every worker use the same key"
    assert resolve_secret(tmp_path / "elsewhere") != first, "each data directory its own"
