"""The headless engine: API server, scheduler, workers, methods, verification. Never imports textual.

Heavy imports (torch, transformers, peft) happen only inside the modules a worker loads."""
