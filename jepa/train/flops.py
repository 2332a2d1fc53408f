"""Model FLOPs of a training step and MFU (model FLOPs utilisation: achieved / the device's peak).

Per optimizer step, counted from the host-side collate (no device work):

    linear layers   6 x (weights of every nn.Linear in the blocks) x real tokens  (forward 2, backward 4)
    LM head         6 x V x D x label tokens (the fused loss only touches label positions)
    attention       12 x layers x query width x attended (query, key) pairs (QK^T and AV, forward + backward)

Under LoRA the frozen weights get no weight gradient: 4 instead of 6 (the adapters are negligible); the step
also reports the 6N figure (`tflops_6n`, `mfu_6n`), the convention most MFU figures use, so the two can be
compared. Padding and masked-out pairs are not counted: they are work the device does, not work the model needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jepa.models.base import CausalLM

# Dense bf16 / fp16 tensor-core peaks in TFLOPS, by a substring of torch.cuda.get_device_name() (first match).
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
               "A10G": 125.0, "RTX 4090": 165.0, "V100": 125.0}  # fmt: skip


@dataclass
class FlopCounter:
    linear_params: int  # weights of the blocks' nn.Linear layers (not the head)
    head_params: int  # vocabulary x width
    layers: int
    width: int  # query width: heads x head dim
    weight_grads: bool  # False under LoRA: frozen weights need only input gradients

    @classmethod
    def for_model(cls, model: CausalLM, lora: bool) -> FlopCounter:
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not model.lm_head)
        layers, width = model.attention_shape()
        return cls(linear_params=linear, head_params=model.lm_head.weight.numel(), layers=layers, width=width,
                   weight_grads=not lora)  # fmt: skip

    def step_flops(
        self, tokens: float, label_tokens: float, attended_pairs: float, *, weight_grads: bool | None = None
    ) -> float:
        """Model FLOPs of one step; `weight_grads` overrides the counter's own (True: the 6N convention)."""
        per_weight = 6 if (self.weight_grads if weight_grads is None else weight_grads) else 4
        return (per_weight * (self.linear_params * tokens + self.head_params * label_tokens)
                + 12 * self.layers * self.width * attended_pairs)  # fmt: skip


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    """`run.peak_tflops` when set, else the table's entry for this GPU; None (no MFU) on CPU or an unknown GPU."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)
