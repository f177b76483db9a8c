"""`DEVICE` to a llama.cpp build and GPU, by GPT4All's own rules; never a silent fall-back to the CPU.

GPT4All's Python bindings (gpt4all.py, `GPT4All.__init__`, 2.8.2) map a device to a backend:
`cpu` is the Kompute build with no GPU; `cuda` and `cuda:<name>` the CUDA build; `gpu`, `kompute`,
`amd`, `nvidia`, `intel`, `kompute:<name>` or a device name the Kompute build on that GPU. Its
loader (`LLamaModel::initializeGPUDevice` and `loadModel`) then picks the device from its list and
loads with `main_gpu` = the device's index, `n_gpu_layers` = 100 (the bindings' `ngl`) and no split.
The list is GPT4All's own (`llmodel_available_gpu_devices`). A device that names no GPU in it is an
error at load, which says so; this machine has none, so only that refusal is tested here.
"""

from __future__ import annotations

from dataclasses import dataclass

from errors import ModelLoadFailed

GPU_LAYERS = 100  # GPT4All's default `ngl`
VENDORS = ("amd", "nvidia", "intel")


@dataclass(frozen=True)
class Placement:
    backend: str  # which build: "kompute" (also the CPU's) or "cuda"
    gpu: tuple[int, int] | None = None  # (device index, layers offloaded); None: the CPU


def resolve(device: str, model_name: str) -> Placement:
    device = device.strip()
    if device in ("", "cpu"):
        return Placement("kompute")
    backend, wanted = _backend_and_name(device)
    listed = available_gpus()
    for gpu_backend, index, name, vendor in listed:
        if gpu_backend == backend and (wanted == "gpu" or wanted == name or (backend == "kompute" and wanted == vendor)):
            return Placement(backend, (index, GPU_LAYERS))
    listed = ", ".join(f"{b}:{n}" for b, _, n, _ in listed) or "none"
    raise ModelLoadFailed(
        f"could not load {model_name} on DEVICE={device}: GPT4All finds no matching {backend} GPU "
        f"(devices it lists: {listed}); set DEVICE=cpu to run on the CPU"
    )


def _backend_and_name(device: str) -> tuple[str, str]:
    if device in ("cuda", "kompute", "gpu"):
        return ("cuda" if device == "cuda" else "kompute"), "gpu"
    for prefix in ("cuda:", "kompute:"):
        if device.startswith(prefix):
            return prefix[:-1], device[len(prefix):]
    return "kompute", device  # a vendor or a device name


def available_gpus() -> list[tuple[str, int, str, str]]:
    """(backend, index, name, vendor) of every GPU GPT4All's loader lists."""
    import ctypes

    from gpt4all._pyllmodel import llmodel  # loads GPT4All's libraries (and CUDA's runtime, if installed)

    count = ctypes.c_int32(0)
    devices = llmodel.llmodel_available_gpu_devices(0, ctypes.byref(count))
    if not devices:
        return []
    return [(d.backend.decode(), d.index, d.name.decode(), d.vendor.decode()) for d in devices[: count.value]]
