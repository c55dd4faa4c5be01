"""Frozen feature networks (Reg-DGM, metrics, DISP), registered in fewshot.registry.extractors."""
