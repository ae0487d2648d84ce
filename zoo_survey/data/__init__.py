"""Downstream data: a ``DatasetSpec`` -> train / val / test splits of images with integer labels (``datasets``)."""
