"""The parameters of every node kind: schema, validation, defaults.

The schema is declared with a handful of small field specs (:class:`Int`,
:class:`Number`, :class:`Pixels`, :class:`Bool`, :class:`Enum`, :class:`Color`,
:class:`Str`, :class:`RelativePath`, :class:`Object`, :class:`MapOf`,
:class:`ListOf`) plus a few cross-field checks per kind, so the same
declaration drives validation, :func:`with_defaults` and the generated
reference in ``docs/PARAMS.md`` (:func:`reference_markdown`).

Contracts (docs/INTERNALS.md):

- :func:`validate` returns *durable* params: what the client sent, normalized
  (numbers as float, integers as int, rect coordinates rounded to whole pixels,
  colours as ``#RRGGBBAA`` upper case, ``null`` of an optional field dropped).
  It never inserts defaults. Every problem is reported, each with the JSON
  pointer of its field, in one :class:`RemoteProtocolError` (``invalid_params``).
- :func:`with_defaults` takes validated params and returns every key present.
  Optional fields without a default ("auto": a layer's ``rect``, an overlay's
  ``width``/``height``, ...) are present as ``None``. The compositor's
  ``layers`` map gets an entry for every input slot ``in_0 .. in_{n-1}``, with
  ``z_index`` defaulting to the slot number.
- Keys that start with ``_`` are private (stamps, acks, a client's own notes):
  they are stripped at any depth, never stored and never an error, on every
  write path (``addnode``, tunes, ``createsession``, pipeline files), as
  PROTOCOL.md section 3 says. Node ids are not keys of params: ``_bars`` is a
  valid node id.
- Some rules depend on the program that validates, not on the schema: the
  daemon refuses standard output as a ``sink::y4m`` path and stream
  destinations outside the operator's allowlist; a one-shot command run by a
  local user allows both (:class:`ValidationContext`).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compositord.protocol import pointer, scenes
from compositord.protocol.destinations import ANY_DESTINATION, LOOPBACK_ONLY, StreamDestinations
from compositord.protocol.errors import ErrorCode, FieldError, LocalProtocolError, RemoteProtocolError

MAX_CANVAS = 7680
MAX_INPUTS = 16
MAX_OVERLAYS = 32
MIN_GAIN_DB = -60.0  # an input's gain; silence is `mute`
MAX_GAIN_DB = 24.0
AUDIO_SAMPLE_RATES = (48000, 44100)
# Rect coordinates may leave the canvas (a layer sliding in), but not absurdly far.
MAX_COORDINATE = 4 * MAX_CANVAS


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED = _Marker("REQUIRED")
"""Default of a field that must be given."""
AUTO = _Marker("AUTO")
"""Default of an optional field whose absence means "computed": ``None`` in :func:`with_defaults`."""


def is_private_key(key: Any) -> bool:
    """A key that starts with ``_``: stripped from params wherever it is (PROTOCOL.md section 3)."""
    return isinstance(key, str) and key.startswith("_")


_SHOWN_VALUE_CHARS = 64


def _shown(value: str) -> str:
    """A client's string as an error message quotes it: cut short, so an error is never larger than its cause."""
    return repr(value) if len(value) <= _SHOWN_VALUE_CHARS else repr(value[:_SHOWN_VALUE_CHARS]) + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


class Spec:
    """One field's rule. ``check`` appends FieldErrors and returns the normalized value."""

    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fill(self, value: Any) -> Any:
        """``value`` (already valid) with every nested default in place."""
        return value

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def default_text(self) -> str:
        if self.default is REQUIRED:
            return "required"
        if self.default is AUTO:
            return "auto"
        return _json_text(self.default)


def _json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        return _format_number(value)
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, list) and not value:
        return "[]"
    return str(value)


def _finite_number(value: Any, path: str, errors: list[FieldError]) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.append(FieldError(path, f"expected a number, got {_type_name(value)}"))
        return False
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(FieldError(path, "must be a finite number"))
        return False
    return True


def _in_range(value: float, low: float, high: float, path: str, errors: list[FieldError]) -> bool:
    if low <= value <= high:
        return True
    errors.append(FieldError(path, f"must be between {_format_number(low)} and {_format_number(high)}"))
    return False


@dataclass(frozen=True)
class Int(Spec):
    """An integer in ``[min, max]``; an integral float such as ``2.0`` is accepted as ``2``."""

    min: int
    max: int
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not _finite_number(value, path, errors):
            return None
        if isinstance(value, float):
            if not value.is_integer():
                errors.append(FieldError(path, "expected a whole number"))
                return None
            value = int(value)
        _in_range(value, self.min, self.max, path, errors)
        return value

    def describe(self) -> str:
        return f"integer {self.min}..{self.max}"


@dataclass(frozen=True)
class Number(Spec):
    """A finite number in ``[min, max]``, stored as float."""

    min: float
    max: float
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not _finite_number(value, path, errors):
            return None
        if _in_range(value, self.min, self.max, path, errors):
            return float(value)
        return None

    def describe(self) -> str:
        return f"number {_format_number(self.min)}..{_format_number(self.max)}"


@dataclass(frozen=True)
class Pixels(Spec):
    """A coordinate or size in pixels: any finite number, rounded to the nearest whole pixel (halves up)."""

    min: int
    max: int
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not _finite_number(value, path, errors):
            return None
        if not _in_range(value, self.min, self.max, path, errors):
            return None
        return math.floor(value + 0.5)

    def describe(self) -> str:
        return f"pixels {self.min}..{self.max} (rounded)"


@dataclass(frozen=True)
class Bool(Spec):
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, bool):
            errors.append(FieldError(path, f"expected true or false, got {_type_name(value)}"))
        return value

    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True)
class Enum(Spec):
    choices: tuple[str, ...]
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            shown = _shown(value) if isinstance(value, str) else _type_name(value)
            errors.append(FieldError(path, f"must be one of {', '.join(self.choices)}; got {shown}"))
        return value

    def describe(self) -> str:
        return " \\| ".join(f"`{c}`" for c in self.choices)


_COLOR = re.compile(r"#([0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?")


@dataclass(frozen=True)
class Color(Spec):
    """``#RRGGBB`` or ``#RRGGBBAA`` (hex, any case); stored as ``#RRGGBBAA`` upper case."""

    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        match = _COLOR.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            errors.append(FieldError(path, 'expected a colour "#RRGGBB" or "#RRGGBBAA"'))
            return value
        return "#" + (match.group(1) + (match.group(2) or "FF")).upper()

    def describe(self) -> str:
        return "colour `#RRGGBB` or `#RRGGBBAA`"


@dataclass(frozen=True)
class Str(Spec):
    max_len: int
    min_len: int = 0
    pattern: str | None = None
    pattern_doc: str = ""
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, str):
            errors.append(FieldError(path, f"expected a string, got {_type_name(value)}"))
        elif len(value) < self.min_len:
            errors.append(
                FieldError(path, "must not be empty" if self.min_len == 1 else f"must have at least {self.min_len} characters")
            )
        elif len(value) > self.max_len:
            errors.append(FieldError(path, f"must have at most {self.max_len} characters"))
        elif "\x00" in value:
            errors.append(FieldError(path, "must not contain a NUL character"))
        elif self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            errors.append(FieldError(path, f"must be {self.pattern_doc or 'of the form ' + self.pattern}"))
        return value

    def describe(self) -> str:
        text = (
            f"string, {self.min_len}..{self.max_len} characters" if self.min_len else f"string, at most {self.max_len} characters"
        )
        return f"{text}, {self.pattern_doc}" if self.pattern_doc else text


