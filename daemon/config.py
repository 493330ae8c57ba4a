"""Pipeline files (TOML or YAML), the embedded demo pipeline, and the daemon's settings.

A pipeline file has the shape of the ``createsession`` payload's ``pipeline``
(docs/INTERNALS.md): ``nodes`` keyed by node id, each with ``kind`` and
``params``, and a list of ``connections``. It is validated as a whole by
``protocol.params.validate_pipeline``; every problem is reported with the JSON
pointer of its field.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from compositord.daemon.engine.api import LOOPBACK_HOSTS
from compositord.protocol.budget import BudgetLimits
from compositord.protocol.destinations import LOOPBACK_ENTRIES, DestinationError, StreamDestinations
from compositord.protocol.envelope import MAX_TEXT_BYTES
from compositord.protocol.errors import FieldError, RemoteProtocolError
from compositord.protocol.params import DAEMON, ValidationContext, validate_pipeline

if TYPE_CHECKING:
    from compositord.daemon.control.server import ServerOptions

TOML_SUFFIXES = (".toml",)
YAML_SUFFIXES = (".yaml", ".yml")

DEMO_SESSION_NAME = "demo"

# colorbars as the background (in_0), a second, smaller source with another
# pattern into in_1 (no layer entry, so it gets the auto-PiP rect), and a title.
_DEMO_PIPELINE: dict[str, Any] = {
    "nodes": {
        "background": {
            "kind": "video::colorbars",
            "params": {"width": 1280, "height": 720, "pattern": "smpte", "animated": True},
        },
        "pip": {
            "kind": "video::colorbars",
            "params": {"width": 640, "height": 360, "pattern": "ramp", "animated": True, "timestamp": True},
        },
        "compositor": {
            "kind": "video::compositor",
            "params": {
                "width": 1280,
                "height": 720,
                "fps": 30,
                "num_inputs": 2,
                "text_overlays": [
                    {"id": "title", "text": "compositord", "rect": {"x": 40, "y": 40}, "font_size": 48},
                ],
            },
        },
    },
    "connections": [
        {"from_node": "background", "from_pin": "out", "to_node": "compositor", "to_pin": "in_0"},
        {"from_node": "pip", "from_pin": "out", "to_node": "compositor", "to_pin": "in_1"},
    ],
}


def demo_pipeline() -> dict[str, Any]:
    """The embedded demo pipeline, validated and normalized (a fresh copy)."""
    return validate_pipeline(copy.deepcopy(_DEMO_PIPELINE))


class ConfigError(Exception):
    """A pipeline file that cannot be used; ``errors`` names every problem by JSON pointer."""

    def __init__(self, file: Path, errors: list[FieldError] | tuple[FieldError, ...]) -> None:
        self.file = Path(file)
        self.errors = tuple(errors)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.file}: {error.path or '/'}: {error.message}" for error in self.errors]


def parse_pipeline_text(text: str, file: Path) -> Any:
    """The document in ``text``, parsed by the format ``file``'s suffix names."""
    suffix = file.suffix.lower()
    if suffix in TOML_SUFFIXES:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(file, [FieldError("", f"not valid TOML: {exc}")]) from exc
    if suffix in YAML_SUFFIXES:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(file, [FieldError("", f"not valid YAML: {' '.join(str(exc).split())}")]) from exc
    known = ", ".join((*TOML_SUFFIXES, *YAML_SUFFIXES))
    raise ConfigError(file, [FieldError("", f"unknown file type {suffix or '(no suffix)'!r}; use one of {known}")])


def load_pipeline(file: Path | str, *, context: ValidationContext = DAEMON) -> dict[str, Any]:
    """A validated, normalized pipeline from a TOML or YAML file, or ConfigError.

    ``context``: what the program that will run it allows (the daemon's rules by default).
    """
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, [FieldError("", f"cannot read the file: {exc}")]) from exc
    doc = parse_pipeline_text(text, file)
    try:
        return validate_pipeline(doc, context=context)
    except RemoteProtocolError as exc:
        raise ConfigError(file, exc.errors or (FieldError(exc.path or "", exc.message),)) from exc


def session_name_for(file: Path | str | None) -> str:
    """The session name of a pipeline: the file's stem, or the demo's name."""
    return DEMO_SESSION_NAME if file is None else Path(file).stem


# ---------------------------------------------------------------------------
# Settings


