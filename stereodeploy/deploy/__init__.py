"""From a trained network to files that run anywhere: ONNX export, int8, the one-file matcher, sidecars."""