@dataclass(frozen=True)
class RelativePath(Spec):
    """A relative path inside a directory the daemon chooses (the daemon does the sandboxing).

    Refused here already: empty, absolute (``/x``, ``\\x``, ``C:x``), a ``..``
    component, a NUL character, backslashes (one separator on every platform).
    """

    max_len: int = 1024
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, str):
            errors.append(FieldError(path, f"expected a string, got {_type_name(value)}"))
            return value
        problem = self.problem(value)
        if problem:
            errors.append(FieldError(path, problem))
        return value

    def problem(self, value: str) -> str | None:
        problem = None
        if not value:
            problem = "must not be empty"
        elif len(value) > self.max_len:
            problem = f"must have at most {self.max_len} characters"
        elif "\x00" in value:
            problem = "must not contain a NUL character"
        elif "\\" in value:
            problem = "must use / as separator, not \\"
        elif value.startswith("/") or re.match(r"[A-Za-z]:", value):
            problem = "must be a relative path"
        elif ".." in value.split("/"):
            problem = "must not contain a '..' component"
        return problem

    def describe(self) -> str:
        return "relative path (no leading `/`, no `..`)"


@dataclass(frozen=True)
class FontName(RelativePath):
    """``"default"`` (the bundled font), or a font file inside the asset directory, checked like any asset path."""

    bundled: str = "default"

    def problem(self, value: str) -> str | None:
        return None if value == self.bundled else super().problem(value)

    def describe(self) -> str:
        return f'`"{self.bundled}"` or a relative path (no leading `/`, no `..`)'


@dataclass(frozen=True)
class Object(Spec):
    """A JSON object with known fields; an unknown key is an error (never dropped)."""

    fields: Mapping[str, Spec]
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, Mapping):
            errors.append(FieldError(path, f"expected an object, got {_type_name(value)}"))
            return value
        result: dict[str, Any] = {}
        for key, child in value.items():
            if is_private_key(key):
                continue
            spec = self.fields.get(key)
            child_path = pointer.join(path, key)
            if spec is None:
                errors.append(FieldError(child_path, "unknown key"))
            elif child is None and spec.default is AUTO:
                continue  # null of an optional field means "absent"
            else:
                result[key] = spec.check(child, child_path, errors)
        for key, spec in self.fields.items():
            if spec.default is REQUIRED and key not in value:
                errors.append(FieldError(pointer.join(path, key), "required"))
        return result

    def fill(self, value: Any) -> Any:
        result: dict[str, Any] = {}
        for key, spec in self.fields.items():
            if key in value:
                result[key] = spec.fill(value[key])
            elif spec.default is AUTO:
                result[key] = None
            elif spec.default is not REQUIRED:
                result[key] = spec.fill(copy.deepcopy(spec.default))
        return result

    def describe(self) -> str:
        return "object"


@dataclass(frozen=True)
class MapOf(Spec):
    """An object whose keys match ``key_pattern`` and whose values all follow ``value``."""

    key_pattern: str
    key_doc: str
    value: Spec
    default: Any = REQUIRED
    doc: str = ""
    keys_are_names: bool = False  # True: keys are ids chosen by the client (``_`` is then an ordinary first character)
    max_items: int | None = None
    key_placeholder: str = "in_N"  # how docs/PARAMS.md names a key of this map

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, Mapping):
            errors.append(FieldError(path, f"expected an object, got {_type_name(value)}"))
            return value
        if self.max_items is not None and len(value) > self.max_items:
            errors.append(FieldError(path, f"must have at most {self.max_items} entries"))
            return value
        result: dict[str, Any] = {}
        for key, child in value.items():
            if is_private_key(key) and not self.keys_are_names:
                continue
            child_path = pointer.join(path, key)
            # Keys are strings in JSON, but a YAML pipeline file can give numbers.
            if not isinstance(key, str) or re.fullmatch(self.key_pattern, key) is None:
                errors.append(FieldError(child_path, f"key must be {self.key_doc}"))
            else:
                result[key] = self.value.check(child, child_path, errors)
        return result

    def fill(self, value: Any) -> Any:
        return {key: self.value.fill(child) for key, child in value.items()}

    def describe(self) -> str:
        bound = f", at most {self.max_items}" if self.max_items is not None else ""
        return f"map: {self.key_doc} → object{bound}"


@dataclass(frozen=True)
class ListOf(Spec):
    """A list of at most ``max_items`` items; with ``unique``, that key of each item is unique."""

    item: Spec
    max_items: int
    unique: str | None = None
    default: Any = REQUIRED
    doc: str = ""

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, list):
            errors.append(FieldError(path, f"expected an array, got {_type_name(value)}"))
            return value
        if len(value) > self.max_items:
            errors.append(FieldError(path, f"must have at most {self.max_items} items"))
            return value
        result = [self.item.check(child, pointer.join(path, index), errors) for index, child in enumerate(value)]
        if self.unique is not None:
            seen: dict[Any, int] = {}
            for index, child in enumerate(value):
                key = child.get(self.unique) if isinstance(child, Mapping) else None
                if not isinstance(key, str):
                    continue
                if key in seen:
                    errors.append(
                        FieldError(
                            pointer.join(path, index, self.unique), f"duplicate {self.unique} {key!r} (also at index {seen[key]})"
                        )
                    )
                else:
                    seen[key] = index
        return result

    def fill(self, value: Any) -> Any:
        return [self.item.fill(child) for child in value]

    def describe(self) -> str:
        unique = f", `{self.unique}` unique" if self.unique else ""
        return f"list of objects, at most {self.max_items}{unique}"


# ---------------------------------------------------------------------------
# Node kinds


SOURCE = "source"
COMPOSITOR = "compositor"
SINK = "sink"

# The kinds other modules name: the one compositor kind, the input that takes pushed frames, the thumbnail sink.
COMPOSITOR_KIND = "video::compositor"
PUSH_KIND = "video::push"
AUDIO_PUSH_KIND = "audio::push"  # takes pushed audio (PROTOCOL.md section 6.1)
# Kinds named audio::* make sound and no picture: no texture, no pixels in the budgets.
AUDIO_KIND_PREFIX = "audio::"
PREVIEW_KIND = "sink::preview"
TONE_KIND = "audio::tone"


@dataclass(frozen=True)
class CrossCheck:
    """A rule between fields; runs only when the top-level fields it ``needs`` are valid themselves."""

    needs: tuple[str, ...]
    run: Callable[[dict[str, Any], list[FieldError]], None]


@dataclass(frozen=True)
class ValidationContext:
    """What the validating program allows beyond the schema.

    The default is the daemon's: clients are remote, so no standard output
    and streams only to loopback unless the operator lists more
    destinations. :data:`ONE_SHOT` is for a command a local user runs on
    their own behalf (``compositord render``), who could write to their
    terminal or open a connection anyway.
    """

    allow_stdout: bool = False
    stream_destinations: StreamDestinations = LOOPBACK_ONLY
    ingest_listen: StreamDestinations = LOOPBACK_ONLY  # where an av::stream_in node may listen (bind)
    ingest_sources: StreamDestinations = LOOPBACK_ONLY  # where an av::stream_in node may pull from


DAEMON = ValidationContext()
ONE_SHOT = ValidationContext(
    allow_stdout=True, stream_destinations=ANY_DESTINATION, ingest_listen=ANY_DESTINATION, ingest_sources=ANY_DESTINATION
)


@dataclass(frozen=True)
class PolicyCheck:
    """A rule that depends on the :class:`ValidationContext`; runs only when the fields it ``needs`` are valid."""

    needs: tuple[str, ...]
    run: Callable[[dict[str, Any], list[FieldError], ValidationContext], None]


@dataclass(frozen=True)
class NodeKind:
    name: str
    role: str  # SOURCE, COMPOSITOR or SINK
    schema: Object
    summary: str
    cross_checks: tuple[CrossCheck, ...] = ()
    notes: tuple[str, ...] = ()
    fill_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    policy_checks: tuple[PolicyCheck, ...] = ()


