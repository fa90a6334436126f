"""Where models run and in which precision: the one place that chooses devices and dtypes.

``device="auto"`` picks CUDA, then Apple's MPS, then the CPU; ``dtype="auto"`` picks bfloat16 where the hardware
runs it fast (CUDA with bf16 support, and CPUs, where it is also 2.6-4x faster than float32 on chips with AMX),
float16 on MPS, float32 otherwise. torch is imported only when these functions are called, so ``import prm_gym``
works without the ``[llm]`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["available_devices", "resolve_device", "resolve_dtype"]

_DTYPE_NAMES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "fp64": "float64",
    "float64": "float64",
    "double": "float64",
}


def available_devices() -> list[str]:
    """Return the devices this machine can run on, e.g. ``["cpu", "cuda:0", "cuda:1"]``.

    Example:
        >>> "cpu" in available_devices()
        True
    """
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device named by ``device``: ``"auto"`` (CUDA, then MPS, then CPU) or an available one.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``, ``"mps"`` or a :class:`torch.device`.

    Returns:
        The device; ``"cuda"`` stays without an index (the current CUDA device).

    Raises:
        ValueError: when ``device`` is not a device name, or names one this machine does not have.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Unknown device 'tpu': expected 'auto' or one of the available devices ['cpu'...].
    """
    import torch

    available = available_devices()
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if "mps" in available else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"`device` should be a string or a torch.device. Received {device!r}.")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except RuntimeError:
        raise ValueError(
            f"Unknown device {device!r}: expected 'auto' or one of the available devices {available}."
        ) from None
    if resolved.type == "cuda" and resolved.index is None:
        usable = torch.cuda.is_available()
    else:
        usable = resolved.type == "cpu" or str(resolved) in available
    if not usable:
        raise ValueError(f"Device {device!r} is not available on this machine; available devices: {available}.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """Return the torch dtype named by ``dtype``; ``"auto"`` picks the fastest sound precision on ``device``.

    Args:
        dtype: ``"auto"``, a name (``"bf16"``, ``"bfloat16"``, ``"fp16"``, ``"float16"``, ``"fp32"``,
            ``"float32"``, ...) or a floating-point :class:`torch.dtype`.
        device: The device the model will run on (used by ``"auto"`` only).

    Returns:
        bfloat16 on CUDA with bf16 support and on CPU, float16 on MPS, float32 otherwise (for ``"auto"``).

    Raises:
        ValueError: when ``dtype`` is not a floating-point dtype name.

    Example:
        >>> resolve_dtype("auto", "cpu"), resolve_dtype("fp32")
        (torch.bfloat16, torch.float32)
    """
    import torch

    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"`dtype` should be a floating-point dtype. Received {dtype}.")
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"`dtype` should be a string or a torch.dtype. Received {dtype!r}.")
    name = dtype.strip().lower().removeprefix("torch.")
    if name == "auto":
        device_type = torch.device(device).type
        if device_type == "cpu" or (device_type == "cuda" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16 if device_type == "mps" else torch.float32
    if name not in _DTYPE_NAMES:
        raise ValueError(f"Unknown dtype {dtype!r}: expected 'auto' or one of {sorted(_DTYPE_NAMES)}.")
    return getattr(torch, _DTYPE_NAMES[name])
