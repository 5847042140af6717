"""The train step: recipes, the loop, its batches, checkpoints, logs and several processes."""
