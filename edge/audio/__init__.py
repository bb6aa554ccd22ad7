"""The audio path, in data-flow order.

- :mod:`.io`: audio files to float32 mono at the bundle's rate; a folder of labelled files.
- :mod:`.sources`: audio sources as URIs (a file, raw PCM on stdin, a microphone), in chunks.
- :mod:`.models`: the bundle's front-end and embedder in ONNX Runtime sessions; whole clips to embeddings.
- :mod:`.features`: incremental front-end features over a sliding window.
- :mod:`.stream`: the streaming classifier, hop by hop.
- :mod:`.detect`: posteriors to events (smoothing, threshold, refractory period).
"""
