"""Real images into W: the projector (NVIDIA's, batched) and the projection job's files."""
