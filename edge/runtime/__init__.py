"""Running the bundle's ONNX graphs: execution providers and sessions (:mod:`.providers`)."""
