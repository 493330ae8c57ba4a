"""``listassets``: the images in the asset directory, which image inputs and overlays name by relative path.

Listed on a worker thread (a directory walk is file-system work, and the trio
thread never waits on the disk), bounded in depth and count, without
following links: an asset that is a link leading out of the directory is
refused by the engine's sandbox anyway, so it is not offered.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from compositord.protocol import envelope

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_ASSETS = 1000
MAX_DEPTH = 4


def image_assets(asset_dir: Path) -> tuple[list[str], bool]:
    """Relative paths of the images under ``asset_dir`` (sorted), and whether the list was cut at ``MAX_ASSETS``."""
    found: list[str] = []
    root = Path(asset_dir)
    if not root.is_dir():
        return [], False
    for folder, folders, files in os.walk(root, followlinks=False):
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            folders.clear()
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.lower().endswith(IMAGE_SUFFIXES) and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
                if len(found) > MAX_ASSETS:
                    return sorted(found[:MAX_ASSETS]), True
    return sorted(found), False


async def listassets(asset_dir: Path | None, cid: str | None) -> envelope.Response:
    if asset_dir is None:
        return envelope.assets_listed(cid, [], False)
    assets, truncated = await trio.to_thread.run_sync(image_assets, asset_dir)
    return envelope.assets_listed(cid, assets, truncated)
