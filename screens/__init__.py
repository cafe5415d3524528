"""The console's screens, one per file (the shared base class is in screens.base)."""
