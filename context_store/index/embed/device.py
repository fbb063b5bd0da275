"""Which device the model runs on: ``embedding.device`` auto | cpu | cuda (or cuda:N).

``auto`` is CUDA when torch sees a GPU, else the CPU, where the ONNX export serves. Deciding
must not cost a CPU-only process the torch import (1.1-1.8 s on the 2-core machine, warm
file cache, plus sentence-transformers behind it): torch is imported only when a GPU is
plausible, i.e. a GPU device node or driver exists (NVIDIA, or ROCm's ``/dev/kfd``),
``CUDA_VISIBLE_DEVICES`` does not hide every GPU, and the installed torch was built for CUDA
(read from ``torch/version.py``, not by importing it: ~0.1 ms). Only then does
``torch.cuda.is_available()`` decide. ``cpu`` decides nothing.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
from pathlib import Path

from context_store.errors import ConfigError
from context_store.settings import EMBEDDING_DEVICE_ENV

__all__ = ["cuda_available", "cuda_plausible", "is_cuda", "resolve_device"]

_BUILD_LINE = re.compile(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def is_cuda(device: str) -> bool:
    """``cuda`` or ``cuda:N`` (a resolved device, never ``auto``)."""
    return device == "cuda" or device.startswith("cuda:")


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` for a configured ``auto | cpu | cuda | cuda:N``; CUDA asked for
    where torch sees no GPU is a configuration error, not a crash at the first embedding."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if is_cuda(device) and not cuda_available():
        raise ConfigError(f"embedding.device is {device!r} but torch sees no CUDA GPU here: set it to auto or cpu "
                          f"(or {EMBEDDING_DEVICE_ENV}=cpu), or install a CUDA build of torch")
    return device


@functools.cache
def cuda_available() -> bool:
    """Whether torch sees a GPU; torch is imported only when ``cuda_plausible()``."""
    if not cuda_plausible():
        return False
    import torch

    return bool(torch.cuda.is_available())


def cuda_plausible() -> bool:
    """A GPU device node, not hidden by ``CUDA_VISIBLE_DEVICES``, and a CUDA (or ROCm) build of torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/kfd")):
        return False
    return _torch_gpu_build()


def _torch_gpu_build() -> bool:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    return _gpu_build_in(Path(next(iter(spec.submodule_search_locations))))


def _gpu_build_in(torch_dir: Path) -> bool:
    """Whether ``torch_dir/version.py`` names a CUDA or HIP version (a CPU build says None for both)."""
    try:
        text = (torch_dir / "version.py").read_text(encoding="utf-8")
    except OSError:
        return True  # an unusual layout: let torch itself decide
    return any(value.strip("'\"") != "None" for _, value in _BUILD_LINE.findall(text))
