"""Inference: the Predictor (checkpoint or ONNX), reading and writing exported models, prediction files."""
