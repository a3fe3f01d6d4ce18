"""Both signature schemes Binance accepts, verified over the same payload."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from tradeplane.demo.client import ed25519_sign
from tradeplane.domain.access import KeyType
from tradeplane.domain.signatures import KeyFormatError, ed25519_public_key, verify
from tradeplane.domain.signing import sign

PAYLOAD = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timestamp=1499827319559"


def _pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_hmac_signatures_verify_and_a_changed_payload_does_not() -> None:
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    sig = sign(secret, PAYLOAD)
    assert verify(KeyType.HMAC_SHA256, secret, PAYLOAD, sig)
    assert verify(KeyType.HMAC_SHA256, secret, PAYLOAD, sig.upper())  # hex, any case
    assert not verify(KeyType.HMAC_SHA256, secret, PAYLOAD + "&x=1", sig)
    assert not verify(KeyType.HMAC_SHA256, "other", PAYLOAD, sig)


def test_ed25519_signatures_verify_url_encoded_as_sent() -> None:
    key = Ed25519PrivateKey.generate()
    public = ed25519_public_key(_pem(key))
    sig = ed25519_sign(key, PAYLOAD)
    assert verify(KeyType.ED25519, public, PAYLOAD, quote(sig, safe=""))
    assert verify(KeyType.ED25519, public, PAYLOAD, sig)
    assert not verify(KeyType.ED25519, public, PAYLOAD.replace("BUY", "SELL"), quote(sig))
    other = ed25519_public_key(_pem(Ed25519PrivateKey.generate()))
    assert not verify(KeyType.ED25519, other, PAYLOAD, quote(sig))


@pytest.mark.parametrize("garbage", ["", "00", "%%%", "a" * 600, base64.b64encode(b"x").decode()])
def test_malformed_ed25519_signatures_are_simply_wrong(garbage: str) -> None:
    public = ed25519_public_key(_pem(Ed25519PrivateKey.generate()))
    assert not verify(KeyType.ED25519, public, PAYLOAD, garbage)


def test_public_keys_come_as_pem_or_raw_base64() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    assert ed25519_public_key(_pem(key)) == raw
    assert ed25519_public_key(base64.b64encode(raw).decode()) == raw


def test_other_keys_are_refused_as_ed25519_public_keys() -> None:
    rsa_pem = generate_private_key(public_exponent=65537, key_size=2048).public_key() \
        .public_bytes(serialization.Encoding.PEM,
                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    private_pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    for bad in (rsa_pem, private_pem, "not a key", base64.b64encode(b"short").decode()):
        with pytest.raises(KeyFormatError):
            ed25519_public_key(bad)
