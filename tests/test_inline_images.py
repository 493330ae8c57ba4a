"""daemon/sessions/inline_images.py: inline images stored by content, inside the asset directory only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compositord.daemon.sessions.inline_images import InlineImages
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.streamkit import InlineImage

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels"
IMAGE = InlineImage("inline/" + "a" * 64 + ".png", PNG)
OTHER = InlineImage("inline/" + "b" * 64 + ".png", PNG + b"2")


async def test_an_image_is_written_once_under_its_name(tmp_path: Path) -> None:
    assets = tmp_path / "assets"  # made on demand
    images = InlineImages(assets)
    await images.store([IMAGE], "/p")
    written = assets / IMAGE.asset_path
    assert written.read_bytes() == PNG and written.is_file() and not written.is_symlink()
    os.utime(written, (1, 1))
    await images.store([IMAGE], "/p")
    await InlineImages(assets).store([IMAGE], "/p")  # a new daemon finds it there
    assert written.stat().st_mtime == 1, "not written again"
    assert [p.name for p in (assets / "inline").iterdir()] == [written.name], "no temporary file left"
    assert images.base64_of(IMAGE.asset_path) == "iVBORw0KGgpwaXhlbHM="
    assert images.base64_of(OTHER.asset_path) is None


async def test_a_link_named_inline_is_refused(tmp_path: Path) -> None:
    assets, elsewhere = tmp_path / "assets", tmp_path / "elsewhere"
    assets.mkdir()
    elsewhere.mkdir()
    (assets / "inline").symlink_to(elsewhere)
    with pytest.raises(RemoteProtocolError) as info:
        await InlineImages(assets).store([IMAGE], "/payload/params")
    assert info.value.path == "/payload/params" and "inline image folder" in info.value.message
    assert list(elsewhere.iterdir()) == []


async def test_a_file_of_that_name_that_is_not_the_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "inline").mkdir()
    (tmp_path / IMAGE.asset_path).symlink_to(tmp_path / "outside.png")
    with pytest.raises(RemoteProtocolError, match="is not the image it names"):
        await InlineImages(tmp_path).store([IMAGE], "/p")


async def test_the_folder_holds_at_most_max_files_images(tmp_path: Path) -> None:
    images = InlineImages(tmp_path, max_files=1)
    await images.store([IMAGE], "/p")
    with pytest.raises(RemoteProtocolError) as info:
        await images.store([OTHER], "/payload/message/UpdateParams")
    assert info.value.code is ErrorCode.TOO_LARGE and info.value.path == "/payload/message/UpdateParams"
    assert not (tmp_path / OTHER.asset_path).exists()


async def test_without_an_asset_directory_inline_images_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="no asset directory"):
        await InlineImages(None).store([IMAGE], "/p")
    await InlineImages(None).store([], "/p")  # nothing to store: fine


async def test_the_base64_cache_is_bounded(tmp_path: Path) -> None:
    images = InlineImages(tmp_path, cache_bytes=20)
    await images.store([IMAGE, OTHER], "/p")
    assert images.base64_of(IMAGE.asset_path) is None, "the oldest left the cache"
    assert images.base64_of(OTHER.asset_path) is not None
