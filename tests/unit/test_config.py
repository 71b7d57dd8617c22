"""Configuration: TOML to frozen dataclasses; every mistake names the file, key, value and what is allowed."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from xmppd.config import (
    DEFAULT_MODULES,
    MECHANISMS,
    AuthConfig,
    C2SConfig,
    Certificate,
    Config,
    ConfigError,
    HTTPConfig,
    StorageConfig,
    TLSConfig,
    load_config,
)
from xmppd.module import load_module

SHIPPED = Path(__file__).resolve().parents[2] / "conf" / "xmppd.toml"


def write(tmp_path: Path, text: str, name: str = "xmppd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.source == str(path)
    assert str(error).startswith(f"{path}: ")
    return error


# --- defaults and the shipped example ----------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None)
    assert config.source == "<defaults>"
    assert config.hosts == ("localhost",)
    assert config.data_dir == Path("data")
    assert config.log_level == "info"
    assert config.modules == DEFAULT_MODULES
    assert config.c2s == C2SConfig()
    assert config.c2s.port == 5222 and config.c2s.direct_tls_port == 5223
    assert config.c2s.require_encryption is True
    assert config.tls == TLSConfig()
    assert config.auth == AuthConfig()
    assert config.auth.mechanisms == MECHANISMS and config.auth.scram_iterations == 4096
    assert config.storage == StorageConfig()
    assert config.sqlite_file == Path("data") / "xmppd.sqlite3"
    # Every loaded module gets its declared defaults.
    assert config.options_for("register") == {
        "allow_registration": False,
        "instructions": "Choose a username and password.",
    }
    assert config.options_for("version") == {"hide_version": False, "show_os": False}
    assert set(config.options_for("contact_addresses").values()) == {()}
    assert set(config.module_options) == set(config.all_modules)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert dataclasses.replace(config, source="<defaults>") == load_config(None)


def test_dataclass_defaults_match_the_loader_defaults() -> None:
    config = load_config(None)
    assert dataclasses.replace(config, module_options={}) == Config()


def test_config_is_frozen() -> None:
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hosts = ("other.example",)  # type: ignore[misc]


def test_shipped_config_loads_and_equals_the_defaults() -> None:
    config = load_config(SHIPPED)
    assert config.source == str(SHIPPED)
    assert dataclasses.replace(config, source="<defaults>") == load_config(None)


def test_shipped_config_states_every_core_option() -> None:
    """conf/xmppd.toml is "the complete, commented example": every option is in it."""
    raw = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    assert set(raw["server"]) == {"hosts", "data_dir", "log_level", "modules", "conference", "upload"}
    for section, cls in (("c2s", C2SConfig), ("http", HTTPConfig), ("auth", AuthConfig), ("storage", StorageConfig)):
        assert set(raw[section]) == {f.name for f in dataclasses.fields(cls)}, section
    # The certificates table is shown commented out: it has no default entries to state.
    assert set(raw["tls"]) == {f.name for f in dataclasses.fields(TLSConfig)} - {"certificates"}
    assert "[tls.certificates." in SHIPPED.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "module",
    ["register", "version", "contact_addresses", "offline", "blocking", "caps", "pep", "vcard", "private",
     "smacks", "csi", "push", "webchat", "components.muc", "components.upload"],
)
def test_shipped_config_states_every_module_option(module: str) -> None:
    raw = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    assert set(raw["modules"][module]) == set(load_module(module).OPTIONS)


def test_a_full_valid_config(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("y")
    config = load_config(
        write(
            tmp_path,
            f"""
[server]
hosts = ["example.org", "bücher.example", "chat.example.net"]
data_dir = "{tmp_path / "data"}"
log_level = "debug"
modules = ["ping"]
conference = ""
upload = ""

[c2s]
interfaces = ["127.0.0.1"]
port = 15222
direct_tls_port = 0
require_encryption = false
max_stanza_size = 1024
auth_timeout = 5
max_connections = 1
max_connections_per_ip = 1

[tls]
min_version = "1.3"
[tls.certificates."example.org"]
cert = "{cert}"
key = "{key}"

