"""HashiCorp Vault adapter (hvac): log in, read KV v2 secrets, keep the token alive.

* Kubernetes auth in a cluster: the pod's service-account JWT is exchanged for a Vault
  token bound to a role (``POST /v1/auth/<mount>/login``).
* Token auth locally: the token is checked with ``GET /v1/auth/token/lookup-self``.
* KV v2 reads (``GET /v1/<mount>/data/<path>``): every value comes back as a ``SecretStr``.
* Renewal: ``keep_alive`` renews the token (``renew-self``) when two thirds of its TTL have
  passed, and logs in again with the JWT when Vault refuses (max TTL reached).

hvac is synchronous (requests): the async helper runs it in a thread. No error message,
log line or repr made here contains a token, a JWT or a secret value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hvac
import hvac.exceptions
import requests
from pydantic import SecretStr

from tradeplane.domain.errors import ConfigurationError, NotFound, TradeplaneError, Unavailable

log = logging.getLogger("tradeplane.vault")

#: Renew when this share of the token's TTL has passed (Vault Agent does about the same).
RENEW_AT = 2 / 3
#: Least wait between two renewal attempts after a failure, seconds.
RETRY_MIN_S = 1.0


class VaultError(TradeplaneError):
    """Vault could not be reached or refused a request. The message names the operation,
    Vault's address and Vault's own error text, never a token, JWT or secret value."""


class VaultAuthError(VaultError, ConfigurationError):
    """Login or token refused: wrong role, JWT, token; expired or revoked token."""


class VaultNotFoundError(VaultError, NotFound):
    """No secret at the path (or it was deleted)."""


class VaultUnavailable(VaultError, Unavailable):
    """Vault did not answer, answered an error of its own (sealed, overloaded) or an
    unreadable reply: the same request may succeed later."""


@dataclass(frozen=True, slots=True)
class VaultConfig:
    addr: str
    auth: Literal["kubernetes", "token"] = "kubernetes"
    role: str = ""
    token: SecretStr = field(default_factory=lambda: SecretStr(""))
    kv_mount: str = "secret"
    auth_mount: str = "kubernetes"
    jwt_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str = ""
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ChainRpcCredentials:
    """A chain node's RPC endpoint and login, as a Wallet's Vault path holds them."""

    url: str
    username: str
    password: SecretStr = field(repr=False)


class VaultSession:
    """A logged-in hvac client and its token's lifetime. Build with :meth:`login`."""

    def __init__(self, cfg: VaultConfig, client: hvac.Client, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._client = client
        self._clock = clock
        self.ttl_s = 0.0  # 0 = the token does not expire
        self.renewable = False
        self.renewed_at = clock()
        self.renewals = 0

    def __repr__(self) -> str:
        return f"VaultSession(addr={self.cfg.addr!r}, auth={self.cfg.auth!r})"

    # ------------------------------------------------------------------ login
    @classmethod
    def login(cls, cfg: VaultConfig, *, clock: Callable[[], float] = time.monotonic
              ) -> VaultSession:
        """Log in (Kubernetes JWT) or check the token (token auth).

        Raises:
            VaultAuthError: credentials refused, or the JWT file cannot be read.
            VaultError: Vault unreachable or failing.
        """
        client = hvac.Client(url=cfg.addr, verify=cfg.ca_file or True, timeout=cfg.timeout_s)
        session = cls(cfg, client, clock=clock)
        session._authenticate()
        return session

    def _authenticate(self) -> None:
        if self.cfg.auth == "kubernetes":
            jwt = self._read_jwt()
            resp = self._call("kubernetes login", lambda: self._client.auth.kubernetes.login(
                role=self.cfg.role, jwt=jwt, mount_point=self.cfg.auth_mount), jwt)
            self._took(resp.get("auth") or {}, "lease_duration")
        else:
            token = self.cfg.token.get_secret_value()
            if not token:
                raise VaultAuthError("Vault token auth: no token given (TRADEPLANE_VAULT_TOKEN)")
            self._client.token = token
            resp = self._call("token lookup", self._client.auth.token.lookup_self)
            self._took(resp.get("data") or {}, "ttl")

    def _read_jwt(self) -> str:
        try:
            jwt = Path(self.cfg.jwt_file).read_text().strip()
        except OSError as exc:
            raise VaultAuthError(
                f"Vault kubernetes login: cannot read the service-account token "
                f"{self.cfg.jwt_file}: {exc.strerror}"
            ) from exc
        if not jwt:
            raise VaultAuthError(f"Vault kubernetes login: {self.cfg.jwt_file} is empty")
        return jwt

    def _took(self, info: Mapping[str, Any], ttl_key: str) -> None:
        self.ttl_s = float(info.get(ttl_key) or 0)
        self.renewable = bool(info.get("renewable"))
        self.renewed_at = self._clock()

    # ------------------------------------------------------------------ reads
    def read_kv(self, path: str) -> dict[str, SecretStr]:
        """The latest version of the KV v2 document at ``path`` under the KV mount.

        Raises:
            VaultNotFoundError: nothing there.
            VaultAuthError: the token may not read it.
            VaultError: any other failure.
        """
        resp = self._call(
            f"read {self.cfg.kv_mount}/{path}",
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.cfg.kv_mount, raise_on_deleted_version=True),
        )
        data = (resp.get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise VaultError(f"Vault read {self.cfg.kv_mount}/{path}: not a KV v2 document")
        return {str(k): SecretStr(str(v)) for k, v in data.items() if v is not None}

    def read_chain_rpc(self, path: str) -> ChainRpcCredentials:
        """A Wallet's node credentials: keys ``url``, ``username``, ``password``.

        Raises:
            VaultError: as :meth:`read_kv`, or a key is missing.
        """
        doc = self.read_kv(path)
        missing = sorted({"url", "username", "password"} - doc.keys())
        if missing:
            raise VaultError(f"Vault {self.cfg.kv_mount}/{path}: missing {', '.join(missing)}")
        return ChainRpcCredentials(doc["url"].get_secret_value(),
                                   doc["username"].get_secret_value(), doc["password"])

    # ------------------------------------------------------------------ renewal
    def seconds_until_renewal(self) -> float | None:
        """None when the token never expires or cannot be renewed (nor re-obtained)."""
        if self.ttl_s <= 0 or (not self.renewable and self.cfg.auth != "kubernetes"):
            return None
        return max(0.0, self.renewed_at + self.ttl_s * RENEW_AT - self._clock())

    def renew(self) -> None:
        """Renew the token (renew-self); with Kubernetes auth, log in again when Vault
        refuses (not renewable, max TTL reached, revoked).

        Raises:
            VaultError: neither worked.
        """
        if self.renewable:
            try:
                resp = self._call("token renewal", self._client.auth.token.renew_self)
                self._took(resp.get("auth") or {}, "lease_duration")
                self.renewals += 1
                return
            except VaultAuthError:
                if self.cfg.auth != "kubernetes":
                    raise
        if self.cfg.auth != "kubernetes":
            raise VaultAuthError("Vault token is not renewable")
        self._authenticate()
        self.renewals += 1

    async def keep_alive(self, stop: asyncio.Event) -> None:
        """Renew the token before it expires until ``stop`` is set. Vault's failures
        (``VaultError``) are logged and retried (sooner as the expiry nears); they never
        end the task. Any other error is a defect and ends it: the runner, which
        supervises it, then stops the process (``runner.run_service``)."""
        while not stop.is_set():
            wait = self.seconds_until_renewal()
            if wait is None:
                log.info("vault token does not expire or cannot be renewed; not renewing")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(self.renew)
                log.info("vault token renewed", extra={"fields": {"ttl_s": self.ttl_s}})
            except VaultError as exc:
                log.warning("vault token renewal failed: %s", exc)
                left = self.renewed_at + self.ttl_s - self._clock()
                retry = max(RETRY_MIN_S, left / 4)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=retry)

    # ------------------------------------------------------------------ errors
    def _call(self, what: str, fn: Callable[[], Any], *also_secret: str) -> dict[str, Any]:
        """Run an hvac call; translate its errors into ours, scrubbed of secrets."""
        try:
            resp = fn()
        except hvac.exceptions.InvalidPath as exc:
            raise VaultNotFoundError(self._message(what, exc, also_secret)) from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized,
                hvac.exceptions.InvalidRequest) as exc:
            # Vault answers a wrong role or JWT with 400 "invalid role name"/403.
            raise VaultAuthError(self._message(what, exc, also_secret)) from exc
        except (hvac.exceptions.VaultError, requests.RequestException, ValueError) as exc:
            raise VaultUnavailable(self._message(what, exc, also_secret)) from exc
        if isinstance(resp, requests.Response):  # hvac returns 204s as raw responses
            return {}
        return dict(resp or {})

    def _message(self, what: str, exc: BaseException, also_secret: tuple[str, ...]) -> str:
        errors = getattr(exc, "errors", None)
        if isinstance(errors, list) and errors:
            detail = "; ".join(str(e) for e in errors)
        elif isinstance(exc, requests.RequestException):
            detail = type(exc).__name__  # its text may quote the request
        else:
            detail = type(exc).__name__
        text = f"Vault {what} at {self.cfg.addr} failed: {detail}"
        # Vault does not echo credentials, but nothing here relies on that.
        for secret in (self.cfg.token.get_secret_value(), self._client.token or "",
                       *also_secret):
            if secret:
                text = text.replace(secret, "***")
        return text
