"""`compositord ctl`: drive a running daemon from the shell, with the client library.

    compositord ctl [--url URL] [--token T] sessions
    compositord ctl get SESSION
    compositord ctl tune SESSION NODE JSON [--replace] [--async] [--animate MS [--easing E]]
    compositord ctl scene SESSION NODE NAME [--preview] [--transition KIND] [--ms N] [--easing E] [--direction D] [--once]
    compositord ctl take SESSION NODE [--transition KIND] [--ms N] [--easing E] [--direction D]
    compositord ctl watch [SESSION]

Output is JSON (``watch``: one event per line, as it arrives). A refused
request prints the server's error (code, message, path) on stderr and exits
with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import trio

from compositord.protocol.scenes import DIRECTIONS, EASINGS, TRANSITION_KINDS

if TYPE_CHECKING:
    from compositord.client import Client

DEFAULT_URL = "ws://127.0.0.1:4545/api/v1/control"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("COMPOSITORD_URL", DEFAULT_URL),
        help=f"daemon URL (default: $COMPOSITORD_URL or {DEFAULT_URL})",
    )
    parser.add_argument("--token", default=os.environ.get("COMPOSITORD_TOKEN"), help="bearer token (default: $COMPOSITORD_TOKEN)")
    commands = parser.add_subparsers(dest="ctl_command", metavar="SUBCOMMAND", required=True)
    commands.add_parser("sessions", help="list the sessions")
    get = commands.add_parser("get", help="print a session's pipeline: durable params, connections, last view data")
    get.add_argument("session", metavar="SESSION")
    tune = commands.add_parser("tune", help="change a node's params (a JSON merge patch unless --replace)")
    tune.add_argument("session", metavar="SESSION")
    tune.add_argument("node", metavar="NODE")
    tune.add_argument("params", metavar="JSON", help='for example \'{"layers": {"in_1": {"opacity": 0.5}}}\'')
    tune.add_argument("--replace", action="store_true", help="UpdateParams: the params become exactly JSON")
    tune.add_argument("--async", dest="is_async", action="store_true", help="tunenodeasync: do not wait for the commit")
    tune.add_argument("--animate", metavar="MS", type=int, help="move the numbers the patch changes over MS milliseconds")
    tune.add_argument("--easing", choices=EASINGS, default="linear", help="of --animate (default: linear)")
    scene = commands.add_parser("scene", help="put a compositor's scene on program (or on preview)")
    scene.add_argument("session", metavar="SESSION")
    scene.add_argument("node", metavar="NODE")
    scene.add_argument("scene", metavar="NAME")
    scene.add_argument("--preview", action="store_true", help="on the preview output instead (no transition)")
    _transition_arguments(scene)
    scene.add_argument("--once", action="store_true", help="the transition for this change only: the params keep theirs")
    take = commands.add_parser("take", help="studio mode: the preview scene to program, the program scene to preview")
    take.add_argument("session", metavar="SESSION")
    take.add_argument("node", metavar="NODE")
    _transition_arguments(take)
    watch = commands.add_parser("watch", help="print events as JSON lines until interrupted")
    watch.add_argument("session", metavar="SESSION", nargs="?", help="only this session's events")


def _transition_arguments(parser: argparse.ArgumentParser) -> None:
    """How the change is shown; what is given is laid into the params' transition (and stays the default)."""
    parser.add_argument("--transition", choices=TRANSITION_KINDS, help="cut, fade, slide, push or wipe")
    parser.add_argument("--ms", type=int, help="duration in milliseconds (counted in output frames)")
    parser.add_argument("--easing", choices=EASINGS)
    parser.add_argument("--direction", choices=DIRECTIONS, help="slide, push, wipe: where the picture moves")