[auth]
mechanisms = ["SCRAM-SHA-256"]
scram_iterations = 10000
max_failures_per_stream = 1
max_failure_delay = 0

[storage]
backend = "postgresql"
sqlite_path = "/abs/x.sqlite3"
postgres_dsn = "postgresql://u@db/x"
postgres_schema = "xmppd"
pool_size = 3
""",
        )
    )
    assert config.hosts == ("example.org", "bücher.example", "chat.example.net")
    assert config.data_dir == tmp_path / "data"
    assert config.modules == ("ping",)
    assert config.all_modules[-1] == "ping" and "roster" in config.all_modules
    assert "register" not in config.module_options
    assert config.c2s == C2SConfig(("127.0.0.1",), 15222, 0, False, 1024, 5.0, 1, 1)
    assert isinstance(config.c2s.auth_timeout, float)
    assert config.tls == TLSConfig("1.3", {"example.org": Certificate(cert, key)})
    assert config.auth == AuthConfig(("SCRAM-SHA-256",), 10000, 1, 0.0)
    assert config.storage == StorageConfig("postgresql", "/abs/x.sqlite3", "postgresql://u@db/x", "xmppd", 3)
    assert config.sqlite_file == Path("/abs/x.sqlite3")


def test_host_list_order_and_core_modules_are_not_duplicated(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nmodules = ["roster", "ping"]\n'))
    assert config.all_modules.count("roster") == 1


def test_module_options_are_read(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[modules.register]
allow_registration = true
instructions = "Hello"
[modules.version]
show_os = true
[modules.contact_addresses]
abuse = ["mailto:abuse@example.org", "xmpp:abuse@example.org"]
""",
        )
    )
    assert config.options_for("register") == {"allow_registration": True, "instructions": "Hello"}
    assert config.options_for("version") == {"hide_version": False, "show_os": True}
    assert config.options_for("contact_addresses")["abuse"] == (
        "mailto:abuse@example.org",
        "xmpp:abuse@example.org",
    )
    assert config.options_for("contact_addresses")["admin"] == ()


