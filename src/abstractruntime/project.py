"""A project: the folder a daemon serves, its config file, and the settings in effect.

The project root is found the way git finds a repository: from the working folder upwards, the
first folder that holds `abstractruntime.toml`, a `pyproject.toml` with a
`[tool.abstractruntime]` table, or a `.abstractruntime/` data folder. Without one, the working
folder is the project. `serve`, `lsp`, the CLI and the clients all resolve settings here, so an
editor-started daemon serves exactly what `abstractruntime serve` would.

Precedence, highest first: command-line flags, environment variables, the config file, the
defaults. Paths in the config file are relative to the file's folder; paths from flags and the
environment are relative to the working folder. The kernel never imports this module.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_NAME = "abstractruntime.toml"
PYPROJECT = "pyproject.toml"
DATA_NAME = ".abstractruntime"
ENV_CONFIG = "ABSTRACTRUNTIME_CONFIG"


class ConfigError(ValueError):
    """A config file, environment variable or flag that cannot be used; the message names
    where it came from, the key and what was expected."""


@dataclass(frozen=True)
class Key:
    name: str  # dotted for nested tables: "model.provider"
    kind: str  # str | path | paths | strs | float | int | choice | table
    default: Any
    env: Optional[str]
    help: str
    choices: Tuple[str, ...] = ()


KEYS: List[Key] = [
    Key("workflows", "paths", ["workflows"], "ABSTRACTRUNTIME_WORKFLOWS", "workflow folders (env: separated by ':')"),
    Key("data", "path", DATA_NAME, "ABSTRACTRUNTIME_DATA", "the data folder: stores, token, discovery file, log"),
    Key(
        "store",
        "choice",
        "files",
        "ABSTRACTRUNTIME_STORE",
        "where runs live",
        ("files", "sqlite", "memory", "postgres"),
    ),
    Key(
        "dsn",
        "str",
        None,
        "ABSTRACTRUNTIME_DSN",
        "for store postgres: the libpq connection string or URL (keep the password out of it: PGPASSWORD, "
        "~/.pgpass or a service file)",
    ),
    Key(
        "log_level",
        "choice",
        "info",
        "ABSTRACTRUNTIME_LOG_LEVEL",
        "the daemon's log level",
        ("debug", "info", "warning", "error"),
    ),
    Key(
        "external",
        "strs",
        [],
        "ABSTRACTRUNTIME_EXTERNAL",
        "effect types a host outside the daemon executes (env: separated by ',')",
    ),
    Key(
        "reload_grace",
        "float",
        1.0,
        "ABSTRACTRUNTIME_RELOAD_GRACE",
        "seconds a save that would remove workflows waits before it applies (an in-place write can show "
        "the file empty for a moment)",
    ),
    Key(
        "event_log_mb",
        "float",
        32.0,
        "ABSTRACTRUNTIME_EVENT_LOG_MB",
        "memory for the event log that subscribers replay from (MB; the oldest events go first)",
    ),
    Key(
        "lease_s",
        "float",
        30.0,
        "ABSTRACTRUNTIME_LEASE_S",
        "for store postgres: how long a daemon's hold on a run outlasts its last heartbeat (a daemon that "
        "dies loses its runs to the others after this)",
    ),
    Key(
        "event_retention_days",
        "float",
        7.0,
        "ABSTRACTRUNTIME_EVENT_RETENTION_DAYS",
        "for store postgres: days the database keeps events for subscribers to replay",
    ),
    Key(
        "http",
        "str",
        None,
        "ABSTRACTRUNTIME_HTTP",
        "serve the web page and its WebSocket on [HOST:]PORT (loopback unless --allow-remote; see docs/web.md)",
    ),
    Key("cache_mb", "float", 32.0, "ABSTRACTRUNTIME_CACHE_MB", "memory for the stores' recent-checkpoint cache (MB)"),
    Key(
        "max_subscriptions",
        "int",
        64,
        "ABSTRACTRUNTIME_MAX_SUBSCRIPTIONS",
        "subscriptions one connection may hold",
    ),
    Key("model.provider", "str", None, "ABSTRACTRUNTIME_LLM_PROVIDER", "AbstractCore provider (ollama, openai, ...)"),
    Key("model.model", "str", None, "ABSTRACTRUNTIME_LLM_MODEL", "the model LLM_CALL uses"),
    Key("model.base_url", "str", None, "ABSTRACTRUNTIME_LLM_BASE_URL", "the provider's base URL"),
    Key(
        "model.api_key_env",
        "str",
        None,
        "ABSTRACTRUNTIME_LLM_API_KEY_ENV",
        "the NAME of the environment variable that holds the API key (never the key itself)",
    ),
    Key("model.timeout", "float", None, "ABSTRACTRUNTIME_LLM_TIMEOUT", "seconds per provider call"),
    Key("model.options", "table", {}, None, "other provider options"),
]
BY_NAME: Dict[str, Key] = {k.name: k for k in KEYS}
TABLES = {"model"}


@dataclass
class Setting:
    value: Any
    source: str  # "default", "<file>", "env NAME" or "flag --name"


@dataclass
class Project:
    root: str
    config_file: Optional[str]
    settings: Dict[str, Setting] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.settings[name].value

    def source(self, name: str) -> str:
        return self.settings[name].source

    @property
    def data_dir(self) -> str:
        return str(self.get("data"))

    @property
    def workflow_dirs(self) -> List[str]:
        return list(self.get("workflows"))

    @property
    def store(self) -> str:
        return str(self.get("store"))

    @property
    def log_level(self) -> str:
        return str(self.get("log_level"))

    @property
    def external(self) -> List[str]:
        return list(self.get("external"))

    def model(self, environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
        """{provider, model, options} for LLM_CALL, or None when no model is configured.

        The API key is read from the environment variable the settings name; a missing
        variable is an error naming it (the key never comes from a file or a flag)."""
        env = os.environ if environ is None else environ
        provider, model = self.get("model.provider"), self.get("model.model")
        options = dict(self.get("model.options") or {})
        if self.get("model.base_url"):
            options["base_url"] = self.get("model.base_url")
        if self.get("model.timeout") is not None:
            options["timeout"] = self.get("model.timeout")
        key_env = self.get("model.api_key_env")
        if not (provider or model):
            return None
        missing = [k for k, v in (("model.provider", provider), ("model.model", model)) if not v]
        if missing:
            where = ", ".join(f"{k} ({self.source(k)})" for k in ("model.provider", "model.model") if k not in missing)
            raise ConfigError(
                f"a model needs both model.provider and model.model; {' and '.join(missing)} is not set "
                f"(set: {where}). Use --llm-provider/--llm-model or the [model] table of {CONFIG_NAME}"
            )
        if key_env:
            if not env.get(key_env):
                raise ConfigError(
                    f"model.api_key_env ({self.source('model.api_key_env')}) names the environment variable "
                    f"{key_env}, which is not set"
                )
            options["api_key"] = env[key_env]
        return {"provider": provider, "model": model, "options": options}

    def describe(self) -> List[Dict[str, Any]]:
        """Every setting with its value and where it came from (for `abstractruntime config`)."""
        return [
            {
                "key": k.name,
                "value": redact_dsn(self.get(k.name)) if k.name == "dsn" else self.get(k.name),
                "source": self.source(k.name),
            }
            for k in KEYS
        ]


_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def redact_dsn(dsn: Any) -> Any:
    """A DSN fit to print: its password (key=value or URL form) replaced by ***."""
    if not isinstance(dsn, str):
        return dsn
    return _URL_PASSWORD.sub(r"\1***@", _PASSWORD.sub(r"\1***", dsn))


# -- finding the project --------------------------------------------------------------------------


def pyproject_table(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    table = data.get("tool", {}).get("abstractruntime")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.abstractruntime] must be a table")
    return table


def find_root(start: Optional[str] = None) -> Tuple[str, Optional[str], bool]:
    """(project root, its config file or None, whether a project marker was found at all)."""
    here = os.path.abspath(start or os.getcwd())
    d = here
    while True:
        cfg = os.path.join(d, CONFIG_NAME)
        if os.path.isfile(cfg):
            return d, cfg, True
        py = os.path.join(d, PYPROJECT)
        if os.path.isfile(py) and pyproject_table(py) is not None:
            return d, py, True
        if os.path.isdir(os.path.join(d, DATA_NAME)):
            return d, None, True
        parent = os.path.dirname(d)
        if parent == d:
            return here, None, False
        d = parent


def read_config(path: str) -> Dict[str, Any]:
    """The settings table of a config file (abstractruntime.toml, a pyproject.toml's
    [tool.abstractruntime], or a JSON file with the same keys), flattened and validated."""
    path = os.path.abspath(path)
    where = path
    if os.path.basename(path) == PYPROJECT:
        table = pyproject_table(path)
        if table is None:
            raise ConfigError(f"{path}: no [tool.abstractruntime] table")
        where = f"{path} [tool.abstractruntime]"
    else:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror or e}") from None
        try:
            if path.endswith(".json"):
                table = json.loads(raw)
                if isinstance(table, dict) and "llm" in table and "model" not in table:
                    table["model"] = table.pop("llm")  # the JSON --config of earlier versions
            else:
                table = tomllib.loads(raw.decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'TOML'}: {e}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: expected a table of settings")
    base = os.path.dirname(path)
    out: Dict[str, Any] = {}
    for name, value in _flatten(table, where):
        key = BY_NAME.get(name)
        if key is None:
            known = ", ".join(k.name for k in KEYS)
            raise ConfigError(f"{where}: unknown key {name!r} (known keys: {known})")
        out[name] = _check(key, value, where, base, from_text=False)
    return out


def _flatten(table: Dict[str, Any], where: str) -> List[Tuple[str, Any]]:
    out = []
    for k, v in table.items():
        if k in TABLES:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: key {k!r}: expected a table ([{k}])")
            for sub, sv in v.items():
                out.append((f"{k}.{sub}", sv))
        else:
            out.append((k, v))
    return out


def _check(key: Key, value: Any, where: str, base: str, *, from_text: bool) -> Any:
    """Validate (and, for text from the environment, parse) one value."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: key {key.name!r}: expected {expected}, got {value!r}")

    if key.kind in ("str", "choice", "path"):
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        if key.kind == "choice" and value not in key.choices:
            raise bad("one of " + ", ".join(key.choices))
        return os.path.normpath(os.path.join(base, os.path.expanduser(value))) if key.kind == "path" else value
    if key.kind in ("paths", "strs"):
        if from_text and isinstance(value, str):
            value = [x for x in value.split(os.pathsep if key.kind == "paths" else ",") if x.strip()]
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            raise bad("a list of strings")
        if key.kind == "paths":
            return [os.path.normpath(os.path.join(base, os.path.expanduser(x))) for x in value]
        return [x.strip() for x in value]
    if key.kind == "float":
        if from_text and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise bad("a positive number")
        return float(value)
    if key.kind == "int":
        if from_text and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise bad("a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise bad("a positive whole number")
        return value
    if key.kind == "table":
        if not isinstance(value, dict):
            raise bad("a table")
        return dict(value)
    raise AssertionError(key.kind)


def load(
    *,
    start: Optional[str] = None,
    config: Optional[str] = None,
    flags: Optional[Mapping[str, Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Project:
    """The project around `start` (default: the working folder) and its effective settings.

    `config` names the config file explicitly (else $ABSTRACTRUNTIME_CONFIG, else the one found
    walking up). `flags` maps setting names to values given on a command line (None: not given).
    """
    env = os.environ if environ is None else environ
    cwd = os.path.abspath(start or os.getcwd())
    explicit = config or env.get(ENV_CONFIG)
    if explicit:
        cfg_path: Optional[str] = os.path.abspath(os.path.join(cwd, os.path.expanduser(explicit)))
        assert cfg_path is not None
        if not os.path.isfile(cfg_path):
            source = "--config" if config else ENV_CONFIG
            raise ConfigError(f"{source}: config file {cfg_path} does not exist")
        root = os.path.dirname(cfg_path)
    else:
        root, cfg_path, _ = find_root(cwd)
    from_file = read_config(cfg_path) if cfg_path else {}
    project = Project(root=root, config_file=cfg_path)
    for key in KEYS:
        flag = (flags or {}).get(key.name)
        if flag is not None:
            value = _check(key, flag, f"flag {FLAG_NAMES[key.name]}", cwd, from_text=False)
            source = f"flag {FLAG_NAMES[key.name]}"
            if key.kind == "table" and key.name in from_file:  # options merge, the flag's win
                value, source = {**from_file[key.name], **value}, f"{cfg_path} + {source}"
            project.settings[key.name] = Setting(value, source)
        elif key.env and env.get(key.env):
            project.settings[key.name] = Setting(
                _check(key, env[key.env], f"environment variable {key.env}", cwd, from_text=True), f"env {key.env}"
            )
        elif key.name in from_file:
            project.settings[key.name] = Setting(from_file[key.name], cfg_path or "")
        else:
            default = _check(key, key.default, "default", root, from_text=False) if key.default else key.default
            project.settings[key.name] = Setting(default, "default")
    return project


# The command-line flag of each setting (serve and lsp take them all).
FLAG_NAMES = {
    "workflows": "--workflows",
    "data": "--data",
    "store": "--store",
    "dsn": "--dsn",
    "lease_s": "--lease-s",
    "http": "--http",
    "log_level": "--log-level",
    "reload_grace": "--reload-grace",
    "external": "--external",
    "model.provider": "--llm-provider",
    "model.model": "--llm-model",
    "model.base_url": "--llm-base-url",
    "model.api_key_env": "--llm-api-key-env",
    "model.timeout": "--llm-timeout",
    "model.options": "--llm-option",
}


def flags_from_args(args: Any) -> Dict[str, Any]:
    """The settings a parsed command line gives (the CLI's flag names), None where absent."""
    g: Callable[[str], Any] = lambda name: getattr(args, name, None)  # noqa: E731
    options = None
    items = g("llm_option") or []
    if items:
        options = {}
        for item in items:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise ConfigError(f"flag --llm-option: expected KEY=VALUE, got {item!r}")
            try:
                options[k] = json.loads(v)
            except ValueError:
                options[k] = v
    return {
        "workflows": g("workflows") or None,
        "data": g("data"),
        "store": g("store"),
        "dsn": g("dsn"),
        "lease_s": g("lease_s"),
        "http": g("http"),
        "log_level": g("log_level"),
        "reload_grace": g("reload_grace"),
        "external": g("external") or None,
        "model.provider": g("llm_provider"),
        "model.model": g("llm_model"),
        "model.base_url": g("llm_base_url"),
        "model.api_key_env": g("llm_api_key_env"),
        "model.timeout": g("llm_timeout"),
        "model.options": options,
    }
