"""The models: building a network from ``model:`` and predicting whole images and volumes with it.

* ``model.dims: 2`` (images, and volumes slice by slice) — :func:`build_model`: a segmentation-models-pytorch
  model (``model.arch``, ``model.encoder``, ``model.encoder_weights``, ``model.kwargs``); pretrained weights that
  cannot be had are a :class:`WeightsUnavailable` sentence.

Volumes:

* ``model.dims: 3`` — :func:`build_volume_model`: a class of ``monai.networks.nets`` by name (``model.arch``:
  ``UNet``, ``SegResNet``, ``BasicUNet``, ``AttentionUnet``, ...) built with ``spatial_dims=3`` and the data's
  channels and classes; ``model.kwargs`` go to it (``UNet`` without ``channels``/``strides`` gets
  ``(16, 32, 64, 128)`` / ``(2, 2, 2)`` and one residual unit). It is checked on one patch before training.
  A volume is predicted by ``monai.inferers.sliding_window_inference`` over patches of ``data.volumes.patch``
  (``overlap``, Gaussian weighting).
* ``model.dims: 2`` — the 2-D smp model; a volume is predicted slice by slice (each with its ``model.context``
  neighbours as channels, padded to the model's input multiple) and the slices' logits stacked back.

Either way the prediction is ``[1, C, D, H, W]`` at the volume's own grid, so the metrics are computed at its
original spacing.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor


class WeightsUnavailable(ValueError):
    """Pretrained encoder weights were asked for but cannot be had (no network and no cached copy)."""


def build_model(model_cfg: dict[str, Any], in_channels: int, num_classes: int) -> torch.nn.Module:
    """A segmentation-models-pytorch model.

    ``model_cfg["encoder_weights"]`` (e.g. ``"imagenet"``) loads a pretrained encoder through smp,
    from the Hugging Face cache or by downloading it once; ``None`` (the default) initialises at
    random and never touches the network. Weights that cannot be had are a
    :class:`WeightsUnavailable` sentence.
    """
    weights = model_cfg.get("encoder_weights")
    encoder = model_cfg["encoder"]
    if weights is not None and encoder.startswith("tu-"):
        weights = True  # timm encoders take a flag; the pretrained tag is part of the encoder name
    try:
        return smp.create_model(
            arch=model_cfg["arch"],
            encoder_name=encoder,
            encoder_weights=weights,
            in_channels=in_channels,
            classes=num_classes,
            **(model_cfg.get("kwargs") or {}),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"cannot build model arch={model_cfg['arch']!r} encoder={encoder!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 — hub and network errors come in many types
        if weights is None:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsUnavailable(
            f"model.encoder_weights={model_cfg.get('encoder_weights')!r} for encoder {encoder!r} cannot be loaded — no "
            f"cached copy and no download ({type(e).__name__}: {first[:200]}); connect once to fill the cache "
            "(~/.cache/huggingface), or set model.encoder_weights: null"
        ) from None


def input_multiple(model: torch.nn.Module) -> int:
    """The multiple an input's height and width must be for ``model`` (its encoder's output stride)."""
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "output_stride", 32) or 32)


_UNET_DEFAULTS = {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1}


def build_volume_model(model_cfg: dict[str, Any], in_channels: int, num_classes: int, patch: tuple[int, int, int]) -> torch.nn.Module:
    """The MONAI network ``model.arch`` for 3-D input, checked on one ``patch``: a ``ValueError`` naming the
    arch and the patch when it cannot be built or does not return ``[B, C, *patch]``."""
    from monai.networks import nets

    arch = model_cfg["arch"]
    cls = getattr(nets, arch, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        known = sorted(n for n in dir(nets) if isinstance(getattr(nets, n), type) and n[0].isupper())
        raise ValueError(f"model.arch {arch!r} is not a network of monai.networks.nets (model.dims 3); some that are: "
                         f"{', '.join(n for n in known if n in ('UNet', 'SegResNet', 'BasicUNet', 'AttentionUnet', 'DynUNet', 'VNet', 'UNETR', 'SwinUNETR'))}")  # fmt: skip
    kwargs = dict(model_cfg.get("kwargs") or {})
    if cls in (nets.UNet,) and "channels" not in kwargs and "strides" not in kwargs:
        kwargs = {**_UNET_DEFAULTS, **kwargs}
    try:
        model = cls(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(f"cannot build model.arch {arch!r} (MONAI, spatial_dims 3) with model.kwargs {kwargs}: {e}") from None
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, in_channels, *patch))
        model.train()
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"model.arch {arch!r} cannot take a patch of data.volumes.patch {list(patch)}: {type(e).__name__}: "
                         f"{str(e)[:200]} (a patch side usually must be a multiple of the network's total stride)") from None  # fmt: skip
    if tuple(out.shape) != (1, num_classes, *patch):
        raise ValueError(f"model.arch {arch!r} returns {list(out.shape)} for a patch {list(patch)}, not [1, {num_classes}, "
                         f"{', '.join(map(str, patch))}]: choose data.volumes.patch as a multiple of the network's total stride")  # fmt: skip
    return model


def slice_stack(volume: Tensor, context: int) -> Tensor:
    """``[C, D, H, W]`` → ``[D, C·(2k+1), H, W]``: each slice with ``k = context`` neighbours on each side as channels
    (the end slices repeated past the volume's ends), in the channel order training uses."""
    c, d, h, w = volume.shape
    if context == 0:
        return volume.permute(1, 0, 2, 3)
    padded = torch.cat([volume[:, :1].expand(c, context, h, w), volume, volume[:, -1:].expand(c, context, h, w)], 1)
    windows = padded.unfold(1, 2 * context + 1, 1)  # [C, D, H, W, 2k+1]
    return windows.permute(1, 0, 4, 2, 3).reshape(d, c * (2 * context + 1), h, w)


def predict_slices(model: torch.nn.Module, volume: Tensor, context: int, multiple: int, batch: int) -> Tensor:
    """Logits ``[1, K, D, H, W]`` of the 2-D ``model`` on every slice of ``volume`` ``[1, C, D, H, W]``."""
    stack = slice_stack(volume[0], context)
    h, w = stack.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    outs = []
    for start in range(0, stack.shape[0], batch):
        x = stack[start : start + batch]
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        outs.append(model(x)[..., :h, :w])
    return torch.cat(outs).permute(1, 0, 2, 3)[None]


def predict_patches(model: torch.nn.Module, volume: Tensor, patch: tuple[int, int, int], overlap: float, batch: int) -> Tensor:
    """Logits ``[1, K, D, H, W]`` of the 3-D ``model`` on ``volume`` by sliding windows of ``patch`` (MONAI)."""
    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(volume, roi_size=patch, sw_batch_size=batch, predictor=model, overlap=overlap, mode="gaussian")
    return out.as_tensor() if hasattr(out, "as_tensor") else out