# --- mistakes: the message names file, key, value and what is allowed --------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[serverr]\nhosts = ['a.example']\n", "serverr", "{'hosts': ['a.example']}"),
        ("debug = true\n", "debug", "True"),
        ("[c2s]\nprot = 5222\n", "c2s.prot", "5222"),
        ("[server]\nhost = ['example.org']\n", "server.host", "['example.org']"),
        ("[storage]\nbackend = 'sqlite'\npath = 'x'\n", "storage.path", "'x'"),
        ("[modules.version]\nhide_version = true\nbogus = 1\n", "modules.version.bogus", "1"),
        ("[modules.register]\nallow = true\n", "modules.register.allow", "True"),
        ("[modules.nosuchmodule]\nx = 1\n", "modules.nosuchmodule", "{'x': 1}"),
        # A module's section when the module is not loaded is a mistake too.
        (
            "[server]\nmodules = []\n[modules.version]\nshow_os = true\n",
            "modules.version",
            "{'show_os': True}",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, key: str, value: str) -> None:
    error = error_for(tmp_path, text)
    assert error.key == key
    assert f"{key} = {value} is not valid: unknown key; known keys here: " in str(error)


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[auth]\nmechanism = ['PLAIN']\n")
    known = (
        "account_lockout_after, address_lockout_after, lockout_after, lockout_seconds, max_failure_delay, "
        "max_failures_per_stream, mechanisms, scram_iterations"
    )
    assert f"known keys here: {known}" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "value", "allowed"),
    [
        ("[c2s]\nport = '5222'\n", "c2s.port", "'5222'", "a whole number from 1 to 65535"),
        ("[c2s]\nport = true\n", "c2s.port", "True", "a whole number from 1 to 65535"),
        ("[c2s]\nport = 5222.0\n", "c2s.port", "5222.0", "a whole number from 1 to 65535"),
        ("[c2s]\nmax_connections = false\n", "c2s.max_connections", "False", "a whole number"),
        ("[c2s]\nrequire_encryption = 1\n", "c2s.require_encryption", "1", "true or false"),
        ("[c2s]\nrequire_encryption = 'yes'\n", "c2s.require_encryption", "'yes'", "true or false"),
        ("[c2s]\nauth_timeout = true\n", "c2s.auth_timeout", "True", "a number of at least 1.0"),
        ("[c2s]\nauth_timeout = '30'\n", "c2s.auth_timeout", "'30'", "a number of at least 1.0"),
        ("[c2s]\ninterfaces = '::'\n", "c2s.interfaces", "'::'", "a list of IP addresses"),
        ("[http]\npublic_url = 'ftp://x'\n", "http.public_url", "'ftp://x'", "an http:// or https:// URL"),
        ("[http]\nwebsocket_origins = ['http://x/']\n", "http.websocket_origins", "'http://x/'", "a list of origins"),
        ("[http]\nwebsocket_path = 'ws'\n", "http.websocket_path", "'ws'", 'a path starting with "/"'),
        ("[http]\ntls_port = 70000\n", "http.tls_port", "70000", "a whole number from 0 to 65535"),
        ("[modules.smacks]\nack_timeout = 0.5\n", "modules.smacks.ack_timeout", "0.5", "a number of at least 1"),
        ("[server]\nhosts = 'example.org'\n", "server.hosts", "'example.org'", "a list of domain names"),
        ("[server]\nhosts = [1]\n", "server.hosts", "[1]", "a list of domain names"),
        ("[server]\nmodules = 'ping'\n", "server.modules", "'ping'", "a list of module names"),
        ("[server]\ndata_dir = 1\n", "server.data_dir", "1", "a directory path"),
        (
            "[server]\nlog_level = 'verbose'\n",
            "server.log_level",
            "'verbose'",
            "one of debug, info, warning, error",
        ),
        ("[storage]\nbackend = 'mysql'\n", "storage.backend", "'mysql'", "one of sqlite, postgresql"),
        ("[tls]\nmin_version = 1.2\n", "tls.min_version", "1.2", "one of 1.2, 1.3"),
        ("[tls]\nmin_version = '1.1'\n", "tls.min_version", "'1.1'", "one of 1.2, 1.3"),
        ("[auth]\nmechanisms = ['DIGEST-MD5']\n", "auth.mechanisms", "'DIGEST-MD5'", "one of SCRAM-SHA-256"),
        ("server = 1\n", "server", "1", "a table"),
        ("[c2s]\n[c2s.port]\n", "c2s.port", "{}", "a whole number"),
        (
            "[modules.register]\nallow_registration = 'yes'\n",
            "modules.register.allow_registration",
            "'yes'",
            "bool: let anyone create an account",
        ),
        ("[modules.register]\ninstructions = 5\n", "modules.register.instructions", "5", "str: text shown"),
        ("[modules.version]\nhide_version = 1\n", "modules.version.hide_version", "1", "bool: answer with"),
        (
            "[modules.contact_addresses]\nabuse = 'mailto:a@example.org'\n",
            "modules.contact_addresses.abuse",
            "'mailto:a@example.org'",
            "list or tuple: URIs",
        ),
        (
            "[modules.contact_addresses]\nadmin = [1, 2]\n",
            "modules.contact_addresses.admin",
            "[1, 2]",
            "a list of strings: URIs",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, key: str, value: str, allowed: str) -> None:
    error = error_for(tmp_path, text)
    assert error.key == key
    assert f"{key} = {value} is not valid: {allowed}" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[c2s]\nport = 70000\n", "c2s.port", "70000"),
        ("[c2s]\nport = 0\n", "c2s.port", "0"),
        ("[c2s]\nport = -1\n", "c2s.port", "-1"),
        ("[c2s]\ndirect_tls_port = 65536\n", "c2s.direct_tls_port", "65536"),
        ("[c2s]\nmax_stanza_size = 100\n", "c2s.max_stanza_size", "100"),
        ("[c2s]\nauth_timeout = 0.5\n", "c2s.auth_timeout", "0.5"),
        ("[c2s]\nmax_connections = 0\n", "c2s.max_connections", "0"),
        ("[auth]\nscram_iterations = 1000\n", "auth.scram_iterations", "1000"),
        ("[auth]\nscram_iterations = 4095\n", "auth.scram_iterations", "4095"),
        ("[auth]\nmax_failures_per_stream = 0\n", "auth.max_failures_per_stream", "0"),
        ("[auth]\nmax_failure_delay = -1\n", "auth.max_failure_delay", "-1"),
        ("[storage]\npool_size = 0\n", "storage.pool_size", "0"),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, key: str, value: str) -> None:
    error = error_for(tmp_path, text)
    assert error.key == key
    assert f"{key} = {value} is not valid: a " in str(error)


