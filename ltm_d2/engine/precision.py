"""
The training precision, chosen by the hardware the run is on: SOLVER.AMP.ENABLED is the user's wish
for mixed precision, and what it means depends on the device. The network runs under autocast in
the chosen dtype; the matching is computed in float32 whatever the choice (`LTM.dense_losses`).
"""

import time
from dataclasses import dataclass
from functools import partial

import torch

from detectron2.engine import AMPTrainer, SimpleTrainer

# SOLVER.AMP.PRECISION: the low precision asked for on a GPU.
GPU_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX, AVX512-BF16, Arm BF16), as oneDNN sees
    it (so ONEDNN_MAX_CPU_ISA restricts it too). Elsewhere bfloat16 is emulated, and far slower
    than float32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_capability() -> str:
    """The CPU's vector capability as PyTorch uses it ("AVX2", "AVX512", ...), with ", AMX" where
    oneDNN may use AMX tiles: what a CPU speed figure depends on."""
    capability = torch.backends.cpu.get_cpu_capability()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # torch >= 2.2
    if cpu_has_native_bfloat16() and amx():
        capability += ", AMX"
    return capability


def machine_name(device: torch.device) -> str:
    """The processor a run's speed depends on: the GPU's name, or the CPU and its capability."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"CPU ({cpu_capability()})"
    return device.type


@dataclass(frozen=True)
class Precision:
    """The dtype the network trains in (float32: no autocast), on which device, and why."""

    dtype: torch.dtype
    device_type: str
    machine: str
    reason: str

    @property
    def autocast(self) -> bool:
        return self.dtype != torch.float32

    def describe(self) -> str:
        """One line for the training log."""
        name = str(self.dtype).replace("torch.", "")
        where = "autocast" if self.autocast else "throughout"
        return f"Training precision: {name} {where} on {self.machine}: {self.reason}."

    def trainer(self, model, data_loader, optimizer) -> SimpleTrainer:
        """The loop that runs one training step in this precision."""
        if not self.autocast:
            return SimpleTrainer(model, data_loader, optimizer)
        if self.device_type == "cuda":
            return AMPTrainer(model, data_loader, optimizer, precision=self.dtype)
        return CPUAutocastTrainer(model, data_loader, optimizer, precision=self.dtype)


def training_precision(cfg, device: torch.device) -> Precision:
    """:func:`choose_precision` of SOLVER.AMP.ENABLED and SOLVER.AMP.PRECISION on `device`."""
    return choose_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.PRECISION, device)


def choose_precision(
    enabled: bool,
    asked: str,
    device: torch.device,
    keys=("SOLVER.AMP.ENABLED", "SOLVER.AMP.PRECISION"),
) -> Precision:
    """
    What mixed precision `enabled` means on `device` (`keys`: where the config sets `enabled`
    and `asked`, SOLVER.AMP or a LazyConfig's train.amp, for the reason given):
    - on a GPU, Detectron2's AMPTrainer in `asked` (float16 by default;
      bfloat16 only where the GPU supports it, float16 otherwise);
    - on a CPU, bfloat16 autocast where the CPU computes bfloat16 natively, float32 otherwise;
    - float32 where it is off, or on any other device.
    """
    device = torch.device(device)
    chosen = partial(Precision, device_type=device.type, machine=machine_name(device))
    enabled_key, precision_key = keys
    if not enabled:
        return chosen(torch.float32, reason=f"{enabled_key} is False")
    if device.type == "cuda":
        if asked == "bfloat16" and not torch.cuda.is_bf16_supported():
            return chosen(
                torch.float16,
                reason=f"{precision_key} bfloat16, which this GPU lacks; float16 instead",
            )
        return chosen(GPU_PRECISIONS[asked], reason=f"{precision_key} {asked}")
    if device.type == "cpu":
        if cpu_has_native_bfloat16():
            return chosen(torch.bfloat16, reason=f"{enabled_key}, and this CPU has native bfloat16")
        return chosen(
            torch.float32,
            reason=f"{enabled_key}, but this CPU has no native bfloat16, which emulated is "
            "about 25 times slower than float32",
        )
    return chosen(torch.float32, reason=f"no mixed precision on {device.type}")


class CPUAutocastTrainer(SimpleTrainer):
    """
    SimpleTrainer whose forward pass (network and losses) runs under CPU autocast in `precision`,
    as Detectron2's AMPTrainer runs it under CUDA autocast (which needs CUDA); the backward pass
    and the optimizer step run outside it. bfloat16 keeps float32's exponent range, so there is
    no gradient scaling.
    """

    def __init__(self, model, data_loader, optimizer, precision=torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
