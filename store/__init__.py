"""Persistent state of expunge: SQLite tables, migrations, the audit chain. Imports neither engine nor console."""
