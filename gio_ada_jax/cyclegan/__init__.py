"""The CycleGAN baseline (the 'cg' variant): its networks, losses and step (model), its
training (trainer), the translation of a source set with its generator (translate) and the stage
that chains them before GIO-Ada's trainer trains the task net (stage)."""
