"""Encryption at rest for connection secrets.

The key comes from TREADLE_SECRET_KEY (any string; stretched with HKDF) or, on the embedded
default, from a key file created once in the data dir with mode 0600. Ciphertexts are Fernet
tokens (AES-128-CBC + HMAC-SHA256), so tampering is detected rather than decrypted into junk.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from treadle.errors import TreadleError

KEY_FILE = "secret.key"


class VaultError(TreadleError):
    """A ciphertext could not be opened (wrong key or tampered data)."""


class Vault:
    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._fernet = Fernet(base64.urlsafe_b64encode(self.derive("treadle connection secrets")))

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (e.g. signing approval links), stable across processes
        that share the secret, and independent of every other purpose's key."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            self._secret
        )

    @classmethod
    def open(cls, data_dir: Path, configured: str | None) -> Vault:
        if configured:
            return cls(configured)
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes initialising the same dir must not write two different keys.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        return cls(path.read_text().strip())

    def seal(self, values: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open_sealed(self, token: str) -> dict[str, str]:
        try:
            opened = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError) as exc:
            raise VaultError("connection secrets could not be decrypted") from exc
        if not isinstance(opened, dict):
            raise VaultError("connection secrets are malformed")
        return {str(k): str(v) for k, v in opened.items()}
