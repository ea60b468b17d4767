"""The next-token loss of a training step, computed in row chunks so no full-vocabulary fp32 tensor besides
the logits (and their gradient) is ever made.

`F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())` makes, for a [4, 256] batch
over a 49k vocabulary, a shifted copy of the logits, their log-softmax and, backwards, as many tensors again
(each 200 MB in fp32). Here the labels are shifted instead of the logits, and each chunk of rows is upcast,
reduced and differentiated while it is in cache: the same mean of -log p(label), to float rounding.

    loss = next_token_loss(logits, labels)   # logits [B, L, V] (any float dtype), labels [B, L], -100 ignored
"""

from __future__ import annotations

import torch

IGNORE = -100
CHUNK_ELEMENTS = 1 << 21  # ~8 MB of fp32 per chunk: a few chunk-sized temporaries stay within the cache


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the rows whose label is not IGNORE; logits [N, V], labels [N]."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        rows = max(1, CHUNK_ELEMENTS // logits.shape[1])
        valid = labels != IGNORE
        safe = labels.clamp(min=0)[:, None]
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for s in range(0, logits.shape[0], rows):
            x = logits[s : s + rows].float()
            lse[s : s + rows] = torch.logsumexp(x, 1)
            nll = lse[s : s + rows] - x.gather(1, safe[s : s + rows])[:, 0]
            total += nll.masked_fill(~valid[s : s + rows], 0.0).sum()
        count = valid.sum()
        ctx.save_for_backward(logits, safe, valid, lse, count)
        return total / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        logits, safe, valid, lse, count = ctx.saved_tensors
        rows = max(1, CHUNK_ELEMENTS // logits.shape[1])
        scale = valid.to(torch.float32) * (grad.float() / count)  # d mean / d nll of each row
        out = torch.empty_like(logits)
        for s in range(0, logits.shape[0], rows):
            p = (logits[s : s + rows].float() - lse[s : s + rows, None]).exp_()  # softmax
            at = safe[s : s + rows]
            p.scatter_(1, at, p.gather(1, at) - 1.0)  # softmax - onehot (one index per row: deterministic)
            out[s : s + rows] = p.mul_(scale[s : s + rows, None])
        return out, None


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over predicted tokens of -log p(next token): position t predicts labels[t + 1]."""
    shifted = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE)], 1)
    return _ChunkedCrossEntropy.apply(logits.flatten(0, 1), shifted.flatten())
