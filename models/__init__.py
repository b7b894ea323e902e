"""Shipped ONNX models (installed as the package ``stereodeploy.models``); see README.md here, the model card."""
