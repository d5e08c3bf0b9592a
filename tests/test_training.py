"""Training: loss goes down, resume is exact, fine-tuning freezes all but attention, checkpoints round-trip."""
import json
import math

import pytest
import torch

from models.checkpoints import load_checkpoint, save_checkpoint
from models.training import TrainConfig, Trainer, is_attention, train, wrap_for

TINY = {"unet": {"base_channels": 8}, "uvit": {"dim": 32, "depth": 3, "heads": 2}}


def tiny(arch="unet", **kw):
    base = dict(arch=arch, arch_options=TINY[arch], image_size=8, dataset_size=8, batch_size=8, steps=30,
                lr=1e-3, checkpoint_every=10)
    return TrainConfig(**(base | kw))


def losses(folder):
    return [json.loads(line)["loss"] for line in open(folder / "loss.jsonl")]


def learns(cfg, folder, tail=10) -> tuple[float, float]:
    """The mean loss over the last `tail` steps of a run and of the same run with lr 0: the same batches and noise
    step for step (the generator does not depend on the learning rate), so the difference is what training learned
    (a per-step comparison with the run's own first steps passed without any update, noise alone)."""
    from tests.helpers import frozen_copy

    train(cfg, folder / "trained")
    train(frozen_copy(cfg), folder / "frozen")
    got, frozen = losses(folder / "trained"), losses(folder / "frozen")
    assert len(got) == len(frozen) == cfg.steps and all(map(math.isfinite, got))
    return sum(got[-tail:]) / tail, sum(frozen[-tail:]) / tail


@pytest.mark.parametrize("arch, kernel, prediction, objective, time_input", [
    ("unet", "vp", "eps", "eps", "t"), ("uvit", "vp", "eps", "eps", "t"), ("unet", "subvp", "eps", "eps", "t"),
    ("unet", "vp-discrete", "eps", "eps", "discrete"), ("unet", "ve", "edm", "edm", "log-sigma"),
    ("unet", "edm", "edm", "edm", "log-sigma"), ("unet", "ve", "eps", "ve", "log-sigma")])
def test_short_training_lowers_the_loss(tmp_path, arch, kernel, prediction, objective, time_input):
    cfg = tiny(arch, kernel=kernel, prediction=prediction, objective=objective, time_input=time_input,
               time_scale=1.0 if time_input != "t" else 999.0, steps=40)
    trained, frozen = learns(cfg, tmp_path)
    assert trained < frozen, (trained, frozen)


def test_resume_continues_exactly(tmp_path):
    straight = tmp_path / "straight"
    train(tiny(steps=20), straight)
    resumed = tmp_path / "resumed"
    train(tiny(steps=10), resumed)  # stops at step 10 with a train_state.pt
    state = torch.load(resumed / "train_state.pt", weights_only=False)
    state["config"]["steps"] = 20
    torch.save(state, resumed / "train_state.pt")
    train(tiny(steps=20), resumed)
    assert losses(resumed) == losses(straight)
    a, _ = load_checkpoint(straight / "model")
    b, _ = load_checkpoint(resumed / "model")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_loss_log_is_read_from_the_device_once_per_saved_state(tmp_path, monkeypatch):
    """A step's loss is logged when the next state is saved, all of them in one read (a per-step read would make the
    host wait for a GPU every step); the log is the same line for line: steps 1..N, float32 values."""
    from models import training

    reads = []
    real = training._write_losses

    def counted(log, pending, step):
        reads.append((len(pending), step))
        real(log, pending, step)

    monkeypatch.setattr(training, "_write_losses", counted)
    train(tiny(steps=25), tmp_path)
    assert [r for r in reads if r[0]] == [(10, 10), (10, 20), (5, 25)]
    lines = [json.loads(line) for line in open(tmp_path / "loss.jsonl")]
    assert [line["step"] for line in lines] == list(range(1, 26))
    # each a float32 loss in nine significant digits, which give it back exactly
    assert all(float(f"{torch.tensor(line['loss'], dtype=torch.float32).item():.9g}") == line["loss"] for line in lines)


