"""The image embedder as one torch module: uint8 camera frames in, embeddings out.

:class:`ImageEmbedder` is what ``image_embedder.onnx`` computes (contract/image_spec.py): uint8
frames ``[B, H, W, 3]`` at any size, RGB, to float32 embeddings ``[B, D]``. Everything between
the camera's pixels and the backbone happens in :meth:`ImageEmbedder.preprocess`, the one place,
so that the device does no image maths of its own:

1. **crop**: the largest centred square, side ``min(H, W)`` (offsets ``(H - side) // 2``,
   ``(W - side) // 2``);
2. **to float**, channels first (NCHW);
3. **colour order**: frames are RGB (``ImageSpec.colour_order``); channels are flipped only if
   the backbone's row says BGR (none does);
4. **resize** the square to ``input_px`` x ``input_px``: bilinear (half-pixel centres), with
   antialiasing, which matters only when shrinking (when enlarging, as for a 25 x 25 frame, it is
   plain bilinear). ONNX has it since opset 18 (``Resize(antialias=1)``), the torch.export-based
   exporter writes it, and ONNX Runtime's CPU provider runs it to within float rounding of torch
   (tests/export/test_image_embedder.py). TensorRT's ONNX parser (10.0) rejects ``antialias=1``
   (NVIDIA/TensorRT#3560): under ONNX Runtime's TensorRT provider that one node then runs on the
   next provider; ``antialias=False`` writes plain bilinear for a graph TensorRT must take whole;
5. **normalise**: ``(x / 255 - mean) / std``, per channel.

Crop then resize is the same as torchvision's ``Resize(input_px)`` + ``CenterCrop(input_px)``
(shorter side to ``input_px``, aspect ratio kept, centre crop) up to how the crop is rounded and
the filter's reach at the crop's edge; it keeps the graph's resize at a fixed output size.

Then the backbone's ``features`` (:mod:`.backbones`): the embedding, by global average pooling
(VGG-16 / AlexNet: fc7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import ImageBackbone

#: The channel order of the frames the device hands the graph (ImageSpec.colour_order).
FRAME_COLOUR_ORDER = "RGB"


class ImageEmbedder(nn.Module):
    """uint8 frames ``[B, H, W, 3]`` (RGB, any H and W) -> float32 embeddings ``[B, D]``.

    ``features``: the backbone's (normalised float NCHW at ``backbone.input_px`` -> ``[B, D]``).
    """

    def __init__(self, backbone: ImageBackbone, features: nn.Module, *, antialias: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_px = int(backbone.input_px)
        self.antialias = bool(antialias)
        self.flip_channels = backbone.colour_order != FRAME_COLOUR_ORDER
        self.features = features
        # mean and std are in the backbone's channel order, which the flip (before them) gives
        mean = torch.tensor(backbone.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(backbone.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` -> the backbone's input, float ``[B, 3, S, S]`` (module docstring)."""
        h, w = image.shape[1], image.shape[2]
        side = torch.sym_min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[:, top:top + side, left:left + side, :]
        torch._check(square.shape[1] > 0)  # lets torch.export trace the resize for any frame size
        torch._check(square.shape[2] > 0)
        x = square.permute(0, 3, 1, 2).to(torch.float32)
        if self.flip_channels:
            x = x.flip(1)
        x = F.interpolate(x, size=(self.input_px, self.input_px), mode="bilinear", align_corners=False,
                          antialias=self.antialias)
        # contiguous: the resize keeps the permuted (channels-last) strides, on which torch's own
        # convolutions run slower; the ONNX graph has no strides, so this is a no-op there
        return ((x / 255.0 - self.mean) / self.std).contiguous()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(image))
