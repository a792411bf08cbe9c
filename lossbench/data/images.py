"""Reading image and mask files as they come: PNG, JPEG, TIFF, BMP; 8-bit, 16-bit, float; 1, 3 or N channels.

Images become ``float32 [C, H, W]`` with their dynamic range kept: 8-bit values are divided by 255,
16-bit by 65535 (not clipped to 8 bits), float values are kept as they are. PNG and JPEG are
decoded by ``torchvision.io`` (which reads 16-bit PNG, where PIL drops to 8 bits), TIFF by
``tifffile`` (any number of bands, float samples), BMP and palette images by PIL. An alpha channel
is dropped. An EXIF orientation (phone cameras write one instead of rotating the pixels) is applied
to images and masks alike, as image viewers do, so a mask drawn on the image as it is shown fits it.

Masks become ``[H, W]`` integer class ids: single-channel PNG/TIFF values (8- or 16-bit), palette
('P') PNGs read as their indices, or RGB colour masks translated through a palette
``{colour: class id}``. Every problem is a ``ValueError`` naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
_TIFF = (".tif", ".tiff")


def _unreadable(path: Path, e: BaseException) -> ValueError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ValueError(f"cannot read {path}: {first} (damaged, truncated or not an image file?)")


def _pil_array(path: Path, mode: str | None = None) -> np.ndarray:
    from PIL import Image

    from PIL import ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)  # as viewers show it (EXIF orientation)
        if mode == "image" and im.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
            im = im.convert("L" if im.mode in ("LA", "1") else "RGB")
        arr = np.array(im)
    return arr


def _channels_last_to_first(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return np.moveaxis(arr, -1, 0)
    raise ValueError(f"image {path} has shape {arr.shape}; expected height × width or height × width × channels")


def _read_tiff(path: Path) -> np.ndarray:
    """A TIFF as ``[C, H, W]`` (``tifffile`` reads band-interleaved files as ``[H, W, C]`` or ``[C, H, W]``)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr = series.asarray()
        axes = series.axes
    if arr.ndim == 3 and axes.startswith(("S", "C", "Q", "I")) and not axes.endswith("S"):
        return np.ascontiguousarray(arr)  # planar: [C, H, W]
    return _channels_last_to_first(arr, path)


def decode_image_array(path: str | Path) -> np.ndarray:
    """The pixels of an image file as ``[C, H, W]`` in the file's own dtype (alpha dropped)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in _TIFF:
            arr = _read_tiff(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            arr = _decode_png_jpeg(path)
        else:
            arr = _channels_last_to_first(_pil_array(path, "image"), path)
    except ValueError as e:
        if str(e).startswith(("image ", "cannot read")):
            raise
        raise _unreadable(path, e) from None
    except (OSError, RuntimeError, SyntaxError, IndexError, KeyError, TypeError) as e:
        raise _unreadable(path, e) from None
    if arr.shape[0] in (2, 4) and suffix not in _TIFF:  # gray+alpha, RGBA
        arr = arr[:-1]
    return arr


def _decode_png_jpeg(path: Path) -> np.ndarray:
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file

    if _is_palette_png(path):
        return _channels_last_to_first(_pil_array(path, "image"), path)  # colours, not indices
    tensor = decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
    if tensor.dtype == torch.uint16:
        return tensor.to(torch.int32).numpy().astype(np.uint16)
    return tensor.numpy()


def _is_palette_png(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26 and head[25] == 3  # IHDR colour type 3


def to_float(arr: np.ndarray) -> np.ndarray:
    """Pixel values as float32, the dynamic range kept: uint8 / 255, uint16 / 65535, floats unchanged."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):  # 32-bit integer images: scaled by their type's range
        return (arr.astype(np.float64) / np.iinfo(arr.dtype).max).astype(np.float32)
    return arr.astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as ``float32 [C, H, W]`` (see the module docstring for the scaling)."""
    return to_float(decode_image_array(path))


def read_mask(path: str | Path, palette: Mapping[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """A mask file as ``[H, W]`` class ids (``uint8``, ``uint16`` or ``int32``).

    Single-channel files are read as values; palette PNGs as their indices; with ``palette``
    (``{(r, g, b): class id}``) an RGB mask is translated colour by colour, and a colour that is not
    in it is a ``ValueError`` naming the file, the colour and a pixel where it is.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF:
            arr = _read_tiff(path)
            arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        else:
            arr = _pil_array(path)
    except (OSError, RuntimeError, SyntaxError, ValueError, IndexError, KeyError, TypeError) as e:
        raise _unreadable(path, e) from None
    if palette is not None:
        return _colours_to_ids(arr, palette, path)
    if arr.ndim != 2:
        raise ValueError(
            f"mask {path} has shape {arr.shape}: expected single-channel class ids (or set data.palette to read "
            "RGB colour masks)"
        )
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        if not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"mask {path} holds non-integer values ({arr.dtype}); expected class ids")
    return arr.astype(np.uint8 if arr.dtype in (np.bool_, np.uint8) else np.int32)


def _colours_to_ids(arr: np.ndarray, palette: Mapping[tuple[int, int, int], int], path: Path) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise ValueError(f"mask {path} has shape {arr.shape}, but data.palette needs RGB colour masks")
    rgb = arr[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in palette], np.int64)
    ids = np.array(list(palette.values()), np.int64)
    order = np.argsort(keys)
    keys, ids = keys[order], ids[order]
    pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    known = keys[pos] == code
    if not known.all():
        y, x = np.argwhere(~known)[0]
        colour = tuple(int(c) for c in rgb[y, x])
        raise ValueError(f"mask {path} has colour {list(colour)} at row {y}, column {x}, which is not in data.palette")
    out = ids[pos]
    return out.astype(np.uint8 if out.max(initial=0) < 256 else np.int32)