def test_a_run_stopped_between_checkpoints_resumes_without_repeating_steps(tmp_path, monkeypatch):
    """Steps logged after the last saved state (here 11-15, flushed when the run stopped) are dropped on resume, not
    logged twice: the convergence figures take a loss's position in the log for its step."""
    from models import training

    straight = tmp_path / "straight"
    train(tiny(steps=20), straight)
    stopped = tmp_path / "stopped"
    real_losses = training.Trainer.losses

    def stop_at_16(self):
        if self.step == 15:
            raise KeyboardInterrupt
        return real_losses(self)

    monkeypatch.setattr(training.Trainer, "losses", stop_at_16)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(steps=20), stopped)
    assert len(losses(stopped)) == 15  # the state was saved at step 10
    with open(stopped / "loss.jsonl", "a") as f:
        f.write('{"step": 16, "lo')  # and a line cut short, as a killed run leaves it
    monkeypatch.setattr(training.Trainer, "losses", real_losses)
    train(tiny(steps=20), stopped)
    assert losses(stopped) == losses(straight)
    assert training.read_losses(stopped) == losses(straight)


def test_a_loss_log_with_repeated_or_missing_steps_is_refused(tmp_path):
    from models.training import read_losses

    (tmp_path / "loss.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in (1, 2, 3, 2, 3)))
    with pytest.raises(ValueError, match=r"line 4 logs step 2, expected 4: a loss log holds steps 1, 2, ... once"):
        read_losses(tmp_path)


def test_resume_refuses_another_config(tmp_path):
    train(tiny(steps=10), tmp_path)
    with pytest.raises(ValueError, match=r"another training config \(lr 0.001 -> 0.0005\)"):  # names what changed
        Trainer(tiny(steps=10, lr=5e-4), tmp_path)


def test_a_fine_tune_onto_another_class_count_an_unknown_distill_grid_and_a_warmup_past_the_end_are_refused(
        tmp_path):
    """A conditional checkpoint fine-tuned on data of more classes failed at the first step inside its embedding
    (IndexError); distill_grid 'bogus' failed at the first step after the folder was made; warmup_steps >= steps
    never reached lr."""
    base = train(tiny(steps=2, conditional=True, dataset_size=4, photos_per_class=2), tmp_path / "base")  # 5 classes
    with pytest.raises(ValueError, match=r"is a network of 5 classes, and this config's data make 10 \(its photos "
                                         r"in classes of photos_per_class 1\)"):
        Trainer(tiny(steps=2, conditional=True, dataset_size=4, finetune_from=str(base)), tmp_path / "ft")
    assert not (tmp_path / "ft").exists()
    with pytest.raises(ValueError, match=r"unknown distill_grid 'bogus'; valid grids: edm"):
        tiny(distill_grid="bogus")
    with pytest.raises(ValueError, match=r"warmup_steps must be below steps \(30\), got 30"):
        tiny(warmup_steps=30)


@pytest.mark.parametrize("arch", ["unet", "uvit"])
def test_finetune_trains_only_attention(tmp_path, arch):
    base = train(tiny(arch, steps=5), tmp_path / "base")
    tuned = train(tiny(arch, steps=10, finetune_from=str(base), dataset_seed=1), tmp_path / "tuned")
    before, _ = load_checkpoint(base)
    after, _ = load_checkpoint(tuned)
    changed = {n for (n, p), q in zip(before.state_dict().items(), after.state_dict().values())
               if not torch.equal(p, q)}
    attention = {n for n in before.state_dict() if is_attention(n)}
    assert attention and changed and changed <= attention  # every non-attention parameter is bit-identical
    # and is_attention itself picks attention, by names written out here: diffusers' `attentions.` blocks, U-ViT's
    # `.attn.` modules; the input layer, the time embedding and the blocks' norms and MLPs / resnets stay
    kept = {n for n in before.state_dict() if n not in attention}
    assert all("attentions." in n or ".attn." in n for n in attention)
    frozen = ("conv_in.", "time_embedding.") if arch == "unet" else ("patch_embed.", "time_embed.", ".mlp.", ".norm1.")
    for prefix in frozen:
        assert any(prefix in n for n in kept) and not any(prefix in n for n in changed), prefix


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    for arch in ("unet", "uvit"):
        trainer = Trainer(tiny(arch), tmp_path / arch)
        save_checkpoint(tmp_path / arch / "ck", trainer.net, {"kernel": "vp"})
        net, meta = load_checkpoint(tmp_path / arch / "ck")
        x, t = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 500.0])
        trainer.net.eval()
        ref = getattr(trainer.net(x, t), "sample", trainer.net(x, t))
        assert torch.equal(getattr(net(x, t), "sample", net(x, t)), ref) and meta == {"kernel": "vp"}


