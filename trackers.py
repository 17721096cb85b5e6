"""Live tracking of a run beside its log_data.csv (which is always written): TrainConfig.tracker.

    none          the CSV only (default)
    tensorboard   event files in trained/NAME/tensorboard/; `tensorboard --logdir trained`
    wandb         Weights & Biases, offline unless WANDB_MODE says otherwise (`wandb sync` later);
                  imported only when chosen

Every evaluation row is logged (each CSV column, MFU when known), the configs once as text,
and a sample story at each evaluation. Rank 0 alone tracks. A resumed run continues the same
curves: TensorBoard purges the events after the checkpoint's step, wandb resumes its run id.
"""
import dataclasses
import json
import math
import os


class TensorBoard:
    def __init__(self, out, start_step):
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: events past the checkpoint (written before a crash) are dropped, so no step shows twice
        self.writer = SummaryWriter(os.path.join(out, "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log(self, row, step):
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def text(self, tag, text, step):
        self.writer.add_text(tag, text.replace("\n", "  \n"), step)  # markdown line breaks

    def close(self):
        self.writer.close()


class Wandb:
    def __init__(self, out, start_step, name, configs):
        try:
            import wandb
        except ImportError:
            raise ValueError("tracker='wandb' needs the wandb package: `pip install wandb` (or use "
                             "tracker='tensorboard')") from None
        os.environ.setdefault("WANDB_MODE", "offline")
        id_path = os.path.join(out, "wandb_id.txt")  # one wandb run per run folder, resumed with it
        run_id = open(id_path).read().strip() if os.path.isfile(id_path) else wandb.util.generate_id()
        with open(id_path, "w") as f:
            f.write(run_id)
        self.run = wandb.init(project="micro-model-sandbox", name=name, id=run_id, resume="allow", dir=out,
                              config=configs)

    def log(self, row, step):
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def text(self, tag, text, step):
        self.run.log({tag: text}, step=step)

    def close(self):
        self.run.finish()


def open_tracker(kind, out, model_cfg, train_cfg, start_step):
    """The tracker TrainConfig.tracker names (None for 'none'); the configs are logged once, as text."""
    if kind == "none":
        return None
    configs = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg)}
    tracker = TensorBoard(out, start_step) if kind == "tensorboard" else Wandb(out, start_step, train_cfg.name, configs)
    if not start_step:
        tracker.text("config", "```\n" + json.dumps(configs, indent=2) + "\n```", 0)
    return tracker