def _effective(params: Mapping[str, Any], schema: Object, key: str) -> Any:
    """The value a validated field has (given or default); None when it was itself invalid."""
    if key in params:
        return params[key]
    return schema.fields[key].default


def _even_dimensions_check(schema: Object, format_key: str) -> CrossCheck:
    """Chroma of nv12 / i420 is subsampled 2x2: those formats need even sizes."""

    def run(params: dict[str, Any], errors: list[FieldError]) -> None:
        fmt = _effective(params, schema, format_key)
        if fmt not in ("nv12", "i420"):
            return
        for key in ("width", "height"):
            if _effective(params, schema, key) % 2:
                errors.append(
                    FieldError(pointer.join("", key), f"must be even for {format_key} {fmt} (chroma is subsampled 2x2)")
                )

    return CrossCheck((format_key, "width", "height"), run)


def _rect(*, sizes_required: bool, doc: str) -> Object:
    size_default = REQUIRED if sizes_required else AUTO
    coordinate_default = REQUIRED if sizes_required else 0
    return Object(
        {
            "x": Pixels(-MAX_COORDINATE, MAX_COORDINATE, default=coordinate_default, doc="left edge, canvas pixels"),
            "y": Pixels(-MAX_COORDINATE, MAX_COORDINATE, default=coordinate_default, doc="top edge, canvas pixels"),
            "width": Pixels(
                1, MAX_COORDINATE, default=size_default, doc="" if sizes_required else "auto: the content's own size"
            ),
            "height": Pixels(
                1, MAX_COORDINATE, default=size_default, doc="" if sizes_required else "auto: the content's own size"
            ),
        },
        default=AUTO if sizes_required else {},
        doc=doc,
    )


_OVERLAY_ID = Str(64, min_len=1, doc="unique within its list")
_OPACITY = Number(0, 1, default=1.0)
_ROTATION = Number(-360, 360, default=0.0, doc="degrees, clockwise, about the centre")

_LAYER = Object(
    {
        "rect": _rect(sizes_required=True, doc="auto: the auto-PiP rect of the slot"),
        "aspect_fit": Bool(default=True, doc="fit the source into rect keeping its aspect ratio"),
        "opacity": _OPACITY,
        "z_index": Int(-1000, 1000, default=AUTO, doc="auto: the slot number"),
        "rotation_degrees": _ROTATION,
        "mirror_horizontal": Bool(default=False),
        "mirror_vertical": Bool(default=False),
        "crop_zoom": Number(1, 64, default=1.0, doc="1 shows the whole source"),
        "crop_x": Number(0, 1, default=0.5, doc="centre of the crop, fraction of source width"),
        "crop_y": Number(0, 1, default=0.5, doc="centre of the crop, fraction of source height"),
        "crop_shape": Enum(("rect", "circle"), default="rect"),
        "visible": Bool(default=True),
        "audio": Object(
            {
                "gain_db": Number(MIN_GAIN_DB, MAX_GAIN_DB, default=0.0, doc="the input's gain in the mix (dB)"),
                "mute": Bool(default=False),
                "follow_video": Bool(
                    default=False,
                    doc="gain times the layer's presence on the program output: its opacity, 0 while not visible, crossfading with scene transitions",
                ),
            },
            default={},
            doc="the input's sound in the compositor's mix (docs/AUDIO.md)",
        ),
    }
)

_TEXT_OVERLAY = Object(
    {
        "id": _OVERLAY_ID,
        "text": Str(1000, default=""),
        "rect": _rect(sizes_required=False, doc="width/height auto: the measured text size"),
        "color": Color(default="#FFFFFFFF"),
        "font_size": Number(1, 512, default=32.0, doc="pixels"),
        "font": FontName(
            max_len=256, default="default", doc='`"default"`: the bundled font; else a TTF/OTF file inside the asset directory'
        ),
        "opacity": _OPACITY,
        "rotation_degrees": _ROTATION,
        "z_index": Int(-1000, 1000, default=1000),
        "mirror_horizontal": Bool(default=False),
        "mirror_vertical": Bool(default=False),
    }
)

_IMAGE_OVERLAY = Object(
    {
        "id": _OVERLAY_ID,
        "asset_path": RelativePath(doc="inside the asset directory"),
        "rect": _rect(sizes_required=False, doc="width/height auto: the image's own size"),
        "opacity": _OPACITY,
        "rotation_degrees": _ROTATION,
        "z_index": Int(-1000, 1000, default=1000),
        "mirror_horizontal": Bool(default=False),
        "mirror_vertical": Bool(default=False),
    }
)

_LAYER_KEY = r"in_(0|[1-9][0-9]?)"

_LAYOUT = {
    "layers": MapOf(_LAYER_KEY, "an input pin `in_N` with N < num_inputs", _LAYER, default={}),
    "text_overlays": ListOf(_TEXT_OVERLAY, MAX_OVERLAYS, unique="id", default=[]),
    "image_overlays": ListOf(_IMAGE_OVERLAY, MAX_OVERLAYS, unique="id", default=[]),
}
_SCENE = Object(_LAYOUT)
_SCENE_NAME_DOC = "a scene name (letters, digits, '_', '.', '-'; not '.' or '-' first)"


def _scene_name(doc: str) -> Str:
    return Str(64, min_len=1, pattern=scenes.SCENE_NAME_PATTERN, pattern_doc=_SCENE_NAME_DOC, default=AUTO, doc=doc)


_TRANSITION = Object(
    {
        "kind": Enum(scenes.TRANSITION_KINDS, default="cut"),
        "duration_ms": Int(0, scenes.MAX_DURATION_MS, default=500, doc="counted in output frames: round(ms * fps / 1000)"),
        "easing": Enum(scenes.EASINGS, default="linear"),
        "direction": Enum(scenes.DIRECTIONS, default="left", doc="slide, push, wipe: where the picture moves"),
    },
    default={},
    doc="how the next change of `program_scene` is shown",
)

_COMPOSITOR = Object(
    {
        "width": Int(1, MAX_CANVAS, default=1280),
        "height": Int(1, MAX_CANVAS, default=720),
        "fps": Int(1, 240, default=30),
        "background": Color(default="#000000FF"),
        "num_inputs": Int(0, MAX_INPUTS, default=2, doc="input pins in_0 .. in_{num_inputs-1}"),
        "color_matrix": Enum(("bt601", "bt709"), default="bt709", doc="for nv12 / i420 output (limited range)"),
        "output_format": Enum(("rgba8", "nv12", "i420"), default="rgba8"),
        **_LAYOUT,
        "scenes": MapOf(
            scenes.SCENE_NAME_PATTERN,
            _SCENE_NAME_DOC,
            _SCENE,
            default={},
            max_items=scenes.MAX_SCENES,
            key_placeholder="NAME",
            doc="named layouts; empty: the top-level layout is the one scene",
        ),
        "program_scene": _scene_name("the scene on the output pin `out`; required when `scenes` is not empty"),
        "preview_scene": _scene_name("the scene on the output pin `preview`; auto: nothing is drawn there"),
        "transition": _TRANSITION,
        "transition_position": Number(
            0, 1, default=AUTO, doc="the T-bar: holds the output at this point of `transition` to `preview_scene`; auto: no T-bar"
        ),
        "audio": Object(
            {
                "enabled": Bool(default=True, doc="false: no sound on the outputs (inputs are not read)"),
                "sample_rate": Int(min(AUDIO_SAMPLE_RATES), max(AUDIO_SAMPLE_RATES), default=48000, doc="48000 or 44100 (Hz)"),
                "channels": Enum(("stereo", "mono"), default="stereo", doc="mono: (left + right) / 2"),
            },
            default={},
            doc="the mix of the inputs' sound on the output pin `out` (docs/AUDIO.md)",
        ),
    }
)


