"""Several processes for one model: sequence parallelism (ulysses), process layout (groups), a scaling model."""
