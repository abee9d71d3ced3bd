"""Folder scans and decoding never block on FIFOs and never follow looping symbolic links
(issue 13, items 4 and 5)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from mpft.data.images import decode_image
from mpft.data.layouts import discover
from mpft.data.scan import list_images
from mpft.data.sniff import is_image_file
from mpft.errors import ImageDecodeError
from tests.fifo_guard import fifo_watchdog, make_fifo
from tests.kit import write_image


def scan_folder(folder: Path):
    from mpft.data.scan import scan_folder as scan

    return scan(folder)


@pytest.fixture
def pipes(tmp_path: Path) -> Path:
    """pics/a.png, pics/pipe.jpg and pics/sub/pipe (FIFOs)."""
    root = tmp_path / "pics"
    write_image(root / "a.png")
    make_fifo(root / "pipe.jpg")
    make_fifo(root / "sub" / "pipe")
    return root


def test_scan_never_opens_a_fifo(pipes: Path) -> None:
    fifos = [pipes / "pipe.jpg", pipes / "sub" / "pipe"]
    with fifo_watchdog(*fifos) as guard:
        images = list_images(pipes)
        assert not is_image_file(pipes / "pipe.jpg")
    assert not guard.fired, "a FIFO was opened for reading (it would block forever)"
    assert images == [pipes / "a.png"]
    with fifo_watchdog(*fifos) as guard:
        scan = scan_folder(pipes)
    assert not guard.fired
    assert scan.images == images
    assert [p for p, _ in scan.special] == sorted(fifos)
    assert all("named pipe" in why for _, why in scan.special)


def test_skipped_entries_are_counted_in_the_log(pipes: Path, caplog) -> None:
    with fifo_watchdog(pipes / "pipe.jpg", pipes / "sub" / "pipe"), caplog.at_level(logging.WARNING):
        list_images(pipes)
    assert "skipped 2 entries" in caplog.text


def test_training_discovery_with_a_fifo_finishes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_image(root / "real" / "r.png", seed=1)
    write_image(root / "fake" / "f.png", seed=2)
    fifo = make_fifo(root / "fake" / "incoming.jpg")
    start = time.monotonic()
    with fifo_watchdog(fifo) as guard:
        samples = discover(root)
    assert not guard.fired and time.monotonic() - start < 5
    assert [s.path.name for s in samples] == ["f.png", "r.png"]


def test_decode_refuses_a_fifo_without_opening_it(pipes: Path) -> None:
    with fifo_watchdog(pipes / "pipe.jpg") as guard, pytest.raises(ImageDecodeError, match="named pipe"):
        decode_image(pipes / "pipe.jpg")
    assert not guard.fired


# ---- symbolic links ----------------------------------------------------------------------------
def test_file_link_loop_is_a_bad_link_not_a_crash(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write_image(d / "ok.png")
    os.symlink("b.jpg", d / "a")
    os.symlink("a", d / "b.jpg")
    assert list_images(d) == [d / "ok.png"]
    scan = scan_folder(d)
    assert scan.images == [d / "ok.png"]
    assert [p for p, _ in scan.bad_links] == [d / "a", d / "b.jpg"]
    assert all("loop" in why for _, why in scan.bad_links)
    for link in (d / "a", d / "b.jpg"):
        with pytest.raises(ImageDecodeError, match="symbolic link loop"):
            decode_image(link)


def test_link_to_an_enclosing_folder_is_not_walked(tmp_path: Path) -> None:
    write_image(tmp_path / "outside.png", seed=3)  # in the parent: must not be found
    d = tmp_path / "d"
    write_image(d / "ok.png")
    os.symlink("..", d / "up")
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "back")  # to d itself, an ancestor inside the scan
    assert list_images(d) == [d / "ok.png"]
    scan = scan_folder(d)
    assert scan.images == [d / "ok.png"]
    assert [p for p, _ in scan.bad_links] == [d / "sub" / "back", d / "up"]
    with pytest.raises(ImageDecodeError, match="loop"):
        decode_image(d / "up")


def test_link_cycle_through_two_folders_ends(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "x.png", seed=1)
    write_image(tmp_path / "b" / "y.png", seed=2)
    os.symlink("../b", tmp_path / "a" / "to_b")
    os.symlink("../a", tmp_path / "b" / "to_a")
    names = sorted(str(p.relative_to(tmp_path)) for p in list_images(tmp_path))
    # each folder is entered once per path that does not repeat a folder already on the walk
    assert names == ["a/to_b/y.png", "a/x.png", "b/to_a/x.png", "b/y.png"]
    assert len(scan_folder(tmp_path).bad_links) == 2


def test_followed_links_to_other_folders_still_work(tmp_path: Path) -> None:
    write_image(tmp_path / "store" / "s.png")
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(tmp_path / "store", d / "linked")
    os.symlink(tmp_path / "store" / "s.png", d / "file.png")
    assert list_images(d) == [d / "file.png", d / "linked" / "s.png"]


def test_training_discovery_with_loops(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_image(root / "real" / "r.png", seed=1)
    write_image(root / "fake" / "f.png", seed=2)
    os.symlink("..", root / "real" / "up")
    os.symlink("..", root / "up")
    os.symlink("y", root / "fake" / "x.jpg")
    os.symlink("x.jpg", root / "fake" / "y")
    samples = discover(root)
    assert [(s.path.name, s.label) for s in samples] == [("f.png", 1), ("r.png", 0)]