def transition_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The transition patch the options give, or None when none was given."""
    given = {"kind": args.transition, "duration_ms": args.ms, "easing": args.easing, "direction": args.direction}
    patch = {key: value for key, value in given.items() if value is not None}
    return patch or None


def main(args: argparse.Namespace) -> int:
    if args.ctl_command == "tune":
        try:
            patch = json.loads(args.params)
        except ValueError as exc:
            print(f"compositord ctl tune: JSON is not valid JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(patch, dict):
            print("compositord ctl tune: JSON must be an object", file=sys.stderr)
            return 2
        args.patch = patch
    try:
        return trio.run(run, args, sys.stdout)
    except KeyboardInterrupt:
        return 130 if args.ctl_command != "watch" else 0


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from compositord.client import ClientError, CompositordError, ConnectFailed, open_client

    try:
        # One-shot commands fail fast; `watch` follows the daemon through restarts.
        async with open_client(args.url, token=args.token, reconnect=args.ctl_command == "watch") as client:
            if args.ctl_command == "sessions":
                _print(out, await client.list_sessions(), indent=2)
            elif args.ctl_command == "get":
                _print(out, await client.get_pipeline(args.session), indent=2)
            elif args.ctl_command == "tune":
                animate = {"duration_ms": args.animate, "easing": args.easing} if args.animate is not None else None
                stamp = await client.tune(
                    args.session, args.node, args.patch, replace=args.replace, sync=not args.is_async, animate=animate
                )
                _print(out, {"action": "tunenodeasync" if args.is_async else "success", **stamp.to_json()})
            elif args.ctl_command == "scene":
                if args.preview:
                    stamp = await client.set_preview_scene(args.session, args.node, args.scene)
                else:
                    stamp = await client.set_program_scene(
                        args.session, args.node, args.scene, transition=transition_of(args), keep_transition=not args.once
                    )
                _print(out, {"action": "success", **stamp.to_json()})
            elif args.ctl_command == "take":
                stamp = await client.take(args.session, args.node, transition=transition_of(args))
                _print(out, {"action": "success", **stamp.to_json()})
            elif args.ctl_command == "watch":
                await _watch(client, args.session, out)
    except CompositordError as exc:
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.path is not None:
            error["path"] = exc.path
        if exc.errors:
            error["errors"] = [e.to_json() for e in exc.errors]
        _print(sys.stderr, {"error": error})
        return 1
    except ConnectFailed as exc:
        print(f"compositord ctl: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"compositord ctl: {exc}", file=sys.stderr)
        return 1
    return 0


async def _watch(client: Client, session: str | None, out: TextIO) -> None:
    """Print every event (of ``session``) as a JSON line until SIGINT or SIGTERM, or until the reader goes away.

    A reader that stops reading (a pager, a full pipe) blocks the write. The writes therefore run on a
    worker thread, which such a reader stalls instead of trio's, and a signal ends the watch at once with
    status 0; a write still blocked then is abandoned. A closed pipe (``ctl watch | head``) ends it quietly.
    """
    write = _line_writer(out)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _signal in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            try:
                async for event in client.events():
                    if session is None or event.session_id == session:
                        line = _json_text({"event": event.name, **event.payload})
                        await trio.to_thread.run_sync(write, line, abandon_on_cancel=True)
            except BrokenPipeError:
                pass  # nobody is left to read what we print
            nursery.cancel_scope.cancel()


def _line_writer(out: TextIO) -> Callable[[str], None]:
    """How ``watch`` writes a line from its worker thread.

    To a real file the bytes go straight to its descriptor: a write abandoned while blocked then holds no
    lock of Python's buffered writer, which the interpreter's exit would wait for. Anything else (a
    ``StringIO`` in a test) is written through ``out``.
    """
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        fd = None
    if fd is None:

        def write_text(line: str) -> None:
            out.write(line)
            out.flush()

        return write_text
    out.flush()

    def write_bytes(line: str) -> None:
        data = memoryview(line.encode())
        while data:
            data = data[os.write(fd, data) :]

    return write_bytes


def _print(out: TextIO, value: Any, *, indent: int | None = None) -> None:
    out.write(_json_text(value, indent=indent))
    out.flush()


def _json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as the JSON that ``ctl`` prints, newline included."""
    if isinstance(value, Mapping):
        value = dict(value)
    return json.dumps(value, indent=indent, ensure_ascii=False, default=_jsonable) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
