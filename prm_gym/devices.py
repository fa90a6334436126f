"""Where models run and in which precision: the one place that chooses devices and dtypes.

``device="auto"`` picks CUDA, then Apple's MPS, then the CPU; ``dtype="auto"`` picks bfloat16 where the hardware
computes in it (:func:`bf16_is_native`: CUDA with bf16 support, and CPUs with AVX-512 or AMX, where it is also
2.6-4x faster than float32 on chips with AMX), float16 on MPS, float32 otherwise: on a CPU with AVX2 only, bf16
is emulated and SmolLM2-135M forwards take 4-6x as long as in float32 (benchmarks/RESULTS.md). Training
decides its bf16 autocast the same way. torch is imported only when these functions are called, so ``import
prm_gym`` works without the ``[llm]`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["available_devices", "bf16_is_native", "resolve_device", "resolve_dtype"]

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


def bf16_is_native(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes in bfloat16 at full speed (where ``dtype="auto"`` and training pick bf16).

    That is CUDA with bf16 support, or a CPU whose bf16 kernels oneDNN runs natively: x86 with AVX-512 or AMX,
    Arm with bf16 (torch's own ``_is_mkldnn_bf16_supported``). On AVX2 alone bf16 is emulated, 4-6x slower.

    Example:
        >>> bf16_is_native("meta")
        False
    """
    import torch

    device_type = torch.device(device).type
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without that op: AVX-512 is what its kernels need on x86
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """Return the torch dtype named by ``dtype``; ``"auto"`` picks the fastest sound precision on ``device``.

    Args:
        dtype: ``"auto"``, a name (``"bf16"``, ``"bfloat16"``, ``"fp16"``, ``"float16"``, ``"fp32"``,
            ``"float32"``, ...) or a floating-point :class:`torch.dtype`.
        device: The device the model will run on (used by ``"auto"`` only).

    Returns:
        For ``"auto"``: bfloat16 where :func:`bf16_is_native`, float16 on MPS, float32 otherwise.

    Raises:
        ValueError: when ``dtype`` is not a floating-point dtype name.

    Example:
        >>> resolve_dtype("auto", "cpu") == resolve_dtype("bf16" if bf16_is_native("cpu") else "fp32")
        True
        >>> resolve_dtype("bf16"), resolve_dtype("fp32")
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
        if bf16_is_native(device):
            return torch.bfloat16
        return torch.float16 if torch.device(device).type == "mps" else torch.float32
    if name not in _DTYPE_NAMES:
        raise ValueError(f"Unknown dtype {dtype!r}: expected 'auto' or one of {sorted(_DTYPE_NAMES)}.")
    return getattr(torch, _DTYPE_NAMES[name])
