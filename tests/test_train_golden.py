"""Golden numbers: the per-step fp32 loss and gradient norm (RUN/train_log.parquet) of tiny runs equal those of
commit 252123c, the training loop before the speed work, so a change that alters what a strategy computes
beyond float noise fails here.

The runs train tiny-random-llama on a stored benchmark (tests/data/golden_bench: `kdyn bench build` of the
tiny config at 252123c, probes cut to 12), with every setting that shapes the numbers given explicitly, so a
change to the bench generator or to configs/tiny.yaml does not move them. To regenerate (only when the
numbers are meant to change, saying why in the commit), run the loop below against the old tree with
PYTHONPATH=<that tree>/src and paste `[(loss, grad_norm), ...]` per run.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kdyn.experiment import load_experiment
from kdyn.train import train

BENCH = Path(__file__).parent / "data" / "golden_bench"
BASE = ["model=tiny-random-llama", f"train.bench_dir={BENCH}", "train.precision=float32", "train.threads=1",
        "train.seed=0", "train.epochs=2", "train.seq_len=256", "train.batch_size=4", "train.optimizer.lr=0.001",
        "train.schedule.kind=cosine", "train.schedule.warmup_steps=1", "train.checkpoints.save=false"]  # fmt: skip
RUNS = {
    "full": [],
    "lora": ["train.lora.enabled=true", "train.lora.r=4"],
    "kl": ["train.kl.base=0.5", "train.kl.previous_epoch=0.5"],  # both references: a frozen copy, then epoch 1's model
    "kl-lora": ["train.kl.base=0.5", "train.lora.enabled=true", "train.lora.r=4"],  # reference: the adapter off
    "accum": ["train.grad_accum=2", "train.batch_size=2"],
}
# (loss, grad_norm) per optimizer step, from commit 252123c (identical, to the last bit, on the tree before the speed work)
GOLDEN = {
    "full": [(5.579087, 2.343457), (5.455641, 2.221541), (5.323059, 2.224185), (5.213358, 2.039476), (5.098559, 1.900223),
             (5.029052, 1.827872), (4.9645, 1.877777), (4.941393, 1.75789), (4.904245, 1.788039), (4.890332, 1.759892),
             (4.887146, 2.172984)],
    "lora": [(5.579087, 1.028445), (5.532105, 0.9113425), (5.531794, 0.9836347), (5.507996, 0.8811679), (5.47599, 0.9841887),
             (5.458502, 1.005007), (5.436474, 1.071069), (5.445674, 1.069753), (5.423593, 1.07036), (5.432825, 1.083654),
             (5.414337, 1.411179)],
    "kl": [(5.579087, 2.343457), (5.455641, 2.169575), (5.322438, 2.152545), (5.212673, 1.965216), (5.097428, 1.816272),
           (5.028362, 1.778629), (4.96397, 1.819783), (4.941541, 1.690744), (4.904188, 1.7137), (4.890399, 1.679325),
           (4.88897, 2.112947)],
    "kl-lora": [(5.579087, 1.028445), (5.532105, 0.9088625), (5.531796, 0.9764388), (5.508005, 0.8701067),
                (5.475974, 0.9692865), (5.458458, 0.9874776), (5.436405, 1.048887), (5.445616, 1.043331),
                (5.423499, 1.042065), (5.432773, 1.052978), (5.41437, 1.370581)],
    "accum": [(5.577589, 2.349837), (5.455846, 2.228213), (5.322975, 2.223691), (5.214159, 2.058022), (5.099036, 1.901903),
              (5.030179, 1.811684), (4.965243, 1.883866), (4.941378, 1.758098), (4.903694, 1.786305), (4.89163, 1.758072),
              (4.886699, 2.170995)],
}


@pytest.mark.parametrize("name", GOLDEN)
def test_fp32_losses_equal_the_golden_run(tmp_path, name):
    cfg = load_experiment("tiny", BASE + RUNS[name])
    train(cfg, tmp_path / name, show_progress=False)
    log = pq.read_table(tmp_path / name / "train_log.parquet").to_pylist()
    assert [r["step"] for r in log] == list(range(1, len(GOLDEN[name]) + 1))
    losses = [r["loss"] for r in log]
    norms = [r["grad_norm"] for r in log]
    # stored to 7 significant digits; the speed work moved them by <= 2e-7 (float noise: summation order, fused kernels)
    assert losses == pytest.approx([x for x, _ in GOLDEN[name]], rel=1e-5, abs=0)
    assert norms == pytest.approx([g for _, g in GOLDEN[name]], rel=1e-5, abs=0)


def test_compiled_training_step_computes_the_golden_losses(tmp_path):
    """train.compile=true (inductor) runs the same step: fused kernels move float sums, nothing more."""
    cfg = load_experiment("tiny", BASE + ["train.compile=true"])
    train(cfg, tmp_path / "compiled", show_progress=False)
    log = pq.read_table(tmp_path / "compiled" / "train_log.parquet").to_pylist()
    assert [r["loss"] for r in log] == pytest.approx([x for x, _ in GOLDEN["full"]], rel=1e-4, abs=0)
    assert [r["grad_norm"] for r in log] == pytest.approx([g for _, g in GOLDEN["full"]], rel=1e-3, abs=0)
