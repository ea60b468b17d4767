"""Model FLOPs per token (PaLM appendix B: 6N + 12·L·d·T) and the machine's measured matmul peak, for MFU."""

from __future__ import annotations

import functools
import time

import torch
from torch import nn


def model_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 × (parameters doing matmuls, the output head included) + attention."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb
    n = total - (0 if tied else emb.numel())
    layers = getattr(cfg, "num_hidden_layers", 0)
    hidden = getattr(cfg, "hidden_size", 0)
    return 6.0 * n + 12.0 * layers * hidden * seq_len


@functools.cache
def matmul_peak(dtype: torch.dtype = torch.bfloat16, size: int = 1024, seconds: float = 0.5, device: str = "cpu") -> float:
    """Measured dense matmul FLOP/s for `dtype` on `device` (best of repeated timed runs): the CPU the run trains
    on, or its GPU (synchronised timing, 8192² matrices as benchmarks/gpu_speed.py: a 1024² one cannot fill a GPU)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    size = max(size, 8192) if cuda else size
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    a = torch.randn(size, size, device=dev).to(dtype)
    b = torch.randn(size, size, device=dev).to(dtype)
    torch.mm(a, b)
    sync()
    best, spent = 0.0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        sync()
        dt = time.perf_counter() - t0
        spent += dt
        best = max(best, 4 * 2 * size**3 / dt)
    return best
