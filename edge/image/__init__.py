"""The image modality on the device: camera sources, frame checks, the image embedder and detector."""