def _no_such_input(num_inputs: int) -> str:
    return (
        f"no such input: num_inputs is {num_inputs} (pins in_0 .. in_{num_inputs - 1})"
        if num_inputs
        else "no such input: num_inputs is 0"
    )


def _check_layer_slots(params: dict[str, Any], errors: list[FieldError]) -> None:
    num_inputs = _effective(params, _COMPOSITOR, "num_inputs")
    if not isinstance(num_inputs, int):
        return
    layouts: list[tuple[str, Any]] = [("", params)]
    if isinstance(params.get("scenes"), Mapping):
        layouts += [(pointer.join("/scenes", name), scene) for name, scene in params["scenes"].items()]
    for base, layout in layouts:
        layers = layout.get("layers") if isinstance(layout, Mapping) else None
        if not isinstance(layers, Mapping):
            continue
        for key in layers:
            if re.fullmatch(_LAYER_KEY, key) and int(key[3:]) >= num_inputs:
                errors.append(FieldError(pointer.join(base, "layers", key), _no_such_input(num_inputs)))


def _check_scenes(params: dict[str, Any], errors: list[FieldError]) -> None:
    """``program_scene`` and ``preview_scene`` name scenes; with scenes, the top-level layout is empty."""
    named = params.get("scenes") or {}
    listed = ", ".join(sorted(named)) or "none"
    if named and params.get("program_scene") is None:
        errors.append(FieldError("/program_scene", "required when scenes is not empty"))
    for key in ("program_scene", "preview_scene"):
        name = params.get(key)
        if name is not None and name not in named:
            errors.append(FieldError(pointer.join("", key), f"no scene {name!r} in scenes (scenes: {listed})"))
    if named:
        for key in scenes.SCENE_LAYOUT_KEYS:
            if params.get(key):
                errors.append(
                    FieldError(pointer.join("", key), f"must be empty when scenes is given: each scene has its own {key}")
                )


def _check_audio_format(params: dict[str, Any], errors: list[FieldError]) -> None:
    audio = params.get("audio")
    rate = audio.get("sample_rate") if isinstance(audio, Mapping) else None
    if rate is not None and rate not in AUDIO_SAMPLE_RATES:
        choices = " or ".join(str(r) for r in AUDIO_SAMPLE_RATES)
        errors.append(FieldError("/audio/sample_rate", f"must be {choices} (Hz), not {rate}"))


def _filled_layers(given: Mapping[str, Any], num_inputs: int) -> dict[str, Any]:
    layers: dict[str, Any] = {}
    for slot in range(num_inputs):
        key = f"in_{slot}"
        layer = given[key] if key in given else _LAYER.fill({})
        if layer["z_index"] is None:
            layer = {**layer, "z_index": slot}
        layers[key] = layer
    return layers


def _fill_compositor(full: dict[str, Any]) -> dict[str, Any]:
    full["layers"] = _filled_layers(full["layers"], full["num_inputs"])
    for scene in full["scenes"].values():
        scene["layers"] = _filled_layers(scene["layers"], full["num_inputs"])
    return full


_SIZE_FIELDS = {
    "width": Int(1, MAX_CANVAS, default=1280),
    "height": Int(1, MAX_CANVAS, default=720),
}

_CODEC = Enum(("h264", "vp9", "av1"), default="h264")
_CONTAINER_CODECS = {"mp4": ("h264", "vp9", "av1"), "mkv": ("h264", "vp9", "av1"), "webm": ("vp9", "av1")}
_PRESET = Enum(
    ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
    default="veryfast",
    doc="speed/quality trade-off, mapped to each encoder's own scale",
)
_OUTPUT_PATH = RelativePath(max_len=4096, doc="inside the daemon's output directory (`--output-dir`)")
# The audio codecs each container holds here (daemon/engine/sinks/audio_track.py MUXER_AUDIO_CODECS; the
# first is what `auto` means). Opus in MP4 is refused: most MP4 players cannot play it.
_CONTAINER_AUDIO = {"mp4": ("aac",), "mkv": ("aac", "opus"), "webm": ("opus",)}
_AUDIO_BITRATE = Int(16, 512, default=128, doc="the audio encoder's bit rate, in kbit/s")
_AUDIO_RULE = (
    "The output has sound when the first frame it writes carries sound (its compositor mixes an input with sound):"
    " sample rate and layout are the compositor's. A first frame without sound makes a video-only output; sound that"
    " comes later is not recorded (stats `audio_blocks_ignored`): send the node's params again to start a new output."
)


def _check_sink_file_container(params: dict[str, Any], errors: list[FieldError]) -> None:
    container = params.get("container")
    path = params["path"]  # required, and this check runs only when it is valid
    if container is None:
        extension = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
        if extension not in _CONTAINER_CODECS:
            errors.append(
                FieldError(
                    "/container",
                    f"required: the path's extension {('.' + extension) if extension else '(none)'} names no container (mp4, webm, mkv)",
                )
            )
            return
        container = extension
    codec = params.get("codec", _CODEC.default)
    if container in _CONTAINER_CODECS and codec in _CODEC.choices and codec not in _CONTAINER_CODECS[container]:
        errors.append(FieldError("/codec", f"{container} cannot hold {codec}; use {' or '.join(_CONTAINER_CODECS[container])}"))
    audio_codec = params.get("audio_codec", "auto")
    held = _CONTAINER_AUDIO.get(container, ())
    if held and audio_codec not in ("auto", "none", *held):
        why = {
            "mp4": "most MP4 players cannot play Opus",
            "webm": "WebM holds only Vorbis and Opus audio",
        }.get(container, f"{container} holds {' or '.join(held)}")
        choices = " or ".join((*held, "none"))
        errors.append(FieldError("/audio_codec", f"{container} cannot hold {audio_codec} here ({why}); use {choices}"))


STDOUT_PATH = "-"
"""``sink::y4m`` path meaning standard output: one-shot use only."""


def _check_y4m_stdout(params: dict[str, Any], errors: list[FieldError], context: ValidationContext) -> None:
    if params["path"] == STDOUT_PATH and not context.allow_stdout:
        errors.append(
            FieldError(
                "/path",
                'standard output ("-") is for one-shot use, never the daemon (whose output is its log);'
                " name a file or FIFO inside the output directory",
            )
        )


def _check_stream_destination(params: dict[str, Any], errors: list[FieldError], context: ValidationContext) -> None:
    refusal = context.stream_destinations.refusal(params["url"])
    if refusal is not None:
        errors.append(FieldError("/url", refusal))


def _check_stream_format(params: dict[str, Any], errors: list[FieldError]) -> None:
    scheme = params["url"].split("://", 1)[0].lower()
    if scheme in ("rtmp", "rtmps") and params.get("format", "mpegts") != "flv":
        errors.append(FieldError("/format", f"{scheme}:// carries FLV: set format to flv"))


INGEST_SCHEMES = ("udp", "tcp", "rtmp", "rtmps", "rtsp", "rtsps", "http", "https", "srt")
LISTEN_SCHEMES = ("tcp", "rtmp")  # can wait for a publisher (listen: true); udp always binds its address


def _ingest_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _check_ingest_url(params: dict[str, Any], errors: list[FieldError]) -> None:
    scheme = _ingest_scheme(params["url"])
    if scheme == "srt":
        errors.append(
            FieldError(
                "/url",
                "srt:// is not available: the FFmpeg bundled with PyAV has no SRT protocol; publish MPEG-TS over udp:// or rtmp:// instead",
            )
        )
    if params.get("listen", False) and scheme not in LISTEN_SCHEMES:
        errors.append(
            FieldError("/listen", f"{scheme}:// cannot listen; listen works with {', '.join(s + '://' for s in LISTEN_SCHEMES)}")
        )


