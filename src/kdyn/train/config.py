"""TrainConfig: the `train:` section of an experiment YAML — loop settings plus composable strategy blocks.

Every block has defaults that switch it off, so a config names only what it uses:

    train:
      epochs: 6
      optimizer: {lr: 5.0e-5}
      lora: {enabled: true, r: 16}          # LoRA (peft) instead of full fine-tuning
      replay: {ratio: 0.25}                 # 1 replay document per 4 training documents
      kl: {base: 0.1, previous_epoch: 0.0}  # KL to the base model / the previous epoch's model
      sam: {rho: 0.05}                      # sharpness-aware minimisation around the optimizer
      augment: {formats: [prose, json], paraphrases: 3}   # sets bench.formats / bench.templates_per_fact
      adaptive: {enabled: true}             # drop documents of entities learned at the last probe
      keep_state: false                     # true keeps RUN/state/ once the run is complete (see below)

RUN/state/ is the resume point (optimizer moments, trainable weights, RNG): about 3x the trainable weights'
size in fp32 with AdamW, and needed only to continue a run that stopped. A completed run deletes it unless
`keep_state: true` (to train it further by hand); its checkpoints stay. `keep_state` changes only what is kept,
so `--resume` may change it and a sweep's runs do not go stale over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kdyn.bench.config import FORMATS
from kdyn.device import Precision

TrackerName = Literal["tensorboard", "mlflow", "wandb"]
# settings of what a run keeps, not of what it computes: ignored when configs are compared (--resume, sweeps)
KEPT_ONLY = ("train.keep_state",)


def config_difference(saved: Any, wanted: Any, path: str = "") -> str | None:
    """The first dotted key whose value differs, as 'key (saved → wanted)'; keys the saved config lacks (options
    added to kdyn after the run) are not differences, and neither are the settings of a block that is off in both
    (`enabled: false`: circuits, lora, adaptive — a changed default there changes nothing the run did). None when the
    configs agree."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        if saved.get("enabled") is False and wanted.get("enabled") is False:
            return None
        for key in saved:
            dotted = f"{path}.{key}" if path else str(key)
            if dotted in KEPT_ONLY:  # what a run keeps afterwards, not what it computed
                continue
            if key not in wanted:
                return f"{dotted} (no longer an option)"
            found = config_difference(saved[key], wanted[key], dotted)
            if found:
                return found
        return None
    return None if saved == wanted else f"{path} ({saved!r} → {wanted!r})"


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    max_grad_norm: float = 1.0  # 0 disables clipping

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError("optimizer.lr must be > 0")
        if len(self.betas) != 2:
            raise ValueError("optimizer.betas must be two numbers")


@dataclass
class ScheduleConfig:
    kind: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps is 0
    min_lr_ratio: float = 0.0  # linear / cosine decay floor, as a fraction of optimizer.lr

    def validate(self) -> None:
        if self.warmup_steps < 0 or not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("schedule: warmup_steps >= 0, 0 <= warmup_ratio < 1, 0 <= min_lr_ratio <= 1")


