"""One run: build, orchestrate, train; checkpoints, resume, signals, devices, ranks."""