def test_conditional_models_change_output_with_the_label(tmp_path):
    for arch in ("unet", "uvit"):
        cfg = tiny(arch, conditional=True, steps=3)
        D = wrap_for(cfg, Trainer(cfg, tmp_path / arch).net.eval())
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        with torch.no_grad():
            assert not torch.allclose(D(x, 1.0, torch.tensor([0, 0])), D(x, 1.0, torch.tensor([5, 5])))


EDM = dict(kernel="edm", prediction="edm", objective="edm", time_input="log-sigma", time_scale=1.0)


def test_progressive_distillation_runs_and_lowers_its_loss(tmp_path):
    teacher = train(tiny(steps=20, **EDM), tmp_path / "teacher")
    trained, frozen = learns(tiny(steps=40, distill_from=str(teacher), distill_steps=2, **EDM), tmp_path)
    assert trained < frozen, (trained, frozen)


@pytest.mark.parametrize("purpose", ["distill_from", "finetune_from"])
def test_a_teacher_or_pretrained_model_under_another_wrap_is_refused(tmp_path, purpose):
    """The student (or the fine-tuned model) starts as the checkpoint's network: wrapped another way it would start
    from another denoiser (a VP eps teacher under the EDM wrap: D off by 1.9, measured)."""
    base = train(tiny(steps=2, kernel="vp", prediction="eps", objective="eps", time_input="t", time_scale=999.0),
                 tmp_path / "base")
    extra = {"distill_steps": 2} if purpose == "distill_from" else {}
    with pytest.raises(ValueError, match=r"under another wrap than this config's: kernel 'vp' in the checkpoint, "
                                         r"'edm' in the config; prediction 'eps' in the checkpoint, 'edm'"):
        Trainer(tiny(steps=2, **EDM, **{purpose: str(base)}, **extra), tmp_path / "student")


@pytest.mark.parametrize("stop", [6, 8])  # in the middle of the second round, and where the third begins
def test_progressive_distillation_rounds_resume_exactly(tmp_path, monkeypatch, stop):
    teacher = train(tiny(steps=5, **EDM), tmp_path / "teacher")
    pd = dict(EDM, distill_from=str(teacher), distill_steps=2, distill_rounds=3, steps=12, checkpoint_every=2)
    train(tiny(**pd), tmp_path / "straight")
    calls, step_losses = [0], Trainer.losses

    def interrupted(self):
        calls[0] += 1
        if calls[0] > stop:
            raise KeyboardInterrupt
        return step_losses(self)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "losses", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(**pd), tmp_path / "resumed")
    assert "teacher" in torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=False)
    train(tiny(**pd), tmp_path / "resumed")
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_progressive_distillation_hands_the_student_on_as_the_next_teacher(tmp_path):
    teacher = train(tiny(steps=5, **EDM), tmp_path / "teacher")
    trainer = Trainer(tiny(**EDM, distill_from=str(teacher), distill_steps=2, distill_rounds=2, steps=4),
                      tmp_path / "student")
    first = {k: v.clone() for k, v in trainer.teacher.net.state_dict().items()}
    trainer.run()
    now = trainer.teacher.net.state_dict()
    assert any(not torch.equal(first[k], now[k]) for k in first)  # the round-two teacher is the round-one student


@pytest.mark.parametrize("grid", ["edm", "logsnr", "uniform-t"])
@pytest.mark.parametrize("n", [2, 4, 7])
def test_halving_nests_the_step_grids(grid, n):
    """Every other level of a 2n - 1 level grid is the n-level grid that a distilled student samples with."""
    from models.grids import make_grid
    from models.kernels import make_kernel

    for kernel in (make_kernel("edm"), make_kernel("vp")):
        fine = make_grid(grid, kernel, 2 * n - 1, append_zero=False)
        torch.testing.assert_close(fine[::2], make_grid(grid, kernel, n, append_zero=False), rtol=1e-12, atol=0)


