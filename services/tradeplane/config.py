"""Settings for every process, read from the environment (prefix ``TRADEPLANE_``).

Built once in each process's ``main()`` and passed down; nothing reads the environment
at import time.

One flat model parses every ``TRADEPLANE_*`` variable (their names are the interface: the
chart, the operator and users set them), its fields grouped by concern (:class:`Group`,
:data:`GROUPS`). Each process validates only the groups it uses
(:meth:`Settings.for_process`, :data:`PROCESS_GROUPS`): outside dev mode the gateway
refuses placeholder secrets, and the engine, which holds none, never asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import ClassVar, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PLACEHOLDER = "dev-only-change-me"

#: Fields that may hold credentials: filled from Vault when it is configured, or read from
#: the file named by ``TRADEPLANE_<NAME>_FILE`` (see :mod:`tradeplane.secretsource`).
SECRET_FIELDS = ("database_url", "nats_url", "redis_url", "secret_key", "admin_token",
                 "jwt_secret")


class VaultSettings(BaseSettings):
    """Where the process finds its secrets. Read before the other settings, which may come
    from Vault (see :mod:`tradeplane.secretsource`)."""

    # Errors must not echo what was given: that may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="TRADEPLANE_", extra="ignore", hide_input_in_errors=True
    )

    vault_addr: str = Field(
        default="", description="Vault address (https://vault:8200); empty = Vault off, "
        "secrets from TRADEPLANE_* variables or the files named by TRADEPLANE_*_FILE.",
    )
    vault_auth: Literal["kubernetes", "token"] = Field(
        default="kubernetes",
        description="kubernetes: log in with the pod's service-account JWT (in cluster); "
        "token: use TRADEPLANE_VAULT_TOKEN (local).",
    )
    vault_role: str = Field(
        default="tradeplane", description="Vault role bound to the service account."
    )
    vault_token: SecretStr = Field(
        default=SecretStr(""), description="Vault token for vault_auth=token."
    )
    vault_kv_mount: str = Field(default="secret", description="Mount of the KV v2 engine.")
    vault_path: str = Field(
        default="tradeplane", description="KV v2 path of the platform's secret document."
    )
    vault_auth_mount: str = Field(
        default="kubernetes", description="Mount of the Kubernetes auth method."
    )
    vault_jwt_file: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount/token",
        description="Service-account JWT presented to the Kubernetes auth method.",
    )
    vault_ca_file: str = Field(
        default="", description="CA bundle that signed Vault's certificate; empty = system CAs."
    )


class Group(StrEnum):
    """A concern the settings are grouped by; a process uses some of them."""

    BUS = "bus"
    DATABASE = "database"
    CACHE = "cache"
    OBSERVABILITY = "observability"
    HTTP = "http"
    ADMIN = "admin"
    CIPHER = "cipher"
    SESSIONS = "sessions"
    RATE_LIMITS = "rate limits"
    WEBSOCKETS = "websockets"
    ENGINE = "engine"
    SETTLEMENT = "settlement"
    CONVERT = "convert"
    HEDGE = "hedge"


class Settings(VaultSettings):
    """Every ``TRADEPLANE_*`` setting, parsed; no group's rules checked (that is
    :meth:`for_process`). ``dev_mode`` and the Vault fields concern every process."""

    #: The groups whose rules this class checks outside dev mode: none for the parser, the
    #: process's groups for the class :meth:`for_process` returns.
    checks: ClassVar[frozenset[Group]] = frozenset()

    dev_mode: bool = Field(
        default=False, description="Local/dev mode: placeholder secrets are allowed."
    )

    # ---- bus: NATS JetStream: commands, events, the bus between processes ---------------
    # The URLs may carry passwords: kept out of repr (use ``redacted()`` in messages).
    nats_url: str = Field(
        default="nats://127.0.0.1:4222", repr=False, description="NATS server URL(s)."
    )
    stream_replicas: int = Field(default=1, description="JetStream replicas for our streams.")
    dedup_window_s: float = Field(
        default=600.0, description="JetStream duplicate window for our streams, seconds."
    )

    # ---- database: PostgreSQL: the ledger, accounts, custody ----------------------------
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/tradeplane", repr=False,
        description="PostgreSQL DSN of the ledger database.",
    )
    db_pool_size: int = Field(default=8, description="asyncpg pool size per process.")

    # ---- cache: Redis: market data, rate-limit counters, listen keys --------------------
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", repr=False, description="Redis cache URL."
    )

    # ---- observability: logs, metrics, traces -------------------------------------------
    log_level: str = Field(default="INFO", description="Log level.")
    metrics_port: int = Field(
        default=0, description="Port of the Prometheus /metrics listener (0 = off/none)."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Bind address of the /metrics listener: loopback by default, like the "
        "gateway, so a laptop's services are not reachable from the network; in a pod it "
        "must be 0.0.0.0 for Prometheus to scrape it (the chart and the operator set it).",
    )
    otlp_endpoint: str = Field(
        default="", description="OTLP/HTTP traces endpoint; empty = tracing exporter off."
    )
    stage_stamps: int = Field(
        default=0, ge=0, le=4_000_000,
        description="The gateway stamps this many latest orders at each stage of the order "
        "path, read by the benchmark at GET /debug/stages (tradeplane.stagestamps); 0 = "
        "off. Dev mode only: it is a benchmark's instrument, not a production metric.",
    )

    # ---- http: the gateway's HTTP listener and what it accepts --------------------------
    http_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    http_port: int = Field(default=8080, description="Gateway port.")
    http_keep_alive_s: int = Field(
        default=620, gt=0, le=3600,
        description="Seconds the gateway keeps an idle HTTP connection open (uvicorn's "
        "timeout_keep_alive). Clients pool connections for minutes (Binance keeps them "
        "open that long) and a client loop that runs every N seconds must never reuse a "
        "socket just as the server closes it. Behind a proxy it must exceed the proxy's "
        "own idle timeout towards the gateway, so the proxy, not the gateway, always "
        "closes first: ingress-nginx's upstream keepalive_timeout and AWS ALB's idle "
        "timeout are 60 s, Google Cloud's load balancer keeps backend connections 600 s "
        "(it asks backends for more than that; hence 620).",
    )
    response_timeout_s: float = Field(
        default=10.0, description="How long the gateway waits for the engine+ledger to apply."
    )
    max_body_bytes: int = Field(
        default=64 * 1024, gt=0, description="Largest request body; larger gets HTTP 413."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (JSON list); empty = "
        "CORS off (no Access-Control-* headers).",
    )
    hsts_max_age_s: int = Field(
        default=63_072_000, description="Strict-Transport-Security max-age on HTTPS answers."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses/CIDRs of reverse proxies whose X-Forwarded-For names the "
        "client (JSON list): behind an Ingress, the ingress controller's pods. The client "
        "is the right-most X-Forwarded-For entry that is not one of these (what the client "
        "itself wrote in front is ignored). Empty = the connection's peer is the client: "
        "behind a proxy every client would share the proxy's address and its limits.",
    )

    # ---- admin: the admin API: bootstrap token, how pairs are halted --------------------
    admin_token: SecretStr = Field(
        default=SecretStr(DEV_PLACEHOLDER), description="Bearer token for /admin endpoints."
    )
    pair_control: Literal["local", "kubernetes"] = Field(
        default="local",
        description="How admin halts/resumes pairs: local = SetTrading on the symbol's "
        "command log and the pairs table; kubernetes = patch the TradingPair's "
        "spec.trading and let the operator apply it.",
    )
    kube_namespace: str = Field(
        default="", description="Namespace of the TradingPair resources (kubernetes pair "
        "control); empty = the pod's own namespace.",
    )

    # ---- cipher: API secrets at rest ----------------------------------------------------
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_PLACEHOLDER),
        description="Key that encrypts API secrets at rest (any string; stretched with HKDF).",
    )

    # ---- sessions: users: passwords, sessions (JWT), login throttling, mail -------------
    jwt_secret: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC key (HS256) that signs user access tokens (JWT); from Vault or "
        "TRADEPLANE_JWT_SECRET(_FILE). Empty = a key derived from secret_key (HKDF, its "
        "own label). Rotating it ends every access token at once.",
    )
    access_token_ttl_s: int = Field(
        default=900, gt=0, description="Lifetime of a user access token (JWT), seconds."
    )
    refresh_token_ttl_s: int = Field(
        default=30 * 86400, gt=0,
        description="Lifetime of a refresh token, seconds (each refresh issues a new one).",
    )
    email_token_ttl_s: int = Field(
        default=86400, gt=0, description="Lifetime of an email verification token, seconds."
    )
    mail_outbox: str = Field(
        default="", description="Folder that receives outgoing mail as JSON files (local "
        "and tests); empty = no transport, messages are dropped with a warning.",
    )
    argon2_time_cost: int = Field(default=3, ge=1, description="argon2id passes (passwords).")
    argon2_memory_kib: int = Field(
        default=65536, ge=1024,
        description="argon2id memory per password hash, KiB (RFC 9106 low-memory profile: "
        "64 MiB; at least 19 MiB outside dev mode, OWASP's minimum).",
    )
    argon2_parallelism: int = Field(default=4, ge=1, description="argon2id lanes.")
    login_max_failures: int = Field(
        default=10, gt=0,
        description="Failed logins to one account from one client address within "
        "login_failure_window_s after which that address's attempts on that account get "
        "HTTP 429. Other accounts behind the same address (one NAT, one proxy) are not "
        "affected.",
    )
    login_max_account_failures: int = Field(
        default=100, gt=0,
        description="Failed logins to one account from all addresses together within "
        "login_failure_window_s after which every attempt on that account gets HTTP 429 "
        "until the window ends (guessing spread over many addresses).",
    )
    login_failure_window_s: int = Field(default=900, gt=0, description="See login_max_failures.")

    # ---- rate limits: request weight, order counts, bans (Redis) ------------------------
    rate_limits: bool = Field(
        default=True, description="Enforce request-weight and order-count limits (Redis)."
    )
    rate_limit_sync_ms: int = Field(
        default=1000, ge=0,
        description="Gateways count requests in-process and add them to the shared Redis "
        "counters every this many ms, sooner once a counter gathered a tenth of its limit "
        "(exact per replica; replicas may overshoot a limit by what the others admitted "
        "since their last sync). 0 = charge Redis on every request (exact across replicas, "
        "one round trip and ~0.15 ms of gateway CPU per request).",
    )
    # The limits default to Binance's own; benchmarks, load tests and trusted bots raise
    # them explicitly (TRADEPLANE_IP_WEIGHT_PER_MINUTE=... and so on).
    ip_weight_per_minute: int = Field(
        default=6000, gt=0,
        description="Request weight per client address per minute (Binance's: 6000).",
    )
    key_weight_per_minute: int = Field(
        default=6000, gt=0,
        description="Request weight per API key per minute, over all its addresses (the "
        "address limit's 6000: one key cannot spend more from many addresses).",
    )
    orders_per_10s: int = Field(
        default=100, gt=0, description="Orders per API key per 10 seconds (Binance's: 100)."
    )
    orders_per_day: int = Field(
        default=200_000, gt=0, description="Orders per API key per day (Binance's: 200000)."
    )
    ban_after_429s: int = Field(
        default=5, gt=0,
        description="HTTP 429 answers to one address/key within ban_window_s after which "
        "it is banned (HTTP 418). Refusals that arrive while it is banned (in flight at "
        "once, or on other replicas) neither ban it again nor lengthen the ban.",
    )
    ban_window_s: int = Field(default=60, gt=0, description="See ban_after_429s.")
    ban_base_s: int = Field(
        default=120, gt=0,
        description="First ban's length; each further ban the same day is twice the last.",
    )
    ban_max_s: int = Field(default=3 * 86400, gt=0, description="Longest ban.")

    # ---- websockets: WebSocket limits and the user data stream --------------------------
    # WebSocket limits (Binance's): they bound what one client can make a gateway hold.
    ws_max_message_bytes: int = Field(
        default=4096, gt=0,
        description="Largest message a client may send on a WebSocket (uvicorn's "
        "ws_max_size; a SUBSCRIBE of ~150 streams). A larger frame closes the socket with "
        "1009 before the gateway reads it.",
    )
    ws_messages_per_second: int = Field(
        default=5, gt=0,
        description="Messages a client may send on one WebSocket within any second "
        "(Binance's: 5); one more closes the socket with 1008.",
    )
    ws_max_streams: int = Field(
        default=1024, gt=0,
        description="Streams one WebSocket may listen to (Binance's: 1024); a SUBSCRIBE "
        "beyond it is refused, a URL naming more is closed with 1008.",
    )
    ws_connections_per_window: int = Field(
        default=300, gt=0,
        description="WebSocket connection attempts per client address within "
        "ws_connection_window_s (Binance's: 300 per 5 minutes), counted in Redis across "
        "replicas; more are refused with HTTP 429 (-1003). Off with rate_limits.",
    )
    ws_connection_window_s: int = Field(
        default=300, gt=0, description="See ws_connections_per_window."
    )
    listen_key_ttl_s: int = Field(
        default=3600, gt=0,
        description="How long a user-data-stream listenKey lives after its creation or "
        "last keepalive (Binance's: 60 minutes); then its sockets get listenKeyExpired.",
    )

    # ---- convert: the Convert router (gateway) ----------------------------------------
    convert_bridges: str = Field(
        default="USDT,BTC,ETH",
        description="Assets a two-leg conversion may go through, comma-separated, in "
        "order of preference; the first is also the index asset of the rates.",
    )
    convert_spread_bps: int = Field(
        default=10, ge=0, lt=10_000,
        description="The convert desk's spread on every quote, in basis points of the "
        "output (after the route's taker fees).",
    )
    convert_max_book_age_s: float = Field(
        default=300.0, gt=0,
        description="A book the market-data service has not written for this long is "
        "stale: no conversion is quoted through it.",
    )
    convert_venue: str = Field(
        default="", pattern=r"^([a-z0-9]{1,32}(=https?://[A-Za-z0-9.:\-\[\]]{1,200})?)?$",
        description="An external venue the Convert router also quotes through: a ccxt "
        "exchange id (e.g. binance), optionally '=' and the origin its REST API is served "
        "at instead (another tradeplane: binance=http://10.0.0.5:8080). Empty: our books "
        "only.",
    )
    convert_venue_api_key: str = Field(
        default="", max_length=256,
        description="The desk's API key on the external venue (hedges; reading books "
        "needs none).",
    )
    convert_venue_secret: SecretStr = Field(
        default=SecretStr(""), description="The secret of convert_venue_api_key."
    )
    convert_rates_every_s: float = Field(
        default=1.0, gt=0,
        description="Seconds between two publications of the rates service (indicative "
        "ratios and index prices).",
    )

    # ---- hedge: the convert desk's hedger ------------------------------------------------
    hedge_slippage_bps: int = Field(
        default=50, ge=0, lt=10_000,
        description="How far past the quote's worst price on a leg a hedge IOC order may "
        "trade, in basis points (its limit price: lower for a sale, higher for a purchase).",
    )
    hedge_max_deliveries: int = Field(
        default=10, ge=1, le=100,
        description="Deliveries of one hedge job before it goes to the dead-letter stream "
        "CONVERT_HEDGE_DLQ (and the conversion's routing becomes FAILED).",
    )
    hedge_backoff_s: float = Field(
        default=1.0, gt=0, le=3600,
        description="Redelivery delay after a hedge job's first failed delivery; doubled "
        "after each further failure, at most hedge_backoff_max_s.",
    )
    hedge_backoff_max_s: float = Field(
        default=120.0, gt=0, le=86_400,
        description="The longest redelivery delay of a hedge job.",
    )
    hedge_ack_wait_s: float = Field(
        default=30.0, ge=1, le=3600,
        description="How long a hedge job taken by a worker that stopped answering (killed) "
        "stays invisible before the queue gives it to another worker.",
    )

    # ---- engine: the matching engine ----------------------------------------------------
    snapshot_every: int = Field(
        default=50_000, description="Engine snapshot after this many commands."
    )
    book: Literal["auto", "compiled", "python"] = Field(
        default="auto",
        description="The engine's order book: 'auto' runs the compiled book when it was "
        "built at install (else the pure-Python one, logged at start), 'python' forces the "
        "pure-Python book, 'compiled' refuses to start without the compiled one. Both give "
        "the same events, snapshots and state hashes.",
    )

    # ---- settlement: the settler --------------------------------------------------------
    invariant_check_s: float = Field(
        default=60.0,
        description="Seconds between full ledger-invariant checks in settlement (each scans "
        "every posting; the metric tradeplane_ledger_invariant_ok follows it).",
    )
    snapshot_interval_s: int = Field(
        default=3600, ge=1, le=86_400,
        description="Seconds between the account snapshots the portfolio page draws "
        "(settlement's snapshot worker; daily snapshots, as Binance's accountSnapshot, "
        "are taken besides). Each round values every account and scans the postings once.",
    )
    portfolio_quote: str = Field(
        default="USDT", pattern=r"^[A-Z0-9]{2,10}$",
        description="The asset account snapshots are valued in (at the books' last prices).",
    )
    escrow_timer_s: float = Field(
        default=1.0, gt=0, le=60,
        description="Seconds between the escrow timer's rounds (settlement expires the "
        "escrowed deals whose deadline passed: unfunded ones, and funded ones not paid in "
        "time, refunding the seller).",
    )
    relay_age_ms: int = Field(
        default=10_000, gt=5_000,
        description="How old (ms) an order still PENDING_NEW must be before settlement's "
        "outbox relay looks at it. It must exceed the longest a gateway's command publish "
        "may take (5 s, after which the gateway gives up), so the order's original "
        "message, if it was ever stored, is in the command stream by then; a longer age "
        "only delays the re-send of an order whose gateway died between its commit and "
        "its publish.",
    )

    @field_validator("convert_venue")
    @classmethod
    def _a_ccxt_exchange(cls, value: str) -> str:
        exchange_id = value.partition("=")[0]
        if exchange_id:
            try:
                import ccxt  # only when a venue is configured: the optional extra
            except ImportError:
                raise ValueError("an external venue needs ccxt: install tradeplane with "
                                 "its 'venues' extra") from None
            if exchange_id not in ccxt.exchanges:
                raise ValueError(f"ccxt has no exchange {exchange_id!r}")
        return value

    @model_validator(mode="after")
    def _rules_of_the_groups_checked(self) -> Settings:
        if not self.dev_mode:
            for group in Group:  # a fixed order: the same settings, the same first error
                if group in self.checks:
                    for rule in _RULES.get(group, ()):
                        rule(self)
        return self

    def for_process(self, process: str) -> Settings:
        """The same settings, checked against the rules of the groups ``process`` uses
        (:data:`PROCESS_GROUPS`): the gateway's secrets only where they are used.

        Raises:
            pydantic.ValidationError: a rule of one of those groups does not hold (the
                message names the variable, never its value).
            KeyError: ``process`` is not one of :data:`PROCESS_GROUPS`.
        """
        checked = _PROCESS_SETTINGS[process]
        # Validated, not re-read: the values are this process's, whatever the environment
        # holds now.
        return checked.model_validate(self.model_dump())


def _placeholder(settings: Settings, name: str) -> bool:
    value: SecretStr = getattr(settings, name)
    return value.get_secret_value() == DEV_PLACEHOLDER


def _admin_rules(s: Settings) -> None:
    if _placeholder(s, "admin_token"):
        raise ValueError("TRADEPLANE_ADMIN_TOKEN must be set outside dev mode")


def _cipher_rules(s: Settings) -> None:
    if _placeholder(s, "secret_key"):
        raise ValueError("TRADEPLANE_SECRET_KEY must be set outside dev mode")


def _session_rules(s: Settings) -> None:
    if _placeholder(s, "jwt_secret"):
        raise ValueError("TRADEPLANE_JWT_SECRET must not be the placeholder outside dev mode")
    if not s.jwt_secret.get_secret_value() and _placeholder(s, "secret_key"):
        # An empty JWT secret is derived from secret_key: a placeholder there signs tokens.
        raise ValueError("TRADEPLANE_JWT_SECRET or TRADEPLANE_SECRET_KEY must be set outside "
                         "dev mode")
    if s.argon2_memory_kib < 19456:
        raise ValueError("TRADEPLANE_ARGON2_MEMORY_KIB must be at least 19456 outside dev mode")


def _observability_rules(s: Settings) -> None:
    if s.stage_stamps:
        raise ValueError("TRADEPLANE_STAGE_STAMPS is the benchmark's: dev mode only")


#: What each group requires outside dev mode (groups without an entry accept any parsed
#: value).
_RULES: Final[Mapping[Group, tuple[Callable[[Settings], None], ...]]] = {
    Group.ADMIN: (_admin_rules,),
    Group.OBSERVABILITY: (_observability_rules,),
    Group.CIPHER: (_cipher_rules,),
    Group.SESSIONS: (_session_rules,),
}

#: The fields of each group, in declaration order (``dev_mode`` and the Vault fields
#: belong to every process and to no group).
GROUPS: Final[Mapping[Group, tuple[str, ...]]] = {
    Group.BUS: ("nats_url", "stream_replicas", "dedup_window_s"),
    Group.DATABASE: ("database_url", "db_pool_size"),
    Group.CACHE: ("redis_url",),
    Group.OBSERVABILITY: ("log_level", "metrics_port", "metrics_host", "otlp_endpoint",
                          "stage_stamps"),
    Group.HTTP: ("http_host", "http_port", "http_keep_alive_s", "response_timeout_s",
                 "max_body_bytes", "cors_origins", "hsts_max_age_s", "trusted_proxies"),
    Group.ADMIN: ("admin_token", "pair_control", "kube_namespace"),
    Group.CIPHER: ("secret_key",),
    Group.SESSIONS: ("jwt_secret", "access_token_ttl_s", "refresh_token_ttl_s",
                     "email_token_ttl_s", "mail_outbox", "argon2_time_cost",
                     "argon2_memory_kib", "argon2_parallelism", "login_max_failures",
                     "login_max_account_failures", "login_failure_window_s"),
    Group.RATE_LIMITS: ("rate_limits", "rate_limit_sync_ms", "ip_weight_per_minute",
                        "key_weight_per_minute", "orders_per_10s", "orders_per_day",
                        "ban_after_429s", "ban_window_s", "ban_base_s", "ban_max_s"),
    Group.WEBSOCKETS: ("ws_max_message_bytes", "ws_messages_per_second", "ws_max_streams",
                       "ws_connections_per_window", "ws_connection_window_s",
                       "listen_key_ttl_s"),
    Group.ENGINE: ("snapshot_every", "book"),
    Group.SETTLEMENT: ("invariant_check_s", "relay_age_ms", "snapshot_interval_s",
                       "portfolio_quote", "escrow_timer_s"),
    Group.CONVERT: ("convert_bridges", "convert_spread_bps", "convert_max_book_age_s",
                    "convert_rates_every_s", "convert_venue", "convert_venue_api_key",
                    "convert_venue_secret"),
    Group.HEDGE: ("hedge_slippage_bps", "hedge_max_deliveries", "hedge_backoff_s",
                  "hedge_backoff_max_s", "hedge_ack_wait_s"),
}

_COMMON: Final = frozenset({Group.BUS, Group.DATABASE, Group.OBSERVABILITY})

#: The groups each process uses: the long-running ones by the names ``tradeplane <process>``
#: and :func:`tradeplane.runner.run_service` use, and the CLI's commands that need more
#: than the bus and the database.
PROCESS_GROUPS: Final[Mapping[str, frozenset[Group]]] = {
    "gateway": _COMMON | {Group.CACHE, Group.HTTP, Group.ADMIN, Group.CIPHER,
                          Group.SESSIONS, Group.RATE_LIMITS, Group.WEBSOCKETS,
                          Group.CONVERT},
    "matching": _COMMON | {Group.ENGINE},
    "settlement": _COMMON | {Group.SETTLEMENT},
    "marketdata": _COMMON | {Group.CACHE},
    "wallet-watcher": _COMMON,
    "rates": _COMMON | {Group.CACHE, Group.CONVERT},
    "hedger": _COMMON | {Group.CACHE, Group.HEDGE, Group.CONVERT},
    # The CLI's account commands (users, API keys, admins, credits): they encrypt secrets.
    "cli-accounts": frozenset({Group.DATABASE, Group.CIPHER}),
}


def _checked_class(process: str, groups: frozenset[Group]) -> type[Settings]:
    name = "".join(part.title() for part in process.split("-")) + "Settings"
    return type(name, (Settings,), {"checks": groups, "__doc__": f"Settings of {process}."})


_PROCESS_SETTINGS: Final[Mapping[str, type[Settings]]] = {
    process: _checked_class(process, groups) for process, groups in PROCESS_GROUPS.items()
}


def redacted(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<unparsable url>"