def _check_ingest_reach(params: dict[str, Any], errors: list[FieldError], context: ValidationContext) -> None:
    """An input binds only where ``allowed_ingest_listen`` allows and pulls only from ``allowed_ingest_sources``."""
    scheme = _ingest_scheme(params["url"])
    listening = params.get("listen", False)
    if listening and scheme not in LISTEN_SCHEMES:
        return  # refused at /listen already: neither a listener nor a pull
    if scheme == "udp" or listening:
        refusal = context.ingest_listen.refusal(
            params["url"], role="address to listen on", setting="allowed_ingest_listen", schemes=INGEST_SCHEMES
        )
    else:
        refusal = context.ingest_sources.refusal(
            params["url"], role="source to pull from", setting="allowed_ingest_sources", schemes=INGEST_SCHEMES
        )
    if refusal is not None:
        errors.append(FieldError("/url", refusal))


KINDS: dict[str, NodeKind] = {}


def _register(kind: NodeKind) -> None:
    KINDS[kind.name] = kind


_register(
    NodeKind(
        COMPOSITOR_KIND,
        COMPOSITOR,
        _COMPOSITOR,
        "the layers, overlays and output of one pipeline; emits view data",
        cross_checks=(
            CrossCheck(("num_inputs",), _check_layer_slots),
            CrossCheck(("scenes", "program_scene", "preview_scene", *scenes.SCENE_LAYOUT_KEYS), _check_scenes),
            _even_dimensions_check(_COMPOSITOR, "output_format"),
            CrossCheck(("audio",), _check_audio_format),
        ),
        notes=(
            "`layers` is keyed by input pin `in_N`, N < `num_inputs` (so at most 16 layers).",
            "An input without a `layers` entry, or a layer without `rect`, gets the auto-PiP rect: slot 0 fills the canvas; slot k > 0 sits at 1/3 size, 20 px from the bottom-right corner, aspect-fit.",
            "`output_format` `nv12` and `i420` need an even `width` and `height`.",
            "Overlay rects: `x`/`y` default 0; `width`/`height` absent = the content's own (measured) size.",
            "Requests may spell overlays as StreamKit does; they are stored in the form above: `color` `[r, g, b, a]`,"
            " `font_name`, an image as `data_base64` (stored as `inline/<sha256>.<ext>` in the asset directory), an overlay"
            ' without `id` (`text_N` / `img_N`). docs/PROTOCOL.md, "StreamKit clients".',
            "Scenes: each entry of `scenes` is a whole layout (`layers`, `text_overlays`, `image_overlays`, with the rules"
            " above); the top-level ones must then be empty. Without scenes the top-level layout is the one scene.",
            "A change of `program_scene` is shown with `transition` as the params hold it after the change (so a patch may"
            " set both); progress counts output frames. `cut` switches in the next frame.",
            "T-bar: while `transition_position` p is set and `preview_scene` names another scene, `out` shows `transition`"
            " from `program_scene` to `preview_scene` at p, linear (`cut`: the preview scene from 0.5 on); a `take` clears it"
            ' and runs the rest of the transition from p. Rules: docs/RENDERING.md "The T-bar".',
            "Output pins: `out` shows `program_scene`; `preview` shows `preview_scene` (nothing without one) and is drawn only"
            " while a sink or another compositor takes it.",
            "Sound: the compositor mixes the sound of its inputs (each layer's `audio`, read from the program scene) and hands"
            " it to the sinks of `out` only; `preview` carries no sound. A compositor none of whose inputs has sound has no"
            " audio on its outputs. docs/AUDIO.md.",
        ),
        fill_hook=_fill_compositor,
    )
)

_register(
    NodeKind(
        "video::colorbars",
        SOURCE,
        Object(
            {
                **_SIZE_FIELDS,
                "pattern": Enum(("smpte", "ramp", "solid"), default="smpte"),
                "color": Color(default="#808080FF", doc="the colour of pattern `solid`"),
                "animated": Bool(default=False, doc="a moving bar, so frames differ"),
                "timestamp": Bool(default=False, doc="burn in the frame time"),
            }
        ),
        "SMPTE bars / test pattern, optionally animated and time-stamped",
    )
)
_register(
    NodeKind(
        "video::image",
        SOURCE,
        Object({"asset_path": RelativePath(doc="PNG or JPEG inside the asset directory")}),
        "PNG / JPEG (Pillow) from the asset directory",
    )
)
_register(
    NodeKind(
        "video::file",
        SOURCE,
        Object(
            {
                "path": RelativePath(max_len=4096, doc="video file inside the asset directory"),
                "loop": Bool(default=True),
                "seek_seconds": Number(0, 7 * 24 * 3600, default=0.0, doc="start position"),
                "audio": Bool(default=True, doc="carry the file's sound (its first audio stream) to the mixer"),
            }
        ),
        "a video file decoded with PyAV, looped or once, with its sound",
        notes=(
            "A file without an audio stream, or `audio: false`, has no sound: a compositor with no other sound"
            " hands its outputs none. Changing `audio` does not restart playback.",
        ),
    )
)
_register(
    NodeKind(
        "video::capture",
        SOURCE,
        Object(
            {
                "source": Enum(("x11", "v4l2"), default="x11", doc="x11: a region of an X display; v4l2: a camera"),
                "display": Str(
                    16, pattern=r":[0-9]{1,4}(\.[0-9]{1,3})?", pattern_doc="a local X display, :N or :N.S", default=":0"
                ),
                "x": Int(0, MAX_CANVAS, default=0, doc="x11: left edge of the region"),
                "y": Int(0, MAX_CANVAS, default=0, doc="x11: top edge of the region"),
                **_SIZE_FIELDS,
                "frame_rate": Number(1, 120, default=30.0),
                "draw_mouse": Bool(default=True, doc="x11: draw the pointer"),
                "device": Str(
                    32, pattern=r"/dev/video[0-9]{1,3}", pattern_doc="a V4L2 device, /dev/videoN", default="/dev/video0"
                ),
                "pixel_format": Enum(
                    ("auto", "yuyv422", "mjpeg", "nv12", "yuv420p"), default="auto", doc="v4l2: what to ask the camera for"
                ),
            }
        ),
        "a live X11 screen region (x11grab) or V4L2 camera through PyAV",
        notes=(
            "x11 reads `display`, `x`, `y`, `width`, `height`, `frame_rate`, `draw_mouse`; v4l2 reads `device`,"
            " `width`, `height`, `frame_rate`, `pixel_format`.",
            "The node's state is `connecting` until the first frame, then `live`; a missing or busy device is an error,"
            " tried again with backoff.",
            "No sound: x11grab and V4L2 carry pictures only (a PulseAudio or ALSA capture is not built).",
        ),
    )
)
_register(
    NodeKind(
        "av::stream_in",
        SOURCE,
        Object(
            {
                "url": Str(
                    4096,
                    min_len=1,
                    pattern=r"(?i:udp|tcp|rtmp|rtmps|rtsp|rtsps|http|https|srt)://[^\s]+",
                    pattern_doc="a udp://, tcp://, rtmp://, rtmps://, rtsp://, rtsps://, http:// or https:// URL (HLS: an .m3u8 URL)",
                ),
                "listen": Bool(
                    default=False, doc="rtmp:// and tcp://: wait for a publisher at the URL's address instead of pulling"
                ),
                "format": Enum(("auto", "mpegts", "flv", "hls"), default="auto", doc="auto: probe the stream"),
                "open_timeout_s": Number(
                    0.5, 60, default=5.0, doc="each open (or wait for a publisher) gives up after this long"
                ),
                "read_timeout_s": Number(0.5, 60, default=3.0, doc="no data for this long: the peer is gone, reconnect"),
                "latency_ms": Int(
                    0, 2000, default=100, doc="delay that absorbs network jitter before frames (and sound) are played"
                ),
                "audio": Bool(default=True, doc="carry the stream's sound (its first audio stream) to the mixer"),
            }
        ),
        "network ingest through PyAV: RTMP (pull or listen), MPEG-TS over UDP, RTSP, HLS, HTTP",
        cross_checks=(CrossCheck(("url", "listen"), _check_ingest_url),),
        notes=(
            "`srt://` is refused: the FFmpeg bundled with PyAV has no SRT protocol.",
            "`udp://HOST:PORT` binds HOST:PORT and receives MPEG-TS; `listen: true` waits for an RTMP or TCP publisher."
            " The daemon listens only where its operator allows (`allowed_ingest_listen`, docs/OPERATIONS.md; loopback by default)"
            " and pulls only from sources its operator lists (`allowed_ingest_sources`; loopback by default).",
            "The node's state is `connecting` until frames arrive, then `live`; when the peer goes away it is `connecting`"
            " again and reconnects; a failed attempt (refused, not found) is an error, tried again with backoff.",
            "With `audio: true` the node always has sound for the mixer (played by its timestamps, in step with the"
            " pictures), silence while no sound arrives (a stream without audio, a peer that went away);"
            " `audio: false` leaves the stream's sound undemuxed.",
        ),
        policy_checks=(PolicyCheck(("url", "listen"), _check_ingest_reach),),
    )
)
_PUSH = Object({**_SIZE_FIELDS, "pixel_format": Enum(("rgba8", "nv12", "i420"), default="rgba8")})
_register(
    NodeKind(
        PUSH_KIND,
        SOURCE,
        _PUSH,
        "frames pushed by a client as binary WebSocket messages (PROTOCOL.md section 6)",
        cross_checks=(_even_dimensions_check(_PUSH, "pixel_format"),),
        notes=("`pixel_format` `nv12` and `i420` need an even `width` and `height`.",),
    )
)