def test_consistency_distillation_trains_a_one_step_student(tmp_path):
    from models.samplers import SAMPLERS

    teacher = train(tiny(steps=20, **EDM), tmp_path / "teacher")
    cd = dict(EDM, prediction="cm", distill_from=str(teacher), distill_method="consistency", cd_steps=6)
    trainer = Trainer(tiny(steps=40, **cd), tmp_path / "student")
    assert trainer.teacher.prediction == "edm" and trainer.D.prediction == "cm"  # each keeps its parameterization
    student = trainer.run()
    trained, frozen = learns(tiny(steps=40, **cd), tmp_path)
    assert trained < frozen, (trained, frozen)
    net, meta = load_checkpoint(student)
    D = wrap_for(meta["config"], net)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(D(x, D.kernel.sigma_min), x)  # f(x, sigma_min) = x (Song et al. 2023, Eq. 3)
    sigmas = torch.tensor([D.kernel.sigma_max, 0.0], dtype=torch.float64)
    assert SAMPLERS["consistency"].fn(D, x * D.kernel.sigma_max, sigmas).x.shape == x.shape


def test_consistency_distillation_resumes_its_target_network(tmp_path):
    teacher = train(tiny(steps=5, **EDM), tmp_path / "teacher")
    cd = dict(EDM, prediction="cm", distill_from=str(teacher), distill_method="consistency", cd_steps=6)
    train(tiny(steps=10, **cd), tmp_path / "straight")
    train(tiny(steps=5, **cd), tmp_path / "resumed")
    state = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=False)
    assert "target" in state
    state["config"]["steps"] = 10
    torch.save(state, tmp_path / "resumed" / "train_state.pt")
    train(tiny(steps=10, **cd), tmp_path / "resumed")
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


@pytest.mark.parametrize("bad, message", [
    (dict(distill_method="progresive"), "unknown distill_method 'progresive'; valid methods: progressive, consistency"),
    (dict(EDM, distill_from="t", distill_method="consistency"), "consistency distillation needs prediction 'cm'"),
    (dict(distill_rounds=0), "distill_rounds >= 1 dividing steps, got distill_steps=4, distill_rounds=0"),
    (dict(distill_rounds=4, steps=30), "got distill_steps=4, distill_rounds=4, steps=30"),
    (dict(distill_steps=0), "got distill_steps=0"),
    # one step: (distill_steps - 1) 2^h + 1 = 1 level in every round, so no round halves anything
    (dict(EDM, distill_from="t", distill_steps=1), "needs distill_steps >= 2 .* got distill_steps=1")])
def test_bad_distillation_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny(**bad)


def test_a_consistency_student_must_read_noise_levels_as_its_teacher_does(tmp_path):
    """The student starts from the teacher's weights and is trained on its own kernel's grid: under another kernel or
    time input it read the noise level another way and trained the teacher outside its range, without a word."""
    teacher = train(tiny(steps=2, **EDM), tmp_path / "teacher")
    cd = dict(EDM, prediction="cm", distill_from=str(teacher), distill_method="consistency", cd_steps=6)
    with pytest.raises(ValueError, match=r"trained under another wrap than this config's: time_input 'log-sigma' in "
                                         r"the checkpoint, 't' in the config"):
        Trainer(tiny(steps=4, **(cd | dict(time_input="t", time_scale=999.0))), tmp_path / "student")
    meta = json.loads((teacher / "samenoise.json").read_text())
    del meta["config"]
    (teacher / "samenoise.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="records no training config .* the teacher's own parameterization"):
        Trainer(tiny(steps=4, **cd), tmp_path / "student2")


def test_a_diverged_run_stops_at_its_next_saved_state_and_keeps_the_one_before(tmp_path, monkeypatch):
    """A NaN loss was logged and training went on, saving checkpoints and an EMA model of NaN weights."""
    cfg = tiny(steps=30)
    trainer = Trainer(cfg, tmp_path / "run")
    real = trainer.losses

    def diverging():
        loss, logged = real()
        return loss, logged * (math.nan if trainer.step >= 14 else 1.0)

    monkeypatch.setattr(trainer, "losses", diverging)
    with pytest.raises(FloatingPointError, match=r"training diverged: the loss at step 15 is nan"):
        trainer.run()
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)
    assert state["step"] == 10 and not (tmp_path / "run" / "model").exists()


