"""Pretraining: train a controlled zoo (CAT1 / CAT2 / CAT4 ... at one total budget) and write it as a registry family."""