def _check_tone_bursts(params: dict[str, Any], errors: list[FieldError]) -> None:
    every_s = _effective(params, _TONE, "burst_every_s")
    burst_ms = _effective(params, _TONE, "burst_ms")
    if every_s and burst_ms >= every_s * 1000:
        errors.append(
            FieldError(
                "/burst_ms",
                f"must be shorter than burst_every_s ({_format_number(every_s)} s), so there is silence between bursts",
            )
        )


_TONE = Object(
    {
        "frequency_hz": Number(1, 20_000, default=1000.0),
        "level_dbfs": Number(-120, 0, default=-20.0, doc="the sine's peak level (0: full scale)"),
        "burst_every_s": Number(
            0, 3600, default=0.0, doc="0: a continuous tone; else a burst at the start of each period of this length"
        ),
        "burst_ms": Number(1, 60_000, default=100.0, doc="the length of each burst"),
    }
)
_register(
    NodeKind(
        TONE_KIND,
        SOURCE,
        _TONE,
        "a sine tone, continuous or in bursts, for line-up and sync tests (sound only: its layer draws nothing)",
        cross_checks=(CrossCheck(("burst_every_s", "burst_ms"), _check_tone_bursts),),
        notes=(
            "Bursts are aligned to the render loop's clock: burst k starts at sample k * burst_every_s * 48000 of the"
            " clock that output frames' `media_time` counts (docs/AUDIO.md), so a test can predict them.",
        ),
    )
)


# The rates a pushed-audio header may carry (protocol/pcm.py); params cannot import it (pcm imports frames only,
# and this module stays free of the binary formats), so a test keeps the two lists equal.
PUSHED_AUDIO_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)


def _check_pushed_audio_rate(params: dict[str, Any], errors: list[FieldError]) -> None:
    rate = params.get("sample_rate")
    if rate is not None and rate not in PUSHED_AUDIO_RATES:
        errors.append(
            FieldError(
                "/sample_rate", f"must be one of {', '.join(map(str, PUSHED_AUDIO_RATES))} Hz (or absent: any), got {rate}"
            )
        )


_register(
    NodeKind(
        AUDIO_PUSH_KIND,
        SOURCE,
        Object(
            {
                "sample_rate": Int(
                    8000,
                    96000,
                    default=AUTO,
                    doc="one of 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000: audio at another"
                    " rate is refused; auto: any of them",
                ),
                "channels": Int(1, 2, default=AUTO, doc="auto: mono or stereo; else audio with another count is refused"),
                "latency_ms": Int(
                    0,
                    1000,
                    default=50,
                    doc="jitter cushion: silence played ahead of the first sound, and again after the buffer ran dry",
                ),
            }
        ),
        "PCM pushed by a client as binary WebSocket messages (PROTOCOL.md section 6.1); sound only, no picture",
        cross_checks=(CrossCheck(("sample_rate",), _check_pushed_audio_rate),),
        notes=(
            "Connect it to a compositor input like any source: its layer draws nothing; the compositor mixes its sound.",
            "Sound is converted to the bus format (48 kHz stereo float) on the node's own thread; mono is copied to both"
            " channels at its level.",
            "Sound more than `latency_ms` + 250 ms ahead of the output is dropped (oldest first): push in real time, in"
            " messages of at most 200 ms. Gaps in `pts_us` are filled with silence (docs/OPERATIONS.md, `audio::push`).",
        ),
    )
)

