"""YouTube-8M record format: feature names, sizes and the official (de)quantisation."""

from __future__ import annotations

import numpy as np

NUM_CLASSES = 3862
RGB_SIZE = 1024
AUDIO_SIZE = 128
MAX_FRAMES = 300

ID = "id"
LABELS = "labels"
MEAN_RGB = "mean_rgb"
MEAN_AUDIO = "mean_audio"
FRAME_RGB = "rgb"
FRAME_AUDIO = "audio"

# Keys of the tensors the readers hand to the models.
MASK = "mask"
NUM_FRAMES = "num_frames"

MIN_QUANTIZED = -2.0
MAX_QUANTIZED = 2.0
QUANTIZATION_STEP = (MAX_QUANTIZED - MIN_QUANTIZED) / 255.0  # 4/255
QUANTIZATION_BIAS = (MAX_QUANTIZED - MIN_QUANTIZED) / 512.0 + MIN_QUANTIZED  # 4/512 - 2, as the starter code


def dequantize(quantized: np.ndarray) -> np.ndarray:
    """uint8 -> float32 as the official starter code: q * 4/255 + 4/512 - 2."""
    return quantized.astype(np.float32) * np.float32(QUANTIZATION_STEP) + np.float32(QUANTIZATION_BIAS)


def quantize(values: np.ndarray) -> np.ndarray:
    """float -> uint8: inverse of `dequantize` within half a quantisation step (values clipped to [-2, 2])."""
    scaled = np.rint((np.clip(values, MIN_QUANTIZED, MAX_QUANTIZED) - QUANTIZATION_BIAS) / QUANTIZATION_STEP)
    return np.clip(scaled, 0, 255).astype(np.uint8)
