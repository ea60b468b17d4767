"""The training loop's speed choices compute what the plain versions compute: the chunked next-token loss
(value and gradient), no attention mask on right-padded rows, fused AdamW, and deterministic mode without its
NaN fill of new tensors. tests/test_train_golden.py checks the same end to end against stored losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdyn.train import loss as loss_mod
from kdyn.train.config import OptimizerConfig, TrainConfig
from kdyn.train.data import TokDoc, make_batches
from kdyn.train.loss import next_token_loss
from kdyn.train.session import make_accelerator, make_optimizer


def plain_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_loss_equals_cross_entropy_of_the_shifted_logits(monkeypatch, dtype):
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 7 * 50)  # 7 rows a chunk: 150 rows end mid-chunk
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 50, 50, generator=gen)).to(dtype).requires_grad_()
    labels = torch.randint(0, 50, (3, 50), generator=gen)
    labels[1, 31:] = -100  # a padded row
    labels[2, :6] = -100
    want = plain_loss(logits, labels)
    (want_grad,) = torch.autograd.grad(2.0 * want, logits)
    got = next_token_loss(logits, labels)
    (got_grad,) = torch.autograd.grad(2.0 * got, logits)
    assert got.dtype == torch.float32 and got_grad.dtype == dtype
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    tol = 1e-7 if dtype == torch.float32 else 1e-3 * want_grad.abs().max().item()
    assert torch.allclose(got_grad.float(), want_grad.float(), rtol=0, atol=tol)
    assert not got_grad[:, -1].any()  # the last position predicts nothing


def test_no_mask_gives_right_padded_rows_the_same_logits(tiny_lm):
    docs = [TokDoc(f"d{i}", "e", list(range(3, 3 + n))) for i, n in enumerate((40, 25, 60, 10))]
    (batch,) = make_batches(docs, seq_len=64, batch_size=4, pad_id=0)
    assert batch.attention_mask.min() == 0  # some rows are padded
    model = tiny_lm.model
    with torch.no_grad():
        masked = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        unmasked = model(input_ids=batch.input_ids).logits
    real = batch.attention_mask.bool()
    assert torch.allclose(unmasked[real], masked[real], rtol=0, atol=1e-5)
    assert plain_loss(unmasked, batch.labels).item() == pytest.approx(plain_loss(masked, batch.labels).item(), rel=1e-6)


def test_adamw_is_fused_on_cpu():
    model = torch.nn.Linear(4, 3)
    opt = make_optimizer(model, OptimizerConfig())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True


def test_deterministic_mode_does_not_fill_new_tensors(tmp_path):
    before = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    try:
        make_accelerator(TrainConfig(deterministic=True, precision="float32", threads=1), str(tmp_path), [])
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = before[1]


def test_matmul_peak_is_measured_on_the_given_device():
    """The in-loop MFU divides by the peak of the device the run trains on (a GPU run was measured against the CPU)."""
    import inspect

    from kdyn.train import loop
    from kdyn.train.flops import matmul_peak

    assert matmul_peak.__wrapped__(torch.float32, size=64, seconds=0.01, device="cpu") > 0
    assert "device=str(self.acc.device)" in inspect.getsource(loop.Loop.fit)
    if torch.cuda.is_available():
        assert matmul_peak(torch.bfloat16, device="cuda") > 10 * matmul_peak(torch.bfloat16, device="cpu")


def test_log_line_never_shows_an_mfu_above_100_percent():
    """The matmul peak is measured at the start; measured on a busy machine it is low and MFU read 152%."""
    from kdyn.train.progress import log_line

    assert "mfu 47.5%" in log_line(1, 10, 0.1, 2.0, 1e-4, 1.0, 200.0, 0.475)
    assert "mfu — (peak measured low)" in log_line(1, 10, 0.1, 2.0, 1e-4, 1.0, 200.0, 1.52)
