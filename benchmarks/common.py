"""What the benchmark scripts share: the shared SmolLM2 model's path and the machine line every run prints."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

#: The shared SmolLM2-135M-Instruct GGUF (``../shared`` beside the repository).
SHARED_GGUF = (
    Path(__file__).resolve().parents[2] / "shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
)


def machine() -> str:
    """Describe the machine in one line: OS, CPU, cores, load average, GPU and versions (torch once imported)."""
    parts = [platform.platform(), platform.processor() or platform.machine(), f"{os.cpu_count()} cores"]
    parts.append("load average " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))
    versions = [f"Python {platform.python_version()}"]
    torch = sys.modules.get("torch")
    if torch is not None:
        versions.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name())
    return ", ".join(parts) + "; " + ", ".join(versions)
