"""Encryption at rest of API-key secrets: Fernet (AES-128-CBC + HMAC) with an HKDF-derived key."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tradeplane.usecases.errors import SecretUnreadable


class CipherError(SecretUnreadable):
    """A stored secret could not be decrypted (wrong key or tampered)."""


class SecretCipher:
    """The application layer's ``Cipher`` (``usecases.accounts.Cipher``)."""

    def __init__(self, master_key: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"tradeplane-api-secrets", info=b"v1"
        ).derive(master_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        """Raises CipherError when the token does not decrypt under this key."""
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise CipherError("API secret does not decrypt with the configured key") from exc