@dataclass
class LoraBlock:
    """LoRA via peft; `train_embeddings` also trains the (tied) embeddings, as Mousavi et al. do."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    train_embeddings: bool = False

    def validate(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError("lora.r and lora.alpha must be >= 1")


@dataclass
class ReplayBlock:
    """Replay: `ratio` replay documents per training document, drawn afresh each epoch.

    `corpus`: a `datasets` name or local file (json/jsonl/csv/parquet/txt) with a `text_field`; empty means
    text the base model generates before training (cached in RUN/replay.jsonl)."""

    ratio: float = 0.0
    corpus: str = ""
    split: str = "train"
    text_field: str = "text"
    pool: int = 64  # replay documents kept (generated or read)
    max_new_tokens: int = 64  # generated replay: length of each sample

    def validate(self) -> None:
        if self.ratio < 0 or self.pool < 1 or self.max_new_tokens < 1:
            raise ValueError("replay: ratio >= 0, pool >= 1, max_new_tokens >= 1")


@dataclass
class KLBlock:
    """Token-level KL(reference || model) added to the loss, weighted per reference."""

    base: float = 0.0  # the base model (LoRA: the model with its adapter switched off; no copy)
    previous_epoch: float = 0.0  # the model as it was at the end of the previous epoch
    temperature: float = 1.0

    def validate(self) -> None:
        if self.base < 0 or self.previous_epoch < 0 or self.temperature <= 0:
            raise ValueError("kl: base >= 0, previous_epoch >= 0, temperature > 0")


@dataclass
class SAMBlock:
    """Sharpness-aware minimisation (Foret et al.) around any optimizer; rho 0 switches it off."""

    rho: float = 0.0
    adaptive: bool = False  # ASAM: scale the perturbation by |w|

    def validate(self) -> None:
        if self.rho < 0:
            raise ValueError("sam.rho must be >= 0")


@dataclass
class AugmentBlock:
    """Formatting and paraphrase augmentation: applied to the benchmark's documents (probes unchanged)."""

    formats: list[str] = field(default_factory=list)  # empty: keep bench.formats
    paraphrases: int = 0  # k templates per fact; 0: keep bench.templates_per_fact

    def validate(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ValueError(f"augment.formats: unknown format '{bad[0]}'; known: {', '.join(FORMATS)}")
        if self.paraphrases < 0:
            raise ValueError("augment.paraphrases must be >= 0")


@dataclass
class AdaptiveBlock:
    """Adaptive exposure: skip documents of entities learned at the last probe (Mousavi et al.:
    mean ROUGE-1 recall of the entity's probes >= threshold)."""

    enabled: bool = False
    threshold: float = 0.6
    probe_types: list[str] = field(default_factory=lambda: ["cloze", "qa"])


@dataclass
class ProbingConfig:
    every_n_steps: int = 0  # 0: only step 0 and each epoch end
    fact_loss: Literal["all", "first_copy", "none"] = "first_copy"  # which training documents give fact NLL

    def validate(self) -> None:
        if self.every_n_steps < 0:
            raise ValueError("probing.every_n_steps must be >= 0")


@dataclass
class CheckpointConfig:
    save: bool = True
    keep_last: int = 0  # 0 keeps every checkpoint
    every_epochs: int = 1  # save at every n-th epoch end (and always the last); 1 also saves step-level points

    def validate(self) -> None:
        if self.keep_last < 0 or self.every_epochs < 1:
            raise ValueError("checkpoints.keep_last must be >= 0 and checkpoints.every_epochs >= 1")


@dataclass
class TrainConfig:
    strategy: str = "auto"  # a label for comparisons; "auto" names the enabled blocks (e.g. lora+replay)
    seed: int = 0
    epochs: int = 2
    batch_size: int = 8  # sequences per micro-batch (per process)
    grad_accum: int = 1
    seq_len: int = 256  # documents are packed whole into rows of this many tokens
    precision: Precision = "auto"
    deterministic: bool = True  # deterministic algorithms and a fixed thread count on CPU
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    compile: bool = False  # torch.compile the training forward and backward (probes stay eager): see README Speed
    log_every: int = 1
    bench_dir: str = ""  # use this built benchmark instead of building `bench:` into RUN/bench
    keep_state: bool = False  # keep RUN/state/ (the resume point, GBs for real models) once the run is complete
    report_to: list[TrackerName] = field(default_factory=list)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    lora: LoraBlock = field(default_factory=LoraBlock)
    replay: ReplayBlock = field(default_factory=ReplayBlock)
    kl: KLBlock = field(default_factory=KLBlock)
    sam: SAMBlock = field(default_factory=SAMBlock)
    augment: AugmentBlock = field(default_factory=AugmentBlock)
    adaptive: AdaptiveBlock = field(default_factory=AdaptiveBlock)
    probing: ProbingConfig = field(default_factory=ProbingConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.log_every < 1:
            raise ValueError("epochs, batch_size, grad_accum and log_every must be >= 1")
        if self.seq_len < 16:
            raise ValueError("seq_len must be >= 16")

    def strategy_label(self) -> str:
        """The blocks in use, e.g. 'full', 'lora+kl-base+replay'."""
        parts = ["lora" if self.lora.enabled else "full"]
        parts += ["replay"] if self.replay.ratio > 0 else []
        parts += ["kl-base"] if self.kl.base > 0 else []
        parts += ["kl-prev"] if self.kl.previous_epoch > 0 else []
        parts += ["sam"] if self.sam.rho > 0 else []
        parts += ["formats"] if self.augment.formats else []
        parts += ["paraphrase"] if self.augment.paraphrases > 0 else []
        parts += ["adaptive"] if self.adaptive.enabled else []
        return "+".join(parts)
