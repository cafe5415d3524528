"""The operator's side: CLI entry, the Textual app, the engine client. Never imports torch."""
