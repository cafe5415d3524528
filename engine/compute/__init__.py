"""What a worker process runs: the job runner, training, the methods (one file each), verification (one file per
stage), model loading and generation. Heavy imports (torch, transformers, peft) live only here."""
