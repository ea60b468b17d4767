"""CPT strategies that change the model or the loss: lora, replay, kl, sam, adaptive (one file each).

Formatting and paraphrase augmentation change the documents only; they are bench fields set by the
`augment:` block (kdyn.experiment.resolve).
"""