def test_distilling_an_eps_student_is_refused():
    with pytest.raises(ValueError, match="progressive distillation needs prediction 'edm', 'x0' or 'v'"):
        tiny(distill_from="teacher")


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(KeyError, match="valid architectures: unet, uvit"):
        TrainConfig(arch="dit")


def test_training_command_refuses_unknown_keys(tmp_path, capsys):
    from models.training import main

    (tmp_path / "c.toml").write_text('arch = "unet"\nstepz = 3\n')
    with pytest.raises(SystemExit):
        main([str(tmp_path / "c.toml"), str(tmp_path / "out")])
    assert "unknown keys ['stepz']" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    ({"steps": -5}, "steps must be an integer >= 1, got -5"), ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1, got 0"),
    ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"), ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"ema_decay": 1.5}, r"ema_decay must be a number in \[0, 1\), got 1.5"),
    ({"cd_steps": 1}, "cd_steps must be an integer >= 2"), ({"sigma_data": -0.5}, "sigma_data must be a finite number"),
    ({"steps": "10"}, "steps must be of type int, got '10' \\(str\\)"),
    ({"conditional": 1}, "conditional must be of type bool, got 1 \\(int\\)"),
    ({"steps": True}, "steps must be of type int, got True \\(bool\\)")])
def test_out_of_range_or_mistyped_settings_are_refused_by_name(bad, message):
    """Each of these trained (steps 0 or -5: an untrained model; lr 0: no update; ema_decay 1.5: an EMA pushed past the
    weights) or failed mid-run (checkpoint_every 0: a division by zero after the first step)."""
    with pytest.raises(ValueError, match=message):
        tiny(**bad)


