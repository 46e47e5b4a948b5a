# Makes this config tree importable as the package `dltrain.conf` (see pyproject.toml),
# so Hydra finds it through `pkg://dltrain.conf` after an editable or a regular install.
