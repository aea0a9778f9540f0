"""Configuration from the environment, for `from_env()` and `python -m sdk`.

ALLIANCE_BASE_URL   the exchange, e.g. https://exchange.example (default http://127.0.0.1:8000,
                    where `make run` serves)
ALLIANCE_KEY_ID     your key id, as registered with `alliance merchant add-key`
ALLIANCE_KEY_FILE   your Ed25519 private key, PEM (PKCS#8), e.g. from `python -m sdk keygen`
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdk._auth import load_private_key
from sdk._constants import DEFAULT_BASE_URL, ENV_BASE_URL, ENV_KEY_FILE, ENV_KEY_ID


class ConfigurationError(ValueError):
    """A setting the client needs is missing or unusable."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    base_url: str
    key_id: str
    key_file: Path

    @classmethod
    def resolve(
        cls,
        *,
        base_url: str | None = None,
        key_id: str | None = None,
        key_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ClientSettings:
        """Each setting from its argument, else its environment variable, else its default."""
        env = os.environ if environ is None else environ
        key_id = key_id or env.get(ENV_KEY_ID)
        key_file = key_file or env.get(ENV_KEY_FILE)
        if not key_id:
            raise ConfigurationError(f"no key id: pass --key-id or set {ENV_KEY_ID}")
        if not key_file:
            raise ConfigurationError(f"no private key: pass --key-file or set {ENV_KEY_FILE}")
        return cls(
            base_url=base_url or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL,
            key_id=key_id,
            key_file=Path(key_file),
        )

    def private_key(self) -> Ed25519PrivateKey:
        try:
            return load_private_key(self.key_file)
        except FileNotFoundError:
            raise ConfigurationError(f"{self.key_file}: no such file") from None
        except (ValueError, TypeError) as error:  # not PEM, not Ed25519, or encrypted
            raise ConfigurationError(f"{self.key_file}: {error}") from None