def test_unknown_arch_options_are_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"arch_options \['foo'\] do not fit arch 'unet'; valid options: channels, "
                                         r"base_channels, attention, norm_eps"):
        Trainer(tiny(arch_options={"base_channels": 8, "foo": 1}), tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not a state"])
def test_a_damaged_training_state_is_refused_naming_the_file(tmp_path, damage):
    train(tiny(steps=10), tmp_path)
    path = tmp_path / "train_state.pt"
    if damage == "garbage":
        path.write_text("garbage\n")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        torch.save({"step": 3}, path)
    match = "is not a training state of this suite" if damage == "not a state" else "train_state.pt cannot be read"
    with pytest.raises(ValueError, match=match):
        Trainer(tiny(steps=10), tmp_path)


def test_a_folder_with_a_model_but_no_training_state_is_not_overwritten(tmp_path):
    train(tiny(steps=10), tmp_path)
    (tmp_path / "train_state.pt").unlink()
    with pytest.raises(ValueError, match="holds model but no train_state.pt to resume from: use a new output folder"):
        Trainer(tiny(steps=10), tmp_path)


def test_a_resume_without_its_loss_log_is_refused_before_training(tmp_path):
    """Resumed without its log, a run wrote a log starting at the saved step, which every reader refuses."""
    train(tiny(steps=10), tmp_path)
    (tmp_path / "loss.jsonl").unlink()
    with pytest.raises(ValueError, match="the saved training state is at step 10, but .*loss.jsonl is missing"):
        Trainer(tiny(steps=10), tmp_path)


@pytest.mark.parametrize("field, value", [("arch", "uvit"), ("image_size", 16), ("arch_options", {"base_channels": 16}),
                                          ("conditional", True)])
def test_a_checkpoint_of_another_network_is_refused_for_fine_tuning(tmp_path, field, value):
    """The fine-tune trains the checkpoint's own network and records the config's fields: a UNet checkpoint under arch
    'uvit' made a model whose config.json and samenoise.json disagreed."""
    base = train(tiny(steps=2), tmp_path / "base")
    options = {"arch_options": TINY["uvit"]} if field == "arch" else {}
    with pytest.raises(ValueError, match=f"holds another network than this config describes: {field} "):
        Trainer(tiny(steps=2, finetune_from=str(base), **{field: value}, **options), tmp_path / "ft")


@pytest.mark.parametrize("content, message", [(None, "cannot be read: No such file or directory"),
                                              ("steps = \n", "is not valid TOML"),
                                              ("steps = 0\n", "steps must be an integer >= 1, got 0"),
                                              ("finetune_from = 'nowhere'\n", "nowhere has no config.json")])
def test_training_command_says_what_is_wrong_in_one_line(tmp_path, capsys, content, message):
    from models.training import main

    config = tmp_path / "c.toml"
    if content is not None:
        config.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main([str(config), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_training_command_trains_from_a_toml_file(tmp_path):
    from models.training import main

    (tmp_path / "c.toml").write_text('image_size = 8\ndataset_size = 4\nbatch_size = 4\nsteps = 2\n'
                                     'arch_options = { base_channels = 8 }\n')
    main([str(tmp_path / "c.toml"), str(tmp_path / "out"), "--float16"])
    net, meta = load_checkpoint(tmp_path / "out" / "model", dtype=torch.float32)
    assert meta["steps"] == 2 and len(meta["dataset_hash"]) == 64


def test_warm_up_ramps_the_learning_rate_linearly_then_holds_it(tmp_path):
    trainer = Trainer(tiny(lr=1e-3, warmup_steps=4), tmp_path)
    assert [trainer.lr(s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert Trainer(tiny(lr=1e-3), tmp_path / "b").lr(0) == 1e-3  # no warm-up: the configured rate from step 0


def test_cosine_decay_falls_from_the_rate_to_zero_after_the_warm_up(tmp_path):
    trainer = Trainer(tiny(lr=1e-3, warmup_steps=2, steps=10, lr_decay="cosine"), tmp_path)
    rates = [trainer.lr(s) for s in range(10)]
    # warm-up 5e-4, 1e-3; then 0.5 (1 + cos(pi k / 8)) 1e-3 for k = 0..7
    assert rates[:3] == pytest.approx([5e-4, 1e-3, 1e-3]) and rates[6] == pytest.approx(5e-4)
    assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] > 0
    with pytest.raises(ValueError, match="unknown lr_decay 'step'; valid: none, cosine"):
        tiny(lr_decay="step")


def test_a_state_written_before_a_field_existed_resumes_with_its_default(tmp_path):
    trainer = Trainer(tiny(steps=2), tmp_path)
    trainer.run()
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    del state["config"]["lr_decay"]
    torch.save(state, tmp_path / "train_state.pt")
    assert Trainer(tiny(steps=2), tmp_path).step == 2


def test_the_sigma_draw_follows_the_configured_log_normal():
    from models.kernels import make_kernel
    from models.training import draw_sigma

    cfg = tiny(kernel="edm", prediction="edm", objective="edm", time_input="log-sigma", sigma_mean=0.4,
               sigma_std=0.5)
    ln = torch.log(draw_sigma(cfg, make_kernel("edm"), 20000, torch.Generator().manual_seed(0)))
    assert float(ln.mean()) == pytest.approx(0.4, abs=0.02) and float(ln.std()) == pytest.approx(0.5, abs=0.02)


def test_the_ve_objective_draws_sigma_log_uniformly_over_the_kernel_range():
    from models.kernels import make_kernel
    from models.training import draw_sigma, loss_weight

    kernel = make_kernel("ve")
    cfg = tiny(kernel="ve", prediction="eps", objective="ve", time_input="log-sigma", time_scale=1.0)
    ln = torch.log(draw_sigma(cfg, kernel, 20000, torch.Generator().manual_seed(0)))
    lo, hi = math.log(kernel.sigma_min), math.log(kernel.sigma_max)
    assert lo <= float(ln.min()) and float(ln.max()) <= hi
    assert float(ln.mean()) == pytest.approx((lo + hi) / 2, abs=0.05)  # uniform in ln sigma: mean at the centre
    assert float(ln.std()) == pytest.approx((hi - lo) / math.sqrt(12), abs=0.05)
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)  # sigma^2-weighted score matching = ||D - y||^2 / sigma^2
    torch.testing.assert_close(loss_weight("ve", sigma, 0.5), 1 / sigma**2)


def test_train_once_trains_a_config_once_and_finds_it_again(tmp_path):
    from dataclasses import asdict

    from models.training import train_once

    raw = {k: v for k, v in asdict(tiny(steps=5)).items() if v is not None}
    first = train_once(raw, tmp_path, "tiny-n8")
    log = first.parent / "loss.jsonl"
    lines = log.read_text()
    again = train_once(raw, tmp_path, "tiny-n8")
    assert again == first and log.read_text() == lines  # not trained twice
    assert train_once(raw | {"steps": 6}, tmp_path, "tiny-n8") != first  # another config, another folder
    assert not list(tmp_path.rglob("*.lock"))


def test_a_packed_loss_log_reads_back_every_step_and_ambiguity_is_refused(tmp_path):
    from models.training import LOSS_LOG, PACKED_LOSS_LOG, loss_log_path, pack_loss_log, read_losses

    run, shipped = tmp_path / "run", tmp_path / "shipped"
    run.mkdir()
    lines = "".join(json.dumps({"step": s, "loss": float(f"{1 / s:.9g}")}) + "\n" for s in range(1, 2001))
    (run / LOSS_LOG).write_text(lines)
    packed = pack_loss_log(run, shipped)
    # xz packs the zoo's real logs 6.8x (measured on the 10,000-step UNet-16 log); a third is a loose floor here
    assert packed == shipped / PACKED_LOSS_LOG and packed.stat().st_size < len(lines) / 3
    assert read_losses(shipped) == read_losses(run) == [float(f"{1 / s:.9g}") for s in range(1, 2001)]
    assert [p.name for p in shipped.iterdir()] == [PACKED_LOSS_LOG]  # no temporary file left beside it
    assert loss_log_path(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="holds no loss.jsonl or loss.jsonl.xz"):
        read_losses(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no loss.jsonl to pack"):
        pack_loss_log(tmp_path, shipped)
    (shipped / LOSS_LOG).write_text(lines)
    with pytest.raises(ValueError, match="holds both loss.jsonl and loss.jsonl.xz"):
        read_losses(shipped)


@pytest.mark.parametrize("arch", ["unet", "uvit"])
def test_both_architectures_run_in_float64_as_the_convergence_bins_need(arch):
    """models.convergence evaluates a network in float64 (net.double()); every layer, the time embedding included,
    must follow the input's dtype, and the result must agree with float32."""
    from models.training import ARCHS

    torch.manual_seed(0)
    net = ARCHS[arch](image_size=8, **TINY[arch]).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.3, -1.2])
    with torch.no_grad():
        single = net(x, t)
        single = getattr(single, "sample", single)
        double = net.double()(x.double(), t.double())
        double = getattr(double, "sample", double)
    assert double.dtype == torch.float64
    assert torch.allclose(double.float(), single, atol=1e-4)


def test_kernel_options_cut_the_noise_levels_in_training_and_sampling(tmp_path):
    """A VP cut at t_max: training draws sigma only up to that kernel's sigma_max, the checkpoint records the options,
    and a zoo entry that states other options (or none) is refused rather than sampled from the wrong start."""
    from models.kernels import make_kernel
    from models.training import draw_sigma
    from models.zoo import ZooEntry, ZooError, load_denoiser

    cfg = tiny(kernel_options={"t_max": 0.5}, steps=2)
    kernel = make_kernel("vp", t_max=0.5)
    sigma = draw_sigma(cfg, wrap_for(cfg, torch.nn.Identity()).kernel, 5000, torch.Generator().manual_seed(0))
    assert float(sigma.max()) <= kernel.sigma_max < 4 and float(sigma.max()) > 0.9 * kernel.sigma_max
    folder = train(cfg, tmp_path)
    assert load_checkpoint(folder)[1]["kernel_options"] == {"t_max": 0.5}
    entry = dict(name="cut-vp", source=str(folder), kernel="vp", prediction="eps", time_input="t", time_scale=999.0,
                 image_size=8)
    assert load_denoiser(ZooEntry(**entry, kernel_options={"t_max": 0.5})).kernel.sigma_max == kernel.sigma_max
    with pytest.raises(ZooError, match=r"kernel_options is \{\} in the entry but \{'t_max': 0.5\} in its checkpoint"):
        load_denoiser(ZooEntry(**entry))


def test_kernel_options_that_do_not_fit_the_kernel_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"kernel_options \{'tmax': 0.9\} do not fit kernel 'vp' \(.*\); valid "
                                         r"options: beta_min, beta_max, t_min, t_max"):
        tiny(kernel_options={"tmax": 0.9})
    with pytest.raises(ValueError, match=r"do not fit kernel 'vp' \(vp kernel: t_min 1.5 must be below t_max 1.0\)"):
        tiny(kernel_options={"t_min": 1.5})


def test_the_optimal_target_learns_and_logs_the_loss_against_the_training_images(tmp_path):
    """Target 'optimal' draws the same batches, noise levels and noise as 'sample' (D* uses no randomness), so the
    first logged loss, taken before any update, is the same number: the log records the loss against y under either
    target. The minimized loss (against D*) lowers the logged one as training goes on."""
    cfg = tiny(steps=40, target="optimal", **EDM)
    trained, frozen = learns(cfg, tmp_path / "optimal")
    assert trained < frozen, (trained, frozen)
    train(tiny(steps=1, **EDM), tmp_path / "sample")
    assert losses(tmp_path / "optimal" / "trained")[0] == losses(tmp_path / "sample")[0]


def test_the_optimal_target_minimizes_the_distance_to_d_star_not_to_the_drawn_image(tmp_path):
    """The step's loss under 'optimal' is the weighted distance to D*(x) of the training set, recomputed here from the
    closed form; under 'sample' it is the distance to the image x was made from. With several images and a large
    sigma, where D*'s posterior is split, the two differ; with one training image D* is that image, and they agree."""
    from models.kernels import append_dims
    from models.optimal import OptimalDenoiser
    from models.training import draw_sigma, loss_weight

    for size in (8, 1):
        cfg = tiny(dataset_size=size, target="optimal", sigma_mean=2.0, sigma_std=0.1, **EDM)
        trainer = Trainer(cfg, tmp_path / f"n{size}")
        gen_state = trainer.gen.get_state()
        minimized, logged = trainer.losses()
        trainer.gen.set_state(gen_state)  # the same draws again, by hand
        y, _ = trainer._batch()
        sigma = draw_sigma(cfg, trainer.kernel, len(y), trainer.gen)
        x = y.double() + append_dims(sigma, y.ndim) * torch.randn(y.shape, generator=trainer.gen).double()
        with torch.no_grad():
            denoised = trainer.D(x, sigma)
        w = append_dims(loss_weight("edm", sigma, cfg.sigma_data), y.ndim)
        d_star = OptimalDenoiser(trainer.images, dtype=torch.float64)(x, sigma)
        assert torch.allclose(minimized.detach(), (w * (denoised - d_star) ** 2).mean().float(), rtol=1e-6)
        assert torch.allclose(logged, (w * (denoised - y.double()) ** 2).mean().float(), rtol=1e-6)
        if size == 1:
            assert torch.equal(minimized.detach(), logged)
        else:
            assert not torch.allclose(minimized.detach(), logged, rtol=1e-2)


@pytest.mark.parametrize("bad, message", [
    (dict(target="d_star"), "unknown target 'd_star'; valid targets: sample, optimal"),
    (dict(objective="elbo", target="optimal"), "target 'optimal' .* not to the 'elbo' objective"),
    (dict(EDM, target="optimal", distill_from="teacher"), "target 'optimal' .* not to the 'elbo' objective or "
                                                          "distillation")])
def test_a_bad_target_is_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny(**bad)


def test_a_trained_models_folder_names_its_filled_config_its_training_code_and_packages(monkeypatch):
    """train_once named its folder by the raw TOML's digest: a fix to the trainer, or a changed default that the TOML
    leaves out, kept serving the model trained before. The identity holds the filled-in config, the code of every
    module a training run executes (and no other) and the packages."""
    import subprocess
    import sys

    import models.training as training
    from tests.helpers import ROOT

    loaded = subprocess.run([sys.executable, "-c", "import sys, models.training; print(' '.join(m[7:] for m in "
                             "sys.modules if m.startswith('models.')))"], capture_output=True, text=True, cwd=ROOT,
                            check=True).stdout.split()
    assert set(loaded) - {"atomic", "registry"} == set(training.TRAINING_MODULES)
    cfg = TrainConfig(image_size=8, dataset_size=8, batch_size=8, steps=4)
    first = training.training_identity(cfg)
    assert first["config"]["sigma_data"] == 0.5 and set(first["versions"]) == set(training.TRAINING_PACKAGES)
    assert training.training_identity(TrainConfig(**{**first["config"], "sigma_data": 0.6})) != first
    monkeypatch.setattr(training, "TRAINING_MODULES", training.TRAINING_MODULES[:-1])  # one module's code less
    assert training.training_identity(cfg)["code"] != first["code"]
