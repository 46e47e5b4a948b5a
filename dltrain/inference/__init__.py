"""Using a checkpoint: restore a model, dltrain-eval, dltrain-predict."""
