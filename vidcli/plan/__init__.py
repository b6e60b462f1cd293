"""Memory plans: how much GPU memory a training run will take, before any weight is loaded."""
