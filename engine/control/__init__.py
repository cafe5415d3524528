"""The engine's torch-free API process: the HTTP API, the service layer (the one database writer), the scheduler
and its executors, the daemon, the model registry. Nothing here imports torch or transformers."""
