"""The workstation side: data, training, transfer learning, export to ONNX, bundles. Needs torch.

In data-flow order:

- :mod:`.data.speech`: keyword clips synthesised with espeak-ng, split by voice (cached renderings).
- :mod:`.data.folder`: a user's folder-per-label dataset as clips (the device's own reader).
- :mod:`.audio.mel`: DSP constants (Slaney mel filterbank, DCT-II, windowed DFT kernel).
- :mod:`.audio.frontend`: PCM to MFCC / log-mel as a graph (conv-DFT, no STFT op).
- :mod:`.audio.model`: the DS-CNN embedder and keyword model; self-describing checkpoints.
- :mod:`.train`: train, test on held-out voices, compare with :mod:`.baselines`, write a bundle.
- :mod:`.onnx_export`: the graphs to ONNX; torch-vs-ONNX-Runtime parity.
- :mod:`.bundle`: the bundle directory (graphs, head, replay set, manifest) and its ``.tar``.
- :mod:`.cli`: ``edgetune export prepare-data | train | evaluate``.
"""
