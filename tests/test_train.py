import csv
import math
import os
import signal

import pytest
import torch

import config
import data
import runs
import tools
import train
from conftest import cli_error, needs_muon, random_token_heldout_loss, tiny_configs
import modules
from modules import build_model


def read_log(run):
    with open(os.path.join(run, "log_data.csv")) as f:
        return list(csv.DictReader(f))


def test_short_run_lowers_loss_and_writes_run_folder(tmp_path):
    cfg, tcfg = tiny_configs(max_steps=60, eval_interval=20, lr=1e-2, out_dir=str(tmp_path))
    run = train.train(cfg, tcfg, progress=False)
    assert sorted(os.listdir(run)) == ["README.md", "checkpoint.pt", "log_data.csv", "model.safetensors",
                                       "model_config.json", "train_config.json"]
    readme = open(os.path.join(run, "README.md")).read()
    assert f"{float(rows_last_bpc(run)):.4f} bits/char" in readme and "30,720 (60 steps of batch 8, context 64)" in readme
    assert f"python inference.py --model {os.path.relpath(run, config.ROOT)} --prompt" in readme
    rows = read_log(run)
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    assert list(rows[0]) == train.LOG_COLUMNS
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    assert last < first - 0.5 and last < math.log(cfg.vocab_size) - 2
    assert float(rows[-1]["val_bpc"]) > 0 and int(rows[-1]["tokens"]) == 60 * 8 * 64
    assert config.load_json(config.ModelConfig, os.path.join(run, "model_config.json")) == cfg


def rows_last_bpc(run):
    return read_log(run)[-1]["val_bpc"]


@pytest.mark.parametrize("optimizer", ["adamw", pytest.param("muon", marks=needs_muon)])
def test_resume_is_bit_identical(tmp_path, optimizer):
    cfg, tcfg = tiny_configs(max_steps=30, eval_interval=5, checkpoint_interval=10, dropout=0.1,
                             out_dir=str(tmp_path), name="straight", optimizer=optimizer)
    straight = train.train(cfg, tcfg, progress=False)
    # the same run, stopped after step 10's checkpoint (as a crash would leave it), then resumed
    _, part = tiny_configs(max_steps=30, eval_interval=5, checkpoint_interval=10, dropout=0.1,
                           out_dir=str(tmp_path), name="resumed", optimizer=optimizer)
    original_save = runs.save_checkpoint

    def crash_after_first_checkpoint(*args):
        original_save(*args)
        if args[3]["step"] == 10:  # the checkpoint at step 0 (written at the start) passes
            raise RuntimeError("simulated crash")
    runs.save_checkpoint = crash_after_first_checkpoint
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            train.train(cfg, part, progress=False, command="python train.py --name resumed")
    finally:
        runs.save_checkpoint = original_save
    rows_before = read_log(os.path.join(tmp_path, "resumed"))
    assert [r["step"] for r in rows_before] == ["5", "10"]
    resumed = train.resume_run(os.path.join(tmp_path, "resumed"), progress=False,
                               command="python train.py --resume resumed")
    assert "python train.py --name resumed\n" in open(os.path.join(resumed, "README.md")).read()  # how it was made
    a, b = read_log(straight), read_log(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(s) for s in range(5, 31, 5)]
    for column in ("train_loss", "val_loss", "lr", "grad_norm"):
        assert [r[column] for r in a] == [r[column] for r in b], column
    wa = torch.load(os.path.join(straight, "checkpoint.pt"), weights_only=True)["model"]
    wb = torch.load(os.path.join(resumed, "checkpoint.pt"), weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill, timeout, a scheduler
def test_ctrl_c_saves_and_resume_finishes(tmp_path, monkeypatch, stop_signal):
    cfg, tcfg = tiny_configs(max_steps=20, checkpoint_interval=100, eval_interval=100, out_dir=str(tmp_path))
    calls = {"n": 0}
    original = data.sample_batch

    def interrupting(*args):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), stop_signal)
        return original(*args)
    monkeypatch.setattr(data, "sample_batch", interrupting)
    run = train.train(cfg, tcfg, progress=False)
    ckpt = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    assert ckpt["step"] == 7  # the step in flight finished, then it stopped
    monkeypatch.setattr(data, "sample_batch", original)
    train.resume_run(run, progress=False)
    assert torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)["step"] == 20


def test_non_finite_loss_stops_with_the_step(tmp_path, monkeypatch):
    cfg, tcfg = tiny_configs(max_steps=20, checkpoint_interval=3, out_dir=str(tmp_path))
    monkeypatch.setattr(train, "lr_at", lambda step, c: float("nan") if step >= 4 else 1e-3)
    with pytest.raises(train.NonFiniteLoss, match="at step 5"):
        train.train(cfg, tcfg, progress=False)
    ckpt = torch.load(os.path.join(tmp_path, tcfg.name, "checkpoint.pt"), weights_only=True)
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_existing_run_folder_is_not_overwritten(tmp_path):
    cfg, tcfg = tiny_configs(max_steps=2, out_dir=str(tmp_path))
    train.train(cfg, tcfg, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train.train(cfg, tcfg, progress=False)
    train.train(cfg, tcfg, progress=False, overwrite=True)
    with pytest.raises(FileNotFoundError, match="missing"):
        train.resume_run(str(tmp_path / "nothing"))


def test_cli_errors_are_one_line(capsys):
    with cli_error(capsys, "num_q_heads=3.*num_kv_heads=2"):
        train.main(["--preset", "tiny", "--num_q_heads", "3", "--num_kv_heads", "2"])


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "wsd"])
def test_lr_schedules(schedule):
    tcfg = config.TrainConfig(max_steps=100, lr=1.0, min_lr_ratio=0.1, warmup_frac=0.1, decay_frac=0.2,
                              lr_schedule=schedule)
    lrs = [train.lr_at(s, tcfg) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warmup to the peak
    assert max(lrs) == pytest.approx(1.0)
    if schedule == "constant":
        assert lrs[-1] == 1.0
    else:
        assert lrs[-1] == pytest.approx(0.1) and all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))
    if schedule == "wsd":
        assert lrs[79] == 1.0 and lrs[80] < 1.0
    if schedule == "cosine":
        assert lrs[54] == pytest.approx(0.55, abs=0.02)  # half-way through the decay: the mid value