def default_state_dir(cli_value: str | Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--state-dir``, else ``$STATE_DIRECTORY`` (systemd's StateDirectory=), else ``./state``."""
    env = os.environ if environ is None else environ
    if cli_value:
        return Path(cli_value)
    # systemd passes a colon-separated list when a unit names several state directories.
    from_systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(from_systemd) if from_systemd else Path("state")


class SettingsError(ValueError):
    """A setting the daemon cannot start with; the message names the setting and what it accepts."""


DEFAULT_MIN_FREE_DISK_BYTES = 256 * 1024 * 1024
"""Sinks stop before free space in the output directory's file system falls under this (``min_free_disk_bytes``)."""

_SIZE = re.compile(r"\s*([0-9]+)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, *, setting: str) -> int:
    """Bytes from ``1073741824``, ``512M``, ``1GiB``, ``2 G`` (binary units); SettingsError naming ``setting``."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise SettingsError(f"{setting}: {text!r} is not a size (a whole number of bytes, or with K, M, G or T: 512M, 2G)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


# Environment variable -> Limits field: how an operator sets the budgets (systemd: Environment=).
LIMITS_ENVIRONMENT: Mapping[str, str] = {
    "COMPOSITORD_MAX_SESSION_BYTES": "max_session_bytes",
    "COMPOSITORD_MAX_TOTAL_BYTES": "max_total_bytes",
    "COMPOSITORD_MAX_SESSIONS": "max_sessions",
    "COMPOSITORD_MAX_TOTAL_PIXELS_PER_SECOND": "max_total_pixels_per_second",
    "COMPOSITORD_MIN_FREE_DISK_BYTES": "min_free_disk_bytes",
    "COMPOSITORD_MAX_PARTIAL_BYTES": "max_partial_bytes",
    "COMPOSITORD_MAX_QUEUED_BYTES": "max_queued_bytes",
    "COMPOSITORD_MAX_AUDIO_BYTES_PER_SECOND": "max_audio_bytes_per_second",
}
_COUNTS = frozenset({"max_sessions", "max_total_pixels_per_second"})


@dataclass(frozen=True)
class Limits:
    """PROTOCOL.md section 1, and the budgets of docs/OPERATIONS.md ("Budgets")."""

    max_text_bytes: int = MAX_TEXT_BYTES
    max_binary_bytes: int = 32 * 1024 * 1024
    max_connections: int = 256
    # Binary and text messages still arriving, all connections together (past it: that connection closed, 1009).
    max_partial_bytes: int = 256 * 1024 * 1024
    messages_per_second: float = 2000.0
    send_timeout: float = 5.0
    # Waiting for one client that reads too slowly (besides at most 4,096 messages; past it: closed, 1008).
    max_queued_bytes: int = 8 * 1024 * 1024
    # Pushed audio per connection (PROTOCOL.md section 6.1): about five streams of 48 kHz stereo float.
    max_audio_bytes_per_second: int = 2 * 1024 * 1024
    # Rule S7 (docs/PROTOCOL-EXTENSIONS.md): a closed connection's params acks stay in getpipeline's
    # retired_acks this long, at most this many per node, so a reconnecting client re-sends only what was not processed.
    retired_acks_grace_s: float = 300.0
    max_retired_acks: int = 4096
    # Budgets (protocol/budget.py), sized for a 2-core machine with 4 GB of memory: the daemon's own
    # code and libraries take about 160 MB, and the system needs the rest of the headroom.
    max_session_bytes: int = 1 << 30  # a 4K RGBA recording with its sources fits
    max_total_bytes: int = 2 << 30
    max_sessions: int = 16
    max_total_pixels_per_second: int = 250_000_000  # about 3840x2160 at 30 fps, or nine 1280x720 at 30 fps
    min_free_disk_bytes: int = DEFAULT_MIN_FREE_DISK_BYTES

    def __post_init__(self) -> None:
        for name in (
            "max_session_bytes",
            "max_total_bytes",
            "max_sessions",
            "max_total_pixels_per_second",
            "max_partial_bytes",
            "max_queued_bytes",
            "max_audio_bytes_per_second",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be at least 1")
        if self.min_free_disk_bytes < 0:
            raise SettingsError("min_free_disk_bytes: must not be negative (0 turns the floor off)")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Limits:
        """The defaults, with every budget the environment sets (SettingsError naming a bad one)."""
        values: dict[str, int] = {}
        for variable, name in LIMITS_ENVIRONMENT.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            if name in _COUNTS:
                if not text.isdigit():
                    raise SettingsError(f"{variable}: {text!r} is not a whole number")
                values[name] = int(text)
            else:
                values[name] = parse_size(text, setting=variable)
        return cls(**values)

    def budget(self) -> BudgetLimits:
        """The budgets as ``protocol.budget.check_session`` takes them."""
        return BudgetLimits(
            max_session_bytes=self.max_session_bytes,
            max_total_bytes=self.max_total_bytes,
            max_sessions=self.max_sessions,
            max_total_pixels_per_second=self.max_total_pixels_per_second,
        )


# Visible ASCII without spaces: an HTTP header carries only ASCII, so a token with any other character
# would never match in Authorization while it still matched in the (percent-decoded) query string.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def check_token(token: str | None) -> None:
    """SettingsError when the bearer token could not travel in an HTTP header (the message never shows it)."""
    if token is None or _TOKEN.fullmatch(token):
        return
    bad = next(index for index, char in enumerate(token) if not 0x21 <= ord(char) <= 0x7E)
    raise SettingsError(
        f"COMPOSITORD_TOKEN: character {bad + 1} of {len(token)} is not visible ASCII; a token must be ASCII letters,"
        " digits and punctuation without spaces, or it can never match in an Authorization header"
    )


ENGINE_MODES = ("process", "thread")


@dataclass(frozen=True)
class EngineSettings:
    """How sessions' engines run and are supervised (docs/OPERATIONS.md, "Engines")."""

    # "process": each session's engine in a supervised process of its own (the default);
    # "thread": a render thread inside the daemon's process (no isolation, no supervision).
    mode: str = "process"
    # An engine that reports no frame end for this many frame intervals (and at least MIN_STALL_S) is killed and restarted.
    stall_frames: int = 90
    # An engine that has not rendered its first frame this long after it was started is killed and restarted.
    start_timeout_s: float = 30.0
    # An engine process whose resident memory passes this is killed and restarted.
    memory_budget_mb: int = 2048
    # The first restart waits this long; each failure in a row doubles it, up to the maximum.
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 10.0
    # After this many failures within the window the session is parked: not restarted until it changes.
    park_after_failures: int = 5
    park_window_s: float = 120.0
    # Hosts a sink::stream listen URL may bind (loopback only unless the operator allows more).
    listen_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    # Benchmarks only: "module:function" run in each engine, returning an output listener (never from a client).
    output_listener: str | None = None
    listener_argument: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ENGINE_MODES:
            raise ValueError(f"engine.mode {self.mode!r}: use one of {', '.join(ENGINE_MODES)}")
        for name in ("stall_frames", "park_after_failures", "memory_budget_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine.{name} {getattr(self, name)!r}: must be at least 1")
        for name in ("start_timeout_s", "park_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"engine.{name} {getattr(self, name)!r}: must be positive")
        if not 0 <= self.restart_backoff_s <= self.restart_backoff_max_s:
            raise ValueError(
                f"engine.restart_backoff_s {self.restart_backoff_s!r}: must be between 0 and "
                f"engine.restart_backoff_max_s ({self.restart_backoff_max_s!r})"
            )


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 4545
    state_dir: Path = Path("state")
    asset_dir: Path = Path("state/assets")
    # Where sink::file / sink::y4m write (relative sink paths only); None: ``outputs`` in the state directory.
    output_dir: Path | None = None
    pipeline_file: Path | None = None  # None: the embedded demo pipeline
    token: str | None = field(default=None, repr=False)  # never printed
    allowed_origins: frozenset[str] = frozenset()
    limits: Limits = Limits()
    # Where sink::stream may send (protocol/destinations.py entries); loopback only unless the operator lists more.
    allowed_stream_destinations: tuple[str, ...] = LOOPBACK_ENTRIES
    # Where av::stream_in may listen (bind) for a publisher, same entries; loopback only unless the operator lists more.
    allowed_ingest_listen: tuple[str, ...] = LOOPBACK_ENTRIES
    # Where av::stream_in may pull from (connect to a server), same entries; loopback only unless the operator lists more.
    allowed_ingest_sources: tuple[str, ...] = LOOPBACK_ENTRIES
    engine: EngineSettings = EngineSettings()

    def __post_init__(self) -> None:
        if self.output_dir is None:
            object.__setattr__(self, "output_dir", Path(self.state_dir) / "outputs")
        check_token(self.token)
        self.stream_destinations()  # refuse a bad entry at start, not at the first stream sink
        self.ingest_listen()
        self.ingest_sources()

    def ingest_sources(self) -> StreamDestinations:
        try:
            return StreamDestinations.parse(self.allowed_ingest_sources)
        except DestinationError as exc:
            raise SettingsError(f"allowed_ingest_sources: {exc}") from None

    def ingest_listen(self) -> StreamDestinations:
        try:
            return StreamDestinations.parse(self.allowed_ingest_listen)
        except DestinationError as exc:
            raise SettingsError(f"allowed_ingest_listen: {exc}") from None

    def stream_destinations(self) -> StreamDestinations:
        try:
            return StreamDestinations.parse(self.allowed_stream_destinations)
        except DestinationError as exc:
            raise SettingsError(f"allowed_stream_destinations: {exc}") from None

    def validation_context(self) -> ValidationContext:
        """What this daemon allows beyond the schema (its stream destinations; never standard output)."""
        return ValidationContext(
            allow_stdout=False,
            stream_destinations=self.stream_destinations(),
            ingest_listen=self.ingest_listen(),
            ingest_sources=self.ingest_sources(),
        )

    @classmethod
    def from_args(cls, args: Any, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from parsed ``compositord run`` options and the environment.

        The bearer token comes from ``$COMPOSITORD_TOKEN`` (not an option: the
        command line is visible to every user in ``ps``); allowed origins from
        ``--allow-origin`` (repeatable) or ``$COMPOSITORD_ALLOWED_ORIGINS``
        (comma-separated). The asset directory is ``--asset-dir``, else
        ``assets`` inside the state directory; the output directory is
        ``--output-dir``, else ``outputs`` inside the state directory (made
        when a sink first writes). Budgets and the disk floor come from
        ``$COMPOSITORD_MAX_SESSION_BYTES`` and the other variables of
        :data:`LIMITS_ENVIRONMENT`; stream destinations from
        ``$COMPOSITORD_ALLOWED_STREAM_DESTINATIONS`` (comma-separated; unset:
        loopback only), where ``av::stream_in`` may listen from
        ``$COMPOSITORD_ALLOWED_INGEST_LISTEN`` and where it may pull from
        ``$COMPOSITORD_ALLOWED_INGEST_SOURCES`` (the same). A bad value is a :class:`SettingsError`.
        """
        env = os.environ if environ is None else environ
        state_dir = default_state_dir(getattr(args, "state_dir", None), env)
        asset_dir = getattr(args, "asset_dir", None)
        output_dir = getattr(args, "output_dir", None)
        origins = getattr(args, "allow_origin", None) or [
            o.strip() for o in env.get("COMPOSITORD_ALLOWED_ORIGINS", "").split(",") if o.strip()
        ]
        config = getattr(args, "config", None)
        destinations = env.get("COMPOSITORD_ALLOWED_STREAM_DESTINATIONS")
        ingest_listen = env.get("COMPOSITORD_ALLOWED_INGEST_LISTEN")
        ingest_sources = env.get("COMPOSITORD_ALLOWED_INGEST_SOURCES")
        engine = EngineSettings()
        overrides: dict[str, Any] = {
            "mode": getattr(args, "engine_mode", None) or env.get("COMPOSITORD_ENGINE_MODE") or None,
            "memory_budget_mb": getattr(args, "engine_memory_mb", None),
            "stall_frames": getattr(args, "engine_stall_frames", None),
            "park_after_failures": getattr(args, "engine_park_after", None),
            "park_window_s": getattr(args, "engine_park_window", None),
        }
        extra_hosts = tuple(getattr(args, "allow_listen_host", None) or ())
        if extra_hosts:
            overrides["listen_hosts"] = (*engine.listen_hosts, *extra_hosts)
        engine = dataclasses.replace(engine, **{key: value for key, value in overrides.items() if value is not None})
        return cls(
            host=getattr(args, "host", None) or cls.host,
            port=cls.port if getattr(args, "port", None) is None else int(args.port),
            state_dir=state_dir,
            asset_dir=Path(asset_dir) if asset_dir else state_dir / "assets",
            output_dir=Path(output_dir) if output_dir else state_dir / "outputs",
            pipeline_file=Path(config) if config else None,
            token=env.get("COMPOSITORD_TOKEN") or None,
            allowed_origins=frozenset(origins),
            limits=Limits.from_environ(env),
            allowed_stream_destinations=LOOPBACK_ENTRIES
            if destinations is None
            else tuple(entry.strip() for entry in destinations.split(",") if entry.strip()),
            allowed_ingest_listen=LOOPBACK_ENTRIES
            if ingest_listen is None
            else tuple(entry.strip() for entry in ingest_listen.split(",") if entry.strip()),
            allowed_ingest_sources=LOOPBACK_ENTRIES
            if ingest_sources is None
            else tuple(entry.strip() for entry in ingest_sources.split(",") if entry.strip()),
            engine=engine,
        )

    def server_options(self) -> ServerOptions:
        """The WebSocket server's options (imported here: check-config never loads the server)."""
        from compositord.daemon.control.connection import ConnectionLimits
        from compositord.daemon.control.server import ServerOptions

        return ServerOptions(
            host=self.host,
            port=self.port,
            token=self.token,
            allowed_origins=self.allowed_origins,
            max_connections=self.limits.max_connections,
            max_binary_bytes=self.limits.max_binary_bytes,
            max_partial_bytes=self.limits.max_partial_bytes,
            limits=ConnectionLimits(
                max_text_bytes=self.limits.max_text_bytes,
                messages_per_second=self.limits.messages_per_second,
                send_timeout=self.limits.send_timeout,
                mailbox_bytes=self.limits.max_queued_bytes,
                audio_bytes_per_second=self.limits.max_audio_bytes_per_second,
            ),
        )
