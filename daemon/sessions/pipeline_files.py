"""Pipelines as files, for clients that have no parser of their own (the web panel):
``getschema``, ``exportpipeline``, ``parsepipeline`` and ``listexamples``.

Export writes what ``compositord check-config`` reads and ``compositord run
--config`` restores unchanged: the session's durable params (no defaults
filled in, no ``_`` keys) and its connections, as YAML. Parsing goes through
the same reader as a pipeline file given to ``compositord run``
(``config.parse_pipeline_text``) and the same validation as ``createsession``;
it creates nothing, so a client shows the problems, or creates the session
with the result.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from compositord.daemon.config import ConfigError, demo_pipeline, parse_pipeline_text
from compositord.daemon.sessions.live import LiveSessions
from compositord.protocol import envelope, kind_schema
from compositord.protocol.errors import ErrorCode, FieldError, RemoteProtocolError
from compositord.protocol.params import validate_pipeline

log = logging.getLogger(__name__)

EXAMPLES_PACKAGE = "compositord.examples"
EXPORT_FORMATS = ("yaml",)


@functools.cache
def schema_document() -> dict[str, Any]:
    """Made once: the schema is fixed for the life of the process."""
    return kind_schema.schema_document()


def getschema(cid: str | None) -> envelope.Response:
    return envelope.schema_response(cid, schema_document())


def exportpipeline(live_sessions: LiveSessions, action: envelope.ExportPipeline, cid: str | None) -> envelope.Response:
    record, _ = live_sessions.lookup(action.session_id)
    if action.format not in EXPORT_FORMATS:
        raise RemoteProtocolError(
            ErrorCode.INVALID_PARAMS,
            f"/payload/format: export writes {', '.join(EXPORT_FORMATS)} only",
            "/payload/format",
        )
    header = f"# compositord session {record.name!r}: `compositord check-config FILE`, `compositord run --config FILE`\n"
    body = yaml.safe_dump(record.to_pipeline(), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return envelope.pipeline_exported(cid, record.session_id, action.format, header + body)


def parsepipeline(action: envelope.ParsePipeline, cid: str | None) -> envelope.Response:
    """The validated pipeline; problems are ``invalid_params`` at ``/payload/text`` followed by the
    pointer of the field inside the document (``/payload/text/nodes/comp/params/width``)."""
    try:
        document = parse_pipeline_text(action.text, Path(f"pipeline.{action.format}"))
        pipeline = validate_pipeline(document)
    except ConfigError as exc:
        raise _refusal(exc.errors) from None
    except RemoteProtocolError as exc:
        raise _refusal(exc.errors or (FieldError(exc.path or "", exc.message),)) from None
    return envelope.pipeline_parsed(cid, pipeline)


def _refusal(errors: tuple[FieldError, ...] | list[FieldError]) -> RemoteProtocolError:
    return RemoteProtocolError.from_field_errors(
        ErrorCode.INVALID_PARAMS, [FieldError("/payload/text" + error.path, error.message) for error in errors]
    )


def listexamples(cid: str | None) -> envelope.Response:
    return envelope.examples_listed(cid, examples())


@functools.cache
def examples() -> tuple[dict[str, Any], ...]:
    """The embedded demo and every pipeline file shipped in ``compositord.examples`` that validates."""
    found: list[dict[str, Any]] = [{"name": "demo", "file": None, "pipeline": demo_pipeline()}]
    for entry in sorted(resources.files(EXAMPLES_PACKAGE).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml", ".toml")):
            continue
        try:
            pipeline = validate_pipeline(parse_pipeline_text(entry.read_text(encoding="utf-8"), Path(entry.name)))
        except (ConfigError, RemoteProtocolError, OSError) as exc:
            log.warning("example %s is not a valid pipeline: %s", entry.name, exc)
            continue
        found.append({"name": Path(entry.name).stem, "file": entry.name, "pipeline": pipeline})
    return tuple(found)