_register(
    NodeKind(
        "sink::file",
        SINK,
        Object(
            {
                "path": _OUTPUT_PATH,
                "codec": _CODEC,
                "container": Enum(("mp4", "webm", "mkv"), default=AUTO, doc="auto: from the path's extension"),
                "bitrate_kbps": Int(100, 100_000, default=4000),
                "preset": _PRESET,
                "if_exists": Enum(
                    ("new_name", "overwrite"),
                    default="new_name",
                    doc="new_name: a file already at `path` (an earlier recording) is kept and this one is written to `name-1.ext`, `name-2.ext`...",
                ),
                "audio_codec": Enum(
                    ("auto", "aac", "opus", "none"),
                    default="auto",
                    doc="auto: AAC in MP4 and MKV, Opus in WebM; none: video only",
                ),
                "audio_bitrate_kbps": _AUDIO_BITRATE,
            }
        ),
        "encode with PyAV (H.264, VP9, AV1 where the build has them; AAC or Opus sound) into MP4 / WebM / MKV",
        cross_checks=(CrossCheck(("path", "codec", "container", "audio_codec"), _check_sink_file_container),),
        notes=(
            "Without `container`, the path must end in `.mp4`, `.webm` or `.mkv`.",
            "`webm` holds `vp9` or `av1` only.",
            "Sound: AAC in `mp4`, AAC or Opus in `mkv`, Opus in `webm`.",
            _AUDIO_RULE,
            "New params restart the recording (a new file, finished separately from the old one), as does a daemon restart;"
            " with `if_exists` `new_name` neither overwrites an earlier recording. The node's stats say where it writes"
            " (`path_written`).",
        ),
    )
)
_register(
    NodeKind(
        "sink::y4m",
        SINK,
        Object(
            {
                "path": RelativePath(
                    max_len=4096,
                    doc='file or FIFO inside the output directory; `"-"` (standard output) only in one-shot use, never in the daemon',
                )
            }
        ),
        "raw frames as YUV4MPEG2 to a file or FIFO (video only: no sound)",
        notes=(
            'The daemon refuses `"-"`: its standard output is its log (the journal under systemd), not a video pipe.',
            "YUV4MPEG2 carries pictures only: a compositor's sound is not written (stats `audio_blocks_ignored`);"
            " record sound with `sink::file` or `sink::stream`.",
        ),
        policy_checks=(PolicyCheck(("path",), _check_y4m_stdout),),
    )
)
_register(
    NodeKind(
        "sink::stream",
        SINK,
        Object(
            {
                "url": Str(
                    4096,
                    min_len=1,
                    pattern=r"(udp|srt|rtmp|rtmps|tcp)://[^\s]+",
                    pattern_doc="a udp://, srt://, rtmp://, rtmps:// or tcp:// URL",
                ),
                "format": Enum(("mpegts", "flv"), default="mpegts", doc="flv for rtmp"),
                "codec": Enum(("h264",), default="h264"),
                "bitrate_kbps": Int(100, 100_000, default=2500),
                "preset": _PRESET,
                "audio_codec": Enum(("auto", "aac", "none"), default="auto", doc="auto: AAC; none: video only"),
                "audio_bitrate_kbps": _AUDIO_BITRATE,
            }
        ),
        "MPEG-TS over UDP / SRT / RTMP through PyAV (H.264, AAC sound)",
        cross_checks=(CrossCheck(("url", "format"), _check_stream_format),),
        notes=(
            "`srt://` validates but puts the node in the error state: the FFmpeg bundled with PyAV has no SRT protocol.",
            "`rtmp://` and `rtmps://` need `format` `flv`.",
            _AUDIO_RULE,
            "The URL names its host as a name or an IP literal and its port (`HOST:PORT`; rtmp 1935 and rtmps 443 by"
            " default); the daemon sends only to destinations its operator allows (`allowed_stream_destinations`,"
            " docs/OPERATIONS.md; loopback by default).",
        ),
        policy_checks=(PolicyCheck(("url",), _check_stream_destination),),
    )
)
_register(
    NodeKind(
        "sink::window",
        SINK,
        Object(
            {
                "title": Str(256, default="compositord"),
                "width": Int(1, MAX_CANVAS, default=AUTO, doc="auto: the output width"),
                "height": Int(1, MAX_CANVAS, default=AUTO, doc="auto: the output height"),
            }
        ),
        "a GLFW window that shows the output",
    )
)
_register(
    NodeKind(
        PREVIEW_KIND,
        SINK,
        Object(
            {
                "max_width": Int(16, 1920, default=320, doc="thumbnails are scaled down to this width"),
                "quality": Int(1, 100, default=75, doc="JPEG quality"),
                "max_fps": Number(0.1, 30, default=2.0),
            }
        ),
        "JPEG thumbnails for control clients, on request or at a capped rate",
    )
)

NODE_KINDS: tuple[str, ...] = tuple(KINDS)


def _unknown_kind(kind: Any, path: str) -> FieldError:
    shown = _shown(kind) if isinstance(kind, str) else _type_name(kind)
    return FieldError(path, f"unknown node kind {shown}; known: {', '.join(NODE_KINDS)}")


def _validate_into(
    kind: str, params: Any, base: str, errors: list[FieldError], context: ValidationContext
) -> dict[str, Any] | None:
    spec = KINDS[kind]
    local: list[FieldError] = []
    result = spec.schema.check(params, "", local)
    if isinstance(params, Mapping):
        invalid = {pointer.split(e.path)[0] for e in local}
        for check in spec.cross_checks:
            if invalid.isdisjoint(check.needs):
                check.run(result, local)
        for policy in spec.policy_checks:
            if invalid.isdisjoint(policy.needs):
                policy.run(result, local, context)
    errors.extend(FieldError(base + e.path, e.message) for e in local)
    return result if not local else None


def validate(kind: str, params: Any, *, context: ValidationContext = DAEMON) -> dict[str, Any]:
    """Normalized durable params of a ``kind`` node; :class:`RemoteProtocolError` listing every problem."""
    errors: list[FieldError] = []
    if kind not in KINDS:
        raise RemoteProtocolError.from_field_errors(ErrorCode.INVALID_PARAMS, [_unknown_kind(kind, "")])
    result = _validate_into(kind, params, "", errors, context)
    if errors:
        raise RemoteProtocolError.from_field_errors(ErrorCode.INVALID_PARAMS, errors)
    assert result is not None
    return result


def validate_transition_patch(patch: Any, path: str) -> dict[str, Any]:
    """A patch of a compositor's ``transition`` (some of kind, duration_ms, easing, direction), checked
    field by field at ``path``; :class:`RemoteProtocolError` (``invalid_params``) listing every problem."""
    errors: list[FieldError] = []
    result = _TRANSITION.check(patch, path, errors)
    if errors:
        raise RemoteProtocolError.from_field_errors(ErrorCode.INVALID_PARAMS, errors)
    return dict(result)


def _kind(kind: str) -> NodeKind:
    try:
        return KINDS[kind]
    except KeyError:
        raise LocalProtocolError(f"unknown node kind {kind!r}") from None


