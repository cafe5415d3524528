"""The one training module of the compute side: every optimisation in the engine runs through it.

- `loop`: the loop (AdamW, transformers' learning-rate schedules, accumulation, clipping, seeded batch
  sources, atomic checkpoints and resume, the out-of-memory back-off, progress events, a stop rule);
- `losses`: answer-token log-probs and NLLs, the model's own token-mean loss, KL to a frozen base;
- `lora`: the one LoRA preparation (seeded adapters) and a method's trainable copy of the base.

What a method job adds on top (its rows, checkpoint folder, hyperparameters, the early-stop rule on the forget
answers) is `engine.compute.methods.unlearn` and `.stop`: they need the method contract and the verifier's
metrics, which import this package, so they live with the methods.

Users: the unlearning methods, the demo-model builder, the TOFU bench and the relearning attack.
Importing this package loads nothing heavy; its modules import torch where they need it."""
