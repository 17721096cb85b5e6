"""Several optimizers stepped as one."""


class Optimizers:
    """Several optimizers stepped as one (Muon for the matrices, AdamW for the rest): the trainer
    sets every param group's lr, steps, zeroes and checkpoints them together."""

    def __init__(self, **optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def step(self):
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state):
        if set(state) != set(self.optimizers):
            raise ValueError(f"the checkpoint holds the optimizer state of {sorted(state)[:4]}, not of "
                             f"{sorted(self.optimizers)}: it was saved with another TrainConfig.optimizer")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])

    def describe(self):
        """'muon 12,345 and adamw 6,789 parameters'."""
        return " and ".join(f"{name} {sum(p.numel() for g in opt.param_groups for p in g['params']):,}"
                            for name, opt in self.optimizers.items()) + " parameters"
