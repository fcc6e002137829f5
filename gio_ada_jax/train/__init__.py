"""GIO-Ada training: the state and optimisers, the losses, the step (equation (5)), the generic
training loop, checkpoints, TensorBoard summaries, the recorded run config, the workdir lock and
the trainer that puts them together (train_and_evaluate)."""
