"""Configuration: a TOML file turned into frozen dataclasses, validated before anything starts.

Every mistake is reported with the file, the key, the value and what is allowed, and the
server does not start half-configured. Module options (`[modules.<name>]`) are validated
against the `OPTIONS` each module declares. Relative paths are taken from the directory the
server is started in.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmppd.jid import InvalidJID, parse_jid
from xmppd.module import Option, load_module

# Always loaded on user hosts: the RFC 6120/6121 core. `[server] modules` lists the optional ones.
CORE_MODULES = ("iq", "message", "presence", "roster", "disco", "legacy_session")
# Always loaded on component hosts: disco answers for the service; the rest it lists itself.
COMPONENT_CORE_MODULES = ("disco",)
# The room service every user host gets by default (`[server] conference`).
MUC_COMPONENT = "components.muc"
DEFAULT_CONFERENCE = "conference"
UPLOAD_COMPONENT = "components.upload"
DEFAULT_UPLOAD = "upload"
DEFAULT_MODULES = (
    "ping", "version", "register", "caps", "contact_addresses", "mam", "offline", "carbons", "blocking",
    "pep", "vcard", "private", "avatar_conversion", "bookmarks", "smacks", "csi", "push",
    "webchat",
)
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    def __init__(self, source: str, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{source}: {key} = {value!r} is not valid: {allowed}")
        self.source = source
        self.key = key


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: Path
    key: Path


ALL_INTERFACES = ("0.0.0.0", "::")
LOOPBACK_INTERFACES = ("127.0.0.1",)
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/xmppd"


@dataclass(frozen=True, slots=True)
class C2SConfig:
    interfaces: tuple[str, ...] = ALL_INTERFACES
    port: int = 5222
    direct_tls_port: int = 5223  # 0 turns XEP-0368 Direct TLS off
    require_encryption: bool = True
    max_stanza_size: int = 256 * 1024
    auth_timeout: float = 30.0
    max_connections: int = 10000
    max_connections_per_ip: int = 100
    # Streams not yet authenticated have their own, smaller budget (issue 10): when it is full
    # the oldest are closed first, and while it is over half full `busy_auth_timeout` applies.
    max_unauthenticated: int = 1000
    max_unauthenticated_per_ip: int = 10
    busy_auth_timeout: float = 5.0
    # XML limits per element (beyond max_stanza_size): policy-violation past any of them.
    max_attributes: int = 64
    max_children: int = 512
    max_depth: int = 32
    # Per-session rate limits (token buckets): reads pause while a session is over them, and a
    # session over them for `max_throttled_seconds` in a row is closed with policy-violation.
    stanza_rate: float = 200.0
    stanza_burst: int = 1000
    byte_rate: int = 512 * 1024
    byte_burst: int = 2 * 1024 * 1024
    max_throttled_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    """The HTTP side (xmppd/http.py): plain HTTP on loopback by default (a reverse proxy in front,
    or the admin's own machine), HTTPS on every interface with the c2s certificates (SNI)."""

    interfaces: tuple[str, ...] = LOOPBACK_INTERFACES
    port: int = 5280  # 0 turns plain HTTP off
    tls_interfaces: tuple[str, ...] = ALL_INTERFACES
    tls_port: int = 5281  # 0 turns HTTPS off
    # How clients reach the HTTP side ("https://chat.example.org"), for the addresses the server
    # hands out (host-meta, upload slots); empty: the scheme and Host of each request.
    public_url: str = ""
    # Where XMPP over WebSocket (RFC 7395) and BOSH (XEP-0206) are served; "" turns one off.
    websocket_path: str = "/xmpp-websocket"
    bosh_path: str = "/http-bind"
    # Web pages (origins) besides the server's own hosts whose scripts may open XMPP over WebSocket
    # streams, e.g. ("https://chat.example.org",); ("*",) allows any. Clients without Origin may.
    websocket_origins: tuple[str, ...] = ()
    # BOSH (XEP-0124): the longest a request is held, seconds without a request before a session
    # counts as lost, output bytes kept for a client that stopped polling.
    bosh_max_wait: int = 60
    bosh_inactivity: int = 60
    bosh_max_pending: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TLSConfig:
    min_version: str = "1.2"
    certificates: Mapping[str, Certificate] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    mechanisms: tuple[str, ...] = MECHANISMS
    scram_iterations: int = 4096
    max_failures_per_stream: int = 3
    # Failed logins from one address are answered ever more slowly, up to this many seconds.
    max_failure_delay: float = 5.0
    # Past these counts of failed logins within `lockout_seconds`, further attempts are refused
    # outright (not checked) until that long after the last failure: an account from one address
    # (IPv6 by /64), one address for any accounts, and an account from many addresses (then only
    # addresses with no failure on record may still try, so its owner gets in).
    lockout_after: int = 5
    address_lockout_after: int = 20
    account_lockout_after: int = 50
    lockout_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = "sqlite"
    sqlite_path: str = "xmppd.sqlite3"  # inside data_dir unless absolute
    postgres_dsn: str = DEFAULT_POSTGRES_DSN
    postgres_schema: str = "public"
    pool_size: int = 10


@dataclass(frozen=True, slots=True)
class ComponentConfig:
    """A service with its own domain (`[components."conference.example.org"]`)."""

    domain: str
    modules: tuple[str, ...]
    # The user host whose disco#items list this component.
    parent: str


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<defaults>"
    hosts: tuple[str, ...] = ("localhost",)
    data_dir: Path = Path("data")
    log_level: str = "info"
    modules: tuple[str, ...] = DEFAULT_MODULES
    components: tuple[ComponentConfig, ...] = (
        ComponentConfig(f"{DEFAULT_CONFERENCE}.localhost", (MUC_COMPONENT,), "localhost"),
        ComponentConfig(f"{DEFAULT_UPLOAD}.localhost", (UPLOAD_COMPONENT,), "localhost"),
    )
    module_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    c2s: C2SConfig = field(default_factory=C2SConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def user_host_modules(self) -> tuple[str, ...]:
        """What every user host loads: the core, then `[server] modules`."""
        return CORE_MODULES + tuple(m for m in self.modules if m not in CORE_MODULES)

    def component_modules(self, component: ComponentConfig) -> tuple[str, ...]:
        return COMPONENT_CORE_MODULES + tuple(m for m in component.modules if m not in COMPONENT_CORE_MODULES)

    @property
    def all_modules(self) -> tuple[str, ...]:
        """Every module some host loads (each is configured once, in `[modules.<name>]`)."""
        names = list(self.user_host_modules)
        for component in self.components:
            names.extend(m for m in self.component_modules(component) if m not in names)
        return tuple(names)

    @property
    def sqlite_file(self) -> Path:
        path = Path(self.storage.sqlite_path)
        return path if path.is_absolute() else self.data_dir / path

    def options_for(self, module: str) -> Mapping[str, Any]:
        return self.module_options.get(module, {})


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file; None gives the built-in defaults."""
    if path is None:
        return _build({}, "<defaults>")
    source = str(path)
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(source, "(file)", source, "the file does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", str(exc), "the file must be valid TOML") from None
    return _build(raw, source)


class _Reader:
    """Takes typed values out of one TOML table, remembering which keys it used."""

    def __init__(self, source: str, table: Mapping[str, Any], prefix: str) -> None:
        self.source, self.table, self.prefix = source, table, prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, default: Any, kind: type | tuple[type, ...], allowed: str) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python, never in a config file.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise ConfigError(self.source, self.key(name), value, allowed)
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, default, str, "one of " + ", ".join(choices))
        if value not in choices:
            raise ConfigError(self.source, self.key(name), value, "one of " + ", ".join(choices))
        return str(value)

    def integer(self, name: str, default: int, minimum: int, maximum: int = 2**31) -> int:
        allowed = f"a whole number from {minimum} to {maximum}"
        value = self.get(name, default, int, allowed)
        if not minimum <= value <= maximum:
            raise ConfigError(self.source, self.key(name), value, allowed)
        return int(value)

    def number(self, name: str, default: float, minimum: float) -> float:
        allowed = f"a number of at least {minimum}"
        value = self.get(name, default, (int, float), allowed)
        if value < minimum:
            raise ConfigError(self.source, self.key(name), value, allowed)
        return float(value)

    def strings(self, name: str, default: tuple[str, ...], allowed: str = "a list of strings") -> tuple[str, ...]:
        value = self.get(name, default, (list, tuple), allowed)
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(self.source, self.key(name), value, allowed)
        return tuple(value)

    def table_(self, name: str) -> Mapping[str, Any]:
        return self.get(name, {}, dict, "a table")  # type: ignore[no-any-return]

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(
                self.source, self.key(unknown[0]), self.table[unknown[0]],
                "unknown key; known keys here: " + ", ".join(sorted(self.used)),
            )


def _build(raw: Mapping[str, Any], source: str) -> Config:
    top = _Reader(source, raw, "")
    server = _Reader(source, top.table_("server"), "server")
    hosts = _hosts(server)
    http = _http(_Reader(source, top.table_("http"), "http"))
    config = Config(
        source=source,
        hosts=hosts,
        data_dir=Path(server.get("data_dir", "data", str, "a directory path")),
        log_level=server.choice("log_level", "info", LOG_LEVELS),
        modules=server.strings("modules", DEFAULT_MODULES, "a list of module names"),
        components=_with_default_services(
            server,
            _components(_Reader(source, top.table_("components"), "components"), hosts),
            hosts,
            http_on=bool(http.port or http.tls_port),
        ),
        c2s=_c2s(_Reader(source, top.table_("c2s"), "c2s")),
        tls=_tls(_Reader(source, top.table_("tls"), "tls"), hosts),
        http=http,
        auth=_auth(_Reader(source, top.table_("auth"), "auth")),
        storage=_storage(_Reader(source, top.table_("storage"), "storage")),
    )
    server.finish()
    modules = _Reader(source, top.table_("modules"), "modules")
    config = _with_module_options(config, modules)
    top.finish()
    return config


def _hosts(server: _Reader) -> tuple[str, ...]:
    hosts = server.strings("hosts", ("localhost",), "a list of domain names")
    if not hosts:
        raise ConfigError(server.source, server.key("hosts"), [], "at least one domain name")
    for host in hosts:
        _domain(server, server.key("hosts"), host)
    return hosts


def _domain(reader: _Reader, key: str, value: str) -> str:
    """A domain as RFC 7622 prepares it; only the prepared form is accepted, so that names in the
    config compare equal to the addresses in stanzas."""
    try:
        jid = parse_jid(value)
    except InvalidJID:
        jid = None
    if jid is None or not jid.is_domain or str(jid) != value:
        # Say which form it is (an A-label "xn--..." is written as its U-label, RFC 7622 §3.2).
        hint = f"; here that is {str(jid)!r}" if jid is not None and jid.is_domain else ""
        raise ConfigError(
            reader.source, key, value,
            "lower-case domain names like 'example.org', as RFC 7622 prepares them" + hint,
        )
    return value


def _with_default_services(
    server: _Reader, components: tuple[ComponentConfig, ...], hosts: tuple[str, ...], *, http_on: bool
) -> tuple[ComponentConfig, ...]:
    """`[server] conference` and `upload`: every user host gets a room service (XEP-0045) at
    `<conference>.<host>` and, when the HTTP side is on, a file upload service (XEP-0363) at
    `<upload>.<host>`, unless a component of its own already runs one; "" turns that off. So a
    fresh server offers group chat and file sharing out of the box, and an admin who configures
    such a service under another name gets only that one."""
    defaults = [("conference", DEFAULT_CONFERENCE, MUC_COMPONENT), ("upload", DEFAULT_UPLOAD, UPLOAD_COMPONENT)]
    for key, default, module in defaults:
        label = server.get(key, default, str, f"a subdomain label such as '{default}', or ''")
        if not label or (module == UPLOAD_COMPONENT and not http_on):
            continue
        served = {c.parent for c in components if module in c.modules}
        taken = {c.domain for c in components}
        added = []
        for host in hosts:
            domain = f"{label}.{host}"
            _domain(server, server.key(key), domain)
            if host not in served and domain not in taken and domain not in hosts:
                added.append(ComponentConfig(domain, (module,), host))
        components += tuple(added)
    return components


def _components(reader: _Reader, hosts: tuple[str, ...]) -> tuple[ComponentConfig, ...]:
    components = []
    for domain, entry in reader.table.items():
        reader.used.add(domain)
        key = reader.key(f'"{domain}"')
        _domain(reader, key, domain)
        if domain in hosts:
            raise ConfigError(reader.source, key, domain, "a domain that is not also in server.hosts")
        if not isinstance(entry, dict):
            raise ConfigError(reader.source, key, entry, "a table with modules (and optionally parent)")
        table = _Reader(reader.source, entry, key)
        modules = table.strings("modules", (), "a list of module names")
        # By default the user host it is a subdomain of (conference.example.org: example.org).
        near = [host for host in hosts if domain.endswith("." + host)]
        parent = table.get("parent", max(near, key=len) if near else hosts[0], str, "a host listed in server.hosts")
        if parent not in hosts:
            raise ConfigError(reader.source, table.key("parent"), parent, "a host listed in server.hosts")
        table.finish()
        components.append(ComponentConfig(domain, modules, parent))
    return tuple(components)


def _c2s(reader: _Reader) -> C2SConfig:
    config = C2SConfig(
        interfaces=reader.strings("interfaces", ALL_INTERFACES, "a list of IP addresses to listen on"),
        port=reader.integer("port", 5222, 1, 65535),
        direct_tls_port=reader.integer("direct_tls_port", 5223, 0, 65535),
        require_encryption=reader.get("require_encryption", True, bool, "true or false"),
        max_stanza_size=reader.integer("max_stanza_size", 256 * 1024, 1024, 64 * 1024 * 1024),
        auth_timeout=reader.number("auth_timeout", 30.0, 1.0),
        max_connections=reader.integer("max_connections", 10000, 1),
        max_connections_per_ip=reader.integer("max_connections_per_ip", 100, 1),
        max_unauthenticated=reader.integer("max_unauthenticated", 1000, 1),
        max_unauthenticated_per_ip=reader.integer("max_unauthenticated_per_ip", 10, 1),
        busy_auth_timeout=reader.number("busy_auth_timeout", 5.0, 1.0),
        max_attributes=reader.integer("max_attributes", 64, 8, 100_000),
        max_children=reader.integer("max_children", 512, 16, 1_000_000),
        max_depth=reader.integer("max_depth", 32, 8, 255),  # libxml2 refuses deeper anyway
        stanza_rate=reader.number("stanza_rate", 200.0, 1.0),
        stanza_burst=reader.integer("stanza_burst", 1000, 1),
        byte_rate=reader.integer("byte_rate", 512 * 1024, 1024),
        byte_burst=reader.integer("byte_burst", 2 * 1024 * 1024, 1024, 2**40),
        max_throttled_seconds=reader.number("max_throttled_seconds", 10.0, 1.0),
    )
    reader.finish()
    return config


def _path(reader: _Reader, name: str, default: str) -> str:
    allowed = 'a path starting with "/", or "" (off)'
    path: str = reader.get(name, default, str, allowed)
    if path and (not path.startswith("/") or any(c in path for c in " ?#{}")):
        raise ConfigError(reader.source, reader.key(name), path, allowed)
    return path


def _origins(reader: _Reader) -> tuple[str, ...]:
    allowed = 'a list of origins such as "https://chat.example.org" (scheme, host, port; no path), or ["*"]'
    origins = reader.strings("websocket_origins", (), allowed)
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
            raise ConfigError(reader.source, reader.key("websocket_origins"), origin, allowed)
    return origins


def _http(reader: _Reader) -> HTTPConfig:
    public_url = reader.get("public_url", "", str, "an http:// or https:// URL, or \"\"").rstrip("/")
    if public_url and not public_url.startswith(("http://", "https://")):
        raise ConfigError(reader.source, reader.key("public_url"), public_url, "an http:// or https:// URL, or \"\"")
    config = HTTPConfig(
        interfaces=reader.strings("interfaces", LOOPBACK_INTERFACES, "a list of IP addresses to listen on"),
        port=reader.integer("port", 5280, 0, 65535),
        tls_interfaces=reader.strings("tls_interfaces", ALL_INTERFACES, "a list of IP addresses to listen on"),
        tls_port=reader.integer("tls_port", 5281, 0, 65535),
        public_url=public_url,
        websocket_path=_path(reader, "websocket_path", "/xmpp-websocket"),
        bosh_path=_path(reader, "bosh_path", "/http-bind"),
        websocket_origins=_origins(reader),
        bosh_max_wait=reader.integer("bosh_max_wait", 60, 1, 3600),
        bosh_inactivity=reader.integer("bosh_inactivity", 60, 10, 3600),
        bosh_max_pending=reader.integer("bosh_max_pending", 4 * 1024 * 1024, 64 * 1024),
    )
    reader.finish()
    return config


def _tls(reader: _Reader, hosts: tuple[str, ...]) -> TLSConfig:
    min_version = reader.choice("min_version", "1.2", ("1.2", "1.3"))
    certificates: dict[str, Certificate] = {}
    table = reader.table_("certificates")
    for host, entry in table.items():
        key = f"{reader.key('certificates')}.{host}"
        if host not in hosts:
            raise ConfigError(reader.source, key, host, "a host listed in server.hosts")
        files = _Reader(reader.source, entry if isinstance(entry, dict) else {}, key)
        if not isinstance(entry, dict):
            raise ConfigError(reader.source, key, entry, "a table with cert and key")
        cert = Path(files.get("cert", "", str, "the path of a PEM certificate chain"))
        private = Path(files.get("key", "", str, "the path of a PEM private key"))
        files.finish()
        for name, file in (("cert", cert), ("key", private)):
            if not file.is_file():
                raise ConfigError(reader.source, f"{key}.{name}", str(file), "an existing readable file")
        certificates[host] = Certificate(cert, private)
    reader.finish()
    return TLSConfig(min_version=min_version, certificates=certificates)


def _auth(reader: _Reader) -> AuthConfig:
    mechanisms = reader.strings("mechanisms", MECHANISMS, "a list from " + ", ".join(MECHANISMS))
    for mechanism in mechanisms:
        if mechanism not in MECHANISMS:
            raise ConfigError(reader.source, reader.key("mechanisms"), mechanism, "one of " + ", ".join(MECHANISMS))
    config = AuthConfig(
        mechanisms=mechanisms,
        scram_iterations=reader.integer("scram_iterations", 4096, 4096, 10_000_000),
        max_failures_per_stream=reader.integer("max_failures_per_stream", 3, 1, 100),
        max_failure_delay=reader.number("max_failure_delay", 5.0, 0.0),
        lockout_after=reader.integer("lockout_after", 5, 1),
        address_lockout_after=reader.integer("address_lockout_after", 20, 1),
        account_lockout_after=reader.integer("account_lockout_after", 50, 1),
        lockout_seconds=reader.number("lockout_seconds", 600.0, 1.0),
    )
    reader.finish()
    return config


def _storage(reader: _Reader) -> StorageConfig:
    config = StorageConfig(
        backend=reader.choice("backend", "sqlite", ("sqlite", "postgresql")),
        sqlite_path=reader.get("sqlite_path", "xmppd.sqlite3", str, "a file path"),
        postgres_dsn=reader.get("postgres_dsn", DEFAULT_POSTGRES_DSN, str, "a postgresql:// URL"),
        postgres_schema=reader.get("postgres_schema", "public", str, "a schema name"),
        pool_size=reader.integer("pool_size", 10, 1, 1000),
    )
    reader.finish()
    return config


def _with_module_options(config: Config, modules: _Reader) -> Config:
    options: dict[str, dict[str, Any]] = {}
    listed_in = [("server.modules", config.user_host_modules)] + [
        (f'components."{component.domain}".modules', config.component_modules(component))
        for component in config.components
    ]
    for key, names in listed_in:
        for name in names:
            if name in options:
                continue
            try:
                declared: Mapping[str, Option] = getattr(load_module(name), "OPTIONS", {})
            except ImportError as exc:
                raise ConfigError(config.source, key, name, f"an installed module ({exc})") from None
            reader = _Reader(config.source, modules.table_(name), f"modules.{name}")
            options[name] = {option: _module_option(reader, option, spec) for option, spec in declared.items()}
            reader.finish()
    modules.finish()
    return dataclasses.replace(config, module_options=options)


def _module_option(reader: _Reader, key: str, option: Option) -> Any:
    if option.choices is not None:
        return reader.choice(key, option.default, option.choices)
    if option.minimum is not None:
        if float in option.types:  # seconds and the like: 30 and 0.5 both read as numbers
            return reader.number(key, option.default, option.minimum)
        return reader.integer(key, option.default, option.minimum)
    names = " or ".join(t.__name__ for t in option.types)
    value = reader.get(key, option.default, option.types, f"{names}: {option.doc}")
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(reader.source, reader.key(key), value, f"a list of strings: {option.doc}")
        return tuple(value)
    return value
