"""Images of a URL list written under a temporary name (where the file system has no O_TMPFILE): a symlink
planted under that name in a folder others may write must not be written through."""
from __future__ import annotations

import os

from place_helpers import image_bytes

from vlmdata import atomic


def test_a_symlink_planted_at_an_images_temporary_is_not_written_through(tmp_path, monkeypatch):
    """Found in the security audit: where the file system has no O_TMPFILE (NFS, where shared roots live),
    a URL list's image is written under a temporary name (the thread's id) opened without O_NOFOLLOW."""
    import threading

    import vlmdata.place.images as images

    monkeypatch.setattr(images, "_unnamed", [False])
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file\n")
    folder = tmp_path / "imgs"
    folder.mkdir()
    os.symlink(victim, folder / f"{atomic.TMP_PREFIX}a.jpg.{threading.get_ident()}")
    try:
        images.save_image(image_bytes("jpeg"), folder / "a.jpg", to_jpeg=True)
    except OSError:
        pass  # (refusing to write there is right too)
    assert victim.read_bytes() == b"someone's file\n"
