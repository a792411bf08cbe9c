"""NIfTI volumes as a user's folder holds them, for the volume and init tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SPACING = (3.0, 0.7, 1.2)  # [D, H, W] mm: anisotropic


def ras_volume(seed: int = 0, shape=(10, 14, 12)) -> tuple[np.ndarray, np.ndarray]:
    """An image ``[D, H, W]`` and a mask with a lesion (1) and a tube (2), in RAS order."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 50, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[2:4, 3:6, 4:7] = 1
    mask[:, 9, 8] = 2
    image[mask == 1] += 200
    image[mask == 2] += 400
    return image, mask


def save_nifti(path: Path, array_dhw: np.ndarray, spacing=SPACING, orientation: str = "RAS") -> None:
    """Write ``array_dhw`` (RAS, slice-first) as NIfTI stored in another ``orientation`` (e.g. ``LPI``, ``PSL``):
    the same anatomy under a non-identity affine (axes flipped and permuted), with the spacing in it."""
    xyz = np.swapaxes(array_dhw, 0, 2)  # x (R), y (A), z (S)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = [-20.0, 13.5, 7.0]
    img = nib.Nifti1Image(xyz, affine)
    target = nib.orientations.axcodes2ornt(tuple(orientation))
    img = img.as_reoriented(nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), target))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def nifti_folder(root: Path, counts=(3, 2, 2), orientation: str = "PIL") -> Path:
    """A user's NIfTI folder in the split layout, stored in a non-RAS orientation."""
    for split, n, offset in zip(("train", "val", "test"), counts, (0, 10, 20)):
        for i in range(n):
            image, mask = ras_volume(offset + i)
            save_nifti(root / split / "images" / f"case{i}.nii.gz", image, orientation=orientation)
            save_nifti(root / split / "masks" / f"case{i}.nii.gz", mask, orientation=orientation)
    (root / "classes.txt").write_text("background\nlesion\nvessel\n")
    return root
