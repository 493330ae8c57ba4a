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
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from compositord.daemon.engine.api import LOOPBACK_HOSTS
from compositord.protocol.errors import FieldError, RemoteProtocolError
from compositord.protocol.params import validate_pipeline

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


def load_pipeline(file: Path | str) -> dict[str, Any]:
    """A validated, normalized pipeline from a TOML or YAML file, or ConfigError."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, [FieldError("", f"cannot read the file: {exc}")]) from exc
    doc = parse_pipeline_text(text, file)
    try:
        return validate_pipeline(doc)
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


@dataclass(frozen=True)
class Limits:
    """PROTOCOL.md section 1."""

    max_text_bytes: int = 64 * 1024
    max_binary_bytes: int = 32 * 1024 * 1024
    max_connections: int = 256
    messages_per_second: float = 2000.0
    send_timeout: float = 5.0
    # Rule S7 (docs/PROTOCOL-EXTENSIONS.md): a closed connection's params acks stay in getpipeline's
    # retired_acks this long, at most this many per node, so a reconnecting client re-sends only what was not processed.
    retired_acks_grace_s: float = 300.0
    max_retired_acks: int = 4096


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
    engine: EngineSettings = EngineSettings()

    def __post_init__(self) -> None:
        if self.output_dir is None:
            object.__setattr__(self, "output_dir", Path(self.state_dir) / "outputs")

    @classmethod
    def from_args(cls, args: Any, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from parsed ``compositord run`` options and the environment.

        The bearer token comes from ``$COMPOSITORD_TOKEN`` (not an option: the
        command line is visible to every user in ``ps``); allowed origins from
        ``--allow-origin`` (repeatable) or ``$COMPOSITORD_ALLOWED_ORIGINS``
        (comma-separated). The asset directory is ``--asset-dir``, else
        ``assets`` inside the state directory; the output directory is
        ``--output-dir``, else ``outputs`` inside the state directory (made
        when a sink first writes).
        """
        env = os.environ if environ is None else environ
        state_dir = default_state_dir(getattr(args, "state_dir", None), env)
        asset_dir = getattr(args, "asset_dir", None)
        output_dir = getattr(args, "output_dir", None)
        origins = getattr(args, "allow_origin", None) or [
            o.strip() for o in env.get("COMPOSITORD_ALLOWED_ORIGINS", "").split(",") if o.strip()
        ]
        config = getattr(args, "config", None)
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
            limits=ConnectionLimits(
                max_text_bytes=self.limits.max_text_bytes,
                messages_per_second=self.limits.messages_per_second,
                send_timeout=self.limits.send_timeout,
            ),
        )
