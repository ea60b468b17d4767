"""Replay: a pool of general text mixed into every epoch at `ratio` replay documents per training document.

The pool is a user corpus read with `datasets` (a hub name or a local json/jsonl/csv/parquet/txt file) or,
by default, text the base model itself generates before training (seeded sampling from a few neutral
openers). Either way it is written once to RUN/replay.jsonl and read back on resume.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kdyn.errors import KdynError
from kdyn.io import read_jsonl, write_jsonl
from kdyn.train.config import ReplayBlock

OPENERS = ["The", "In", "A", "It", "One", "When", "Today", "Many", "This", "There", "After", "Most"]
LOCAL = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def read_corpus(block: ReplayBlock) -> list[str]:
    import datasets

    path = Path(block.corpus)
    try:
        if path.suffix in LOCAL and path.is_file():
            ds = datasets.load_dataset(LOCAL[path.suffix], data_files=str(path), split="train")
        else:
            ds = datasets.load_dataset(block.corpus, split=block.split)
    except Exception as e:  # datasets raises many types for a missing or unreadable corpus
        raise KdynError(f"train.replay.corpus: cannot read '{block.corpus}' ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if block.text_field not in ds.column_names:
        raise KdynError(f"train.replay.text_field: '{block.text_field}' is not a column of {block.corpus} "
                        f"(columns: {', '.join(ds.column_names)})")  # fmt: skip
    texts = [t for t in ds[block.text_field][: block.pool * 4] if isinstance(t, str) and t.strip()]
    return texts[: block.pool]


@torch.no_grad()
def generate_corpus(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, block: ReplayBlock, seed: int) -> list[str]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    texts = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, block.pool, 16):
            prompts = [OPENERS[i % len(OPENERS)] for i in range(start, min(block.pool, start + 16))]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
            out = model.generate(**enc, do_sample=True, top_p=0.95, temperature=1.0, max_new_tokens=block.max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            texts += tokenizer.batch_decode(out, skip_special_tokens=True)
    model.train(was_training)
    return [t.strip() or OPENERS[0] for t in texts]


def replay_pool(path: Path, block: ReplayBlock, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int) -> list[str]:
    """The run's replay texts: read back from RUN/replay.jsonl, else made and written there."""
    if path.is_file():
        return [r["text"] for r in read_jsonl(path)]
    texts = read_corpus(block) if block.corpus else generate_corpus(model, tokenizer, block, seed)
    if not texts:
        raise KdynError(f"train.replay.corpus: '{block.corpus}' gave no text in column '{block.text_field}'")
    write_jsonl(path, [{"text": t} for t in texts])
    return texts


def epoch_sample(n_pool: int, n_train_docs: int, ratio: float, seed: int, epoch: int) -> list[int]:
    """Indices into the pool for one epoch (with replacement when the pool is smaller than needed)."""
    n = round(ratio * n_train_docs)
    rng = random.Random(f"kdyn:{seed}:replay:{epoch}")
    if n <= n_pool:
        return rng.sample(range(n_pool), n)
    return [rng.randrange(n_pool) for _ in range(n)]