def test_range_limits_are_inclusive(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "[c2s]\nport = 65535\ndirect_tls_port = 0\nmax_stanza_size = 1024\n"
            "[auth]\nscram_iterations = 4096\n",
        )
    )
    assert (config.c2s.port, config.c2s.direct_tls_port, config.c2s.max_stanza_size) == (65535, 0, 1024)
    assert "from 4096 to 10000000" in str(error_for(tmp_path, "[auth]\nscram_iterations = 10000001\n"))


@pytest.mark.parametrize(
    "host",
    [
        "Example.org",
        "user@example.org",
        "example.org/resource",
        "exa mple.org",
        "example.org.",
        "-bad.example",
        "",
    ],
)
def test_bad_host_names(tmp_path: Path, host: str) -> None:
    error = error_for(tmp_path, f"[server]\nhosts = ['{host}']\n")
    assert error.key == "server.hosts"
    assert f"server.hosts = {host!r} is not valid: lower-case domain names" in str(error)


@pytest.mark.parametrize(
    ("host", "prepared"),
    [
        ("Example.org", "example.org"),
        ("example.org.", "example.org"),
        ("xn--bcher-kva.example", "bücher.example"),
    ],
)
def test_bad_host_name_error_shows_the_prepared_form(tmp_path: Path, host: str, prepared: str) -> None:
    """Regression: an A-label host was refused as not "lower-case", which it is; the message now
    says which form is expected."""
    error = error_for(tmp_path, f"[server]\nhosts = ['{host}']\n")
    assert str(error).endswith(f"as RFC 7622 prepares them; here that is {prepared!r}")