def test_weight_decay_only_on_matrices():
    cfg = tiny_configs(pos_encoding="learned", linear_bias=True)[0]
    model = build_model(cfg)
    opt = train.make_optimizer(model, config.TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    assert "pos_embed.weight" in {names[id(p)] for p in no_decay["params"]}
    assert any(names[id(p)].endswith("bias") for p in no_decay["params"])


def test_random_token_leak_detector(monkeypatch):
    cfg = tiny_configs(dim=32, max_seq_len=32, tokenizer="bpe512")[0]
    loss = random_token_heldout_loss(build_model(cfg), cfg.vocab_size)
    assert loss >= math.log(cfg.vocab_size) - 0.05, loss
    # the detector itself works: the same model with a non-causal mask is caught
    from modules.attention import Attention
    original = Attention.attend
    monkeypatch.setattr(Attention, "attend", lambda self, q, k, v, mask=None, is_causal=True:
                        original(self, q, k, v, mask, is_causal=False))
    leaky = random_token_heldout_loss(build_model(cfg), cfg.vocab_size)
    assert leaky < math.log(cfg.vocab_size) - 1.0, leaky


def test_extra_loss_terms_become_log_columns(tmp_path, monkeypatch):
    import modules

    class WithTerm(modules.GPT):
        def forward(self, tokens, targets=None, cache=None):
            logits, loss, _ = super().forward(tokens, targets, cache)
            return logits, loss, {"aux_loss": torch.tensor(0.25)}
    monkeypatch.setitem(modules.MODEL_REGISTRY, "gpt", WithTerm)
    cfg, tcfg = tiny_configs(max_steps=4, eval_interval=2, checkpoint_interval=1, grad_accum_steps=2,
                             out_dir=str(tmp_path))
    run = train.train(cfg, tcfg, progress=False)
    rows = read_log(run)
    assert list(rows[0])[-2:] == ["train_aux_loss", "val_aux_loss"]  # each term on train and validation
    assert [float(r["train_aux_loss"]) for r in rows] == [float(r["val_aux_loss"]) for r in rows] == [0.25, 0.25]


def test_mfu_estimate(monkeypatch):
    """nanoGPT's formula against the device's bf16 peak; unknown on a CPU or an unlisted GPU."""
    model_cfg, _ = tiny_configs()
    assert tools.estimate_mfu(modules.flops_per_token(10**6, model_cfg), 1e5, torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    flops = (6 * 10**6 + 12 * model_cfg.num_layers * model_cfg.num_q_heads * model_cfg.head_dim
             * model_cfg.max_seq_len) * 1e5
    assert tools.estimate_mfu(modules.flops_per_token(10**6, model_cfg), 1e5, torch.device("cuda")) == pytest.approx(flops / 989e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert tools.estimate_mfu(modules.flops_per_token(10**6, model_cfg), 1e5, torch.device("cuda")) is None


def test_a_training_run_checks_its_config_once_and_sizes_the_model_once(tmp_path, monkeypatch):
    """presets, the memory check, build_model and the run folder all ask for the architecture's
    checks and sizes: each runs once per config (validate_config and the meta-device build)."""
    from modules.model import GPT
    checks, meta_builds = [], []
    monkeypatch.setattr(GPT, "validate_config", staticmethod(lambda cfg: checks.append(1)))
    original_init = GPT.__init__

    def counting_init(self, cfg):
        if torch.empty(0).device.type == "meta":
            meta_builds.append(1)
        original_init(self, cfg)
    monkeypatch.setattr(GPT, "__init__", counting_init)
    model_cfg, train_cfg = tiny_configs(max_steps=2, eval_interval=2, checkpoint_interval=2, out_dir=str(tmp_path),
                                        dim=40)  # a width no other test uses: nothing cached before
    train.train(model_cfg, train_cfg, progress=False)
    assert len(checks) == 1 and len(meta_builds) == 1, (len(checks), len(meta_builds))


def test_muon_on_a_torch_without_it_is_refused_by_name(monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon", raising=False)  # absent already before torch 2.9
    model_cfg, train_cfg = tiny_configs(optimizer="muon")
    with pytest.raises(ValueError, match=r"optimizer='muon' needs torch >= 2.9 \(torch.optim.Muon\)"):
        train.make_optimizer(build_model(model_cfg), train_cfg, torch.device("cpu"))
