"""Data files shipped with the engine (refusal answers for IdkDPO, with their licence)."""
