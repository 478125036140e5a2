"""Training DRCN: options, data, objective, checkpoints, the training loop and model cards."""
