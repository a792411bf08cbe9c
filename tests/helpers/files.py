"""Image folders as a user's come: odd sizes, 8- and 16-bit, PNG and TIFF, palette masks with a void value."""

from __future__ import annotations

from pathlib import Path


def write_png16(path: Path, array) -> None:
    """A 16-bit grayscale or RGB PNG (PIL cannot write 16-bit RGB): ``array`` is [H, W] or [H, W, 3] uint16."""
    import struct
    import zlib

    import numpy as np

    a = np.asarray(array, np.uint16)
    h, w = a.shape[:2]
    colour = 0 if a.ndim == 2 else 2
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PALETTE = {"sky": (128, 128, 128), "road": (128, 64, 128), "sign": (192, 128, 128), "ignore": (0, 0, 0)}


def write_mixed_folder(root: Path, sizes=((90, 120), (75, 100), (90, 120)), n=(4, 2, 3), seed=0, void=True) -> dict:
    """A small folder dataset as a user's comes: odd sizes, 8-bit RGB PNGs and 16-bit RGB TIFFs,
    palette ('P') PNG masks with a void value 255, and a classes.txt. Returns the truth it wrote."""
    import numpy as np
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("sky\nroad\nsign\n")
    truth = {}
    for split, count in zip(("train", "val", "test"), n):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            h, w = sizes[i % len(sizes)]
            mask = np.zeros((h, w), np.uint8)
            mask[h // 2 :] = 1
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            mask[y : y + 6, x : x + 6] = 2
            if void:
                mask[:2] = 255
            image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8) + (mask[..., None] % 3 * 60).astype(np.uint8)
            name = f"{split}{i:02d}"
            if i % 2:  # 16-bit RGB TIFF with the same content, full 16-bit range
                tifffile.imwrite(root / split / "images" / f"{name}.tif", image.astype(np.uint16) * 257, photometric="rgb")
            else:
                Image.fromarray(image).save(root / split / "images" / f"{name}.png")
            p = Image.fromarray(mask, mode="P")
            p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [255, 255, 255] * 253)
            p.save(root / split / "masks" / f"{name}.png")
            truth[(split, name)] = (image, mask)
    return truth
