"""The model zoo: registry YAML -> specs (``registry``), specs -> weights and models (``checkpoints``),
hub downloads (``hub``) and counted GMACs, multiply-accumulates (``flops``)."""