def with_defaults(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validated ``params`` with every key present (see the module docstring for "auto" fields)."""
    spec = _kind(kind)
    full = spec.schema.fill(copy.deepcopy(dict(params)))
    return spec.fill_hook(full) if spec.fill_hook else full


def defaults(kind: str) -> dict[str, Any]:
    """Every default of a ``kind`` node (required fields, having none, stay absent)."""
    return with_defaults(kind, {})


def role(kind: str) -> str:
    """``"source"``, ``"compositor"`` or ``"sink"``."""
    return _kind(kind).role


OUTPUT_PIN = "out"
PREVIEW_PIN = "preview"  # the compositor's second output: its preview_scene


def output_pins(kind: str) -> tuple[str, ...]:
    """Sources have one output pin ``out``; the compositor ``out`` and ``preview``; sinks none."""
    node_role = _kind(kind).role
    if node_role == COMPOSITOR:
        return (OUTPUT_PIN, PREVIEW_PIN)
    return () if node_role == SINK else (OUTPUT_PIN,)


def input_pins(kind: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The compositor's ``in_0 .. in_{num_inputs-1}``; a sink's ``in``; none for sources."""
    node_role = _kind(kind).role
    if node_role == COMPOSITOR:
        num_inputs = params.get("num_inputs", _COMPOSITOR.fields["num_inputs"].default)
        return tuple(f"in_{slot}" for slot in range(num_inputs))
    return ("in",) if node_role == SINK else ()


# ---------------------------------------------------------------------------
# Pipelines

NODE_ID_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
MAX_NODES = 256
MAX_CONNECTIONS = 1024

_NODE_ID = Str(64, min_len=1, pattern=NODE_ID_PATTERN, pattern_doc="letters, digits, '_', '.', '-' (not first)")

_CONNECTION = Object(
    {
        "from_node": _NODE_ID,
        "from_pin": Str(64, min_len=1),
        "to_node": _NODE_ID,
        "to_pin": Str(64, min_len=1),
    }
)


@dataclass(frozen=True)
class _AnyObject(Spec):
    """Params before their kind is known: just an object (validated against the kind afterwards)."""

    default: Any = field(default_factory=dict)

    def check(self, value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, Mapping):
            errors.append(FieldError(path, f"expected an object, got {_type_name(value)}"))
        return value

    def describe(self) -> str:  # pragma: no cover - not in the reference
        return "object"


_PIPELINE = Object(
    {
        "nodes": MapOf(
            NODE_ID_PATTERN,
            "a node id (letters, digits, '_', '.', '-')",
            Object({"kind": Str(64, min_len=1), "params": _AnyObject()}),
            default={},
            keys_are_names=True,
        ),
        "connections": ListOf(_CONNECTION, MAX_CONNECTIONS, default=[]),
    }
)


def validate_pipeline(doc: Any, *, context: ValidationContext = DAEMON) -> dict[str, Any]:
    """A normalized pipeline ``{"nodes": {id: {"kind", "params"}}, "connections": [...]}``.

    Checks every node's params against its kind, and that every connection
    joins an existing node's output pin to another node's input pin, each input
    pin fed at most once, with no cycle (a compositor may feed another: nesting).
    Keys that start with ``_`` are stripped wherever
    they are, except node ids. Every problem is reported with its path.
    """
    errors: list[FieldError] = []
    shape = _PIPELINE.check(doc, "", errors)
    if not isinstance(shape, Mapping):
        raise RemoteProtocolError.from_field_errors(ErrorCode.INVALID_PARAMS, errors)
    nodes_in = shape.get("nodes", {})
    if isinstance(nodes_in, Mapping) and len(nodes_in) > MAX_NODES:
        errors.append(FieldError("/nodes", f"must have at most {MAX_NODES} nodes"))
        nodes_in = {}
    nodes: dict[str, dict[str, Any]] = {}
    valid_kinds: dict[str, str] = {}
    for node_id, node in nodes_in.items() if isinstance(nodes_in, Mapping) else ():
        if not isinstance(node, Mapping) or not isinstance(node.get("kind"), str):
            continue
        base = pointer.join("/nodes", node_id)
        kind = node["kind"]
        if kind not in KINDS:
            if not any(e.path == pointer.join(base, "kind") for e in errors):
                errors.append(_unknown_kind(kind, pointer.join(base, "kind")))
            continue
        valid_kinds[node_id] = kind
        params = node.get("params", {})
        if isinstance(params, Mapping):
            normalized = _validate_into(kind, params, pointer.join(base, "params"), errors, context)
            if normalized is not None:
                nodes[node_id] = {"kind": kind, "params": normalized}
    connections = shape.get("connections", [])
    if isinstance(connections, list):
        _check_connections(connections, valid_kinds, nodes, errors)
    if errors:
        raise RemoteProtocolError.from_field_errors(ErrorCode.INVALID_PARAMS, errors)
    return {"nodes": nodes, "connections": [dict(c) for c in connections]}


def _check_connections(
    connections: list[Any],
    kinds: Mapping[str, str],
    valid_nodes: Mapping[str, Mapping[str, Any]],
    errors: list[FieldError],
) -> None:
    """Ends exist, pins exist, each input fed once, no cycle.

    ``kinds`` holds every node whose kind is known; ``valid_nodes`` those whose
    params are valid too. A compositor with invalid params has unknown input
    pins, so connections into it are not checked further (its errors are
    reported already).
    """
    fed_by: dict[tuple[str, str], int] = {}
    edges: dict[str, set[str]] = {}
    for index, conn in enumerate(connections):
        if not isinstance(conn, Mapping) or not all(isinstance(conn.get(k), str) for k in _CONNECTION.fields):
            continue  # its shape errors are already reported
        base = pointer.join("/connections", index)
        if not (_pin_ok(conn, base, "from", kinds, valid_nodes, errors) & _pin_ok(conn, base, "to", kinds, valid_nodes, errors)):
            continue
        if conn["from_node"] == conn["to_node"]:
            errors.append(FieldError(pointer.join(base, "to_node"), "a node cannot feed itself"))
            continue
        edges.setdefault(conn["from_node"], set()).add(conn["to_node"])  # a refused edge may still close a cycle
        target = (conn["to_node"], conn["to_pin"])
        if target in fed_by:
            errors.append(FieldError(pointer.join(base, "to_pin"), f"input already fed by /connections/{fed_by[target]}"))
            continue
        fed_by[target] = index
    cycle = _find_cycle(edges)
    if cycle:
        errors.append(FieldError("/connections", "connections form a cycle: " + " -> ".join(cycle)))


def _pin_ok(
    conn: Mapping[str, str],
    base: str,
    end: str,
    kinds: Mapping[str, str],
    valid_nodes: Mapping[str, Mapping[str, Any]],
    errors: list[FieldError],
) -> bool:
    """Whether one end (``"from"`` or ``"to"``) of a connection names a node and one of its pins."""
    node_id, pin = conn[f"{end}_node"], conn[f"{end}_pin"]
    if node_id not in kinds:
        errors.append(FieldError(pointer.join(base, f"{end}_node"), f"no node {node_id!r} of a known kind in this pipeline"))
        return False
    kind = kinds[node_id]
    if end == "from":
        direction, pins = "output", output_pins(kind)
    elif node_id in valid_nodes:
        direction, pins = "input", input_pins(kind, valid_nodes[node_id]["params"])
    else:
        return False
    if pin in pins:
        return True
    have = f"its {direction} pins are {', '.join(pins)}" if pins else f"it has no {direction} pins"
    errors.append(FieldError(pointer.join(base, f"{end}_pin"), f"{kind} node {node_id!r} has no {direction} pin {pin!r}; {have}"))
    return False


def _find_cycle(edges: Mapping[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


# ---------------------------------------------------------------------------
# Reference documentation (docs/PARAMS.md is this function's output)


def _rows(schema: Object, prefix: str) -> list[str]:
    rows: list[str] = []
    for key, spec in schema.fields.items():
        name = f"`{prefix}{key}`"
        rows.append(f"| {name} | {spec.describe()} | {spec.default_text()} | {spec.doc} |")
        nested: Object | None = None
        nested_prefix = f"{prefix}{key}."
        if isinstance(spec, Object):
            nested = spec
        elif isinstance(spec, MapOf) and isinstance(spec.value, Object):
            nested, nested_prefix = spec.value, f"{prefix}{key}.{spec.key_placeholder}."
        elif isinstance(spec, ListOf) and isinstance(spec.item, Object):
            nested, nested_prefix = spec.item, f"{prefix}{key}[]."
        if nested is not None:
            rows.extend(_rows(nested, nested_prefix))
    return rows


def reference_markdown() -> str:
    """The text of docs/PARAMS.md (a test keeps the file equal to it)."""
    lines = [
        "# Node params",
        "",
        "Generated from `protocol/params.py` by `compositord.protocol.params.reference_markdown()`;",
        "`tests/test_params.py` fails when this file and the schema disagree. Regenerate with",
        "`.venv/bin/python -c 'from compositord.protocol import params; print(params.reference_markdown(), end=\"\")' > docs/PARAMS.md`.",
        "",
        "Rules for every kind: an unknown key, a value of the wrong type (`true` is not a number),",
        "NaN, an infinity or a value out of range is an `invalid_params` error naming the field's",
        'JSON pointer; every error is reported at once. "required" fields have no default;',
        '"auto" fields may be absent (or `null`, the same) and are then computed. Durable params',
        "keep only what was sent, normalized: numbers as floats, integers as ints, pixel values",
        "rounded to whole pixels (halves up), colours as `#RRGGBBAA` upper case. A key that starts",
        "with `_` is private to the client: stripped at any depth on every write path (`addnode`,",
        "tunes, `createsession`, pipeline files), never stored and never an error.",
        "",
        "Pins: sources have the output pin `out`; the compositor has inputs `in_0` ..",
        "`in_{num_inputs-1}` and the outputs `out` (program) and `preview`; sinks have the input `in`.",
        "A compositor's output may feed another compositor's input (nested compositors); cycles are refused.",
    ]
    for kind in KINDS.values():
        lines += ["", f"## `{kind.name}` ({kind.role})", "", kind.summary[0].upper() + kind.summary[1:] + ".", ""]
        lines += ["| field | type | default | notes |", "| --- | --- | --- | --- |"]
        lines += _rows(kind.schema, "")
        if kind.notes:
            lines.append("")
            lines += [f"- {note}" for note in kind.notes]
    return "\n".join(lines) + "\n"