def test_no_hosts(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[server]\nhosts = []\n")
    assert error.key == "server.hosts" and "at least one domain name" in str(error)


def test_certificate_for_an_unknown_host(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    error = error_for(
        tmp_path,
        f"[server]\nhosts = ['example.org']\n[tls.certificates.'other.example']\n"
        f"cert = '{tmp_path / 'c.pem'}'\nkey = '{tmp_path / 'c.pem'}'\n",
    )
    assert error.key == "tls.certificates.other.example"
    assert "'other.example' is not valid: a host listed in server.hosts" in str(error)


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_certificate_files_must_exist(tmp_path: Path, missing: str) -> None:
    present = tmp_path / "present.pem"
    present.write_text("x")
    files = {"cert": present, "key": present, missing: tmp_path / "nope.pem"}
    error = error_for(
        tmp_path,
        f"[server]\nhosts = ['example.org']\n[tls.certificates.'example.org']\n"
        f"cert = '{files['cert']}'\nkey = '{files['key']}'\n",
    )
    assert error.key == f"tls.certificates.example.org.{missing}"
    assert f"{str(tmp_path / 'nope.pem')!r} is not valid: an existing readable file" in str(error)


def test_certificate_entry_must_be_a_table(tmp_path: Path) -> None:
    error = error_for(
        tmp_path, "[server]\nhosts = ['example.org']\n[tls.certificates]\n'example.org' = 'x.pem'\n"
    )
    assert error.key == "tls.certificates.example.org" and "a table with cert and key" in str(error)


def test_certificate_entry_with_an_unknown_key(tmp_path: Path) -> None:
    error = error_for(
        tmp_path, "[server]\nhosts = ['example.org']\n[tls.certificates.'example.org']\nchain = 'x.pem'\n"
    )
    assert error.key == "tls.certificates.example.org.chain"


def test_unknown_module(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[server]\nmodules = ['ping', 'nosuchmodule']\n")
    assert error.key == "server.modules"
    assert "server.modules = 'nosuchmodule' is not valid: an installed module" in str(error)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[server\nhosts = ['example.org']\n")
    assert error.key == "(syntax)"
    assert "the file must be valid TOML" in str(error)
    error = error_for(tmp_path, "[c2s]\nport = 1\nport = 2\n")
    assert error.key == "(syntax)"


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "does not exist" in str(info.value)


# --- components ---------------------------------------------------------------------------------------

COMPONENT_MODULE = "tests.fixtures.echo"


def test_a_component_gets_disco_and_its_own_modules_and_a_parent(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"""
[server]
hosts = ["example.org", "chat.example.net"]
[components."rooms.chat.example.net"]
modules = ["{COMPONENT_MODULE}"]
[components."upload.elsewhere.test"]
modules = []
parent = "chat.example.net"
"""))
    rooms, upload, *defaults = config.components
    assert [d.domain for d in defaults] == [
        "conference.example.org", "conference.chat.example.net", "upload.example.org", "upload.chat.example.net"
    ]
    assert (rooms.domain, rooms.parent) == ("rooms.chat.example.net", "chat.example.net")
    assert config.component_modules(rooms) == ("disco", COMPONENT_MODULE)
    assert (upload.parent, config.component_modules(upload)) == ("chat.example.net", ("disco",))
    # The component's module is configured once, like any other; user hosts do not load it.
    assert COMPONENT_MODULE in config.all_modules and COMPONENT_MODULE not in config.user_host_modules


def test_every_host_gets_a_room_and_an_upload_service_unless_turned_off(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nhosts = ["a.example", "b.example"]\nconference = "muc"\n'
                                         'upload = "files"\n'))
    assert [(c.domain, c.parent, c.modules) for c in config.components] == [
        ("muc.a.example", "a.example", ("components.muc",)), ("muc.b.example", "b.example", ("components.muc",)),
        ("files.a.example", "a.example", ("components.upload",)),
        ("files.b.example", "b.example", ("components.upload",)),
    ]
    assert load_config(write(tmp_path, '[server]\nconference = ""\nupload = ""\n')).components == ()
    # No HTTP side, no upload service: its addresses would lead nowhere.
    no_http = load_config(write(tmp_path, '[server]\nconference = ""\n[http]\nport = 0\ntls_port = 0\n'))
    assert no_http.components == ()
    # A service of its own replaces a host's default one.
    own = load_config(write(tmp_path, '[server]\nhosts = ["a.example", "b.example"]\nupload = ""\n'
                                      '[components."rooms.a.example"]\nmodules = ["components.muc"]\n'))
    assert [c.domain for c in own.components] == ["rooms.a.example", "conference.b.example"]
    for key in ("conference", "upload"):
        with pytest.raises(ConfigError) as error:
            load_config(write(tmp_path, f'[server]\n{key} = "Not A Label"\n'))
        assert f"server.{key}" in str(error.value)


def test_a_component_without_a_parent_domain_belongs_to_the_first_host(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nhosts = ["a.example", "b.example"]\n[components."svc.test"]\n'))
    assert config.components[0].parent == "a.example"


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ('[components."Rooms.Example"]\n', 'components."Rooms.Example"', "lower-case domain names"),
        ('[components."localhost"]\n', 'components."localhost"', "not also in server.hosts"),
        ('[components."c.localhost"]\nparent = "other.test"\n', 'components."c.localhost".parent',
         "a host listed in server.hosts"),
        ('[components."c.localhost"]\nmodules = ["no.such.module"]\n', 'components."c.localhost".modules',
         "an installed module"),
        ('[components."c.localhost"]\nmodule = ["x"]\n', 'components."c.localhost".module', "unknown key"),
        ('[components]\n"c.localhost" = "muc"\n', 'components."c.localhost"', "a table with modules"),
    ],
)
def test_bad_components(tmp_path: Path, text: str, key: str, allowed: str) -> None:
    error = error_for(tmp_path, text)
    assert error.key == key
    assert allowed in str(error)
