"""The Appendix C generators: two VAEs trained by the suite's training loop and sampled from the bank's noise."""
import json

import pytest
import torch

from models.checkpoints import load_checkpoint
from models.noise import NoiseBank
from models.generate import generate
from models.training import TrainConfig, train, wrap_for
from models.vae import NoiseDecoder
from models.zoo import ZooEntry, ZooError, load_denoiser
from tests.helpers import frozen_copy

VAE = dict(objective="elbo", kernel="edm", prediction="generator", time_input="t", time_scale=1.0, image_size=8,
           dataset_size=8, batch_size=8, steps=40, lr=1e-3, checkpoint_every=20)
OPTIONS = {"vae-conv": {"latent": 6, "channels": 8}, "vae-mlp": {"latent": 6, "hidden": 32}}


def entry(folder, name="g", **kw):
    return ZooEntry(name=name, source=str(folder), format="samenoise-generator", kernel="edm", prediction="generator",
                    time_input="t", sampler="consistency", nfe=1, image_size=8, **kw)


@pytest.mark.parametrize("arch", ["vae-conv", "vae-mlp"])
def test_a_vae_trains_and_samples_the_decoded_noise(tmp_path, arch):
    cfg = TrainConfig(arch=arch, arch_options=OPTIONS[arch], **VAE)
    model = train(cfg, tmp_path)
    train(frozen_copy(cfg), tmp_path / "frozen")  # the same batches and noise, no update
    losses, frozen = ([json.loads(line)["loss"] for line in open(folder / "loss.jsonl")]
                      for folder in (tmp_path, tmp_path / "frozen"))
    assert sum(losses[-10:]) < sum(frozen[-10:])  # the negative ELBO falls below the untrained model's
    D = load_denoiser(entry(model))
    bank = NoiseBank.draw(0, (3, 8, 8), n=3)
    out = generate(D, D.kernel, bank, sampler="consistency", nfe=1, micro_batch=4)
    net, _ = load_checkpoint(model)
    expected = net.decode(bank.eps.flatten(1)[:, :6].float()).double()  # z = the first `latent` noise coordinates
    torch.testing.assert_close(out.x, expected, rtol=1e-5, atol=1e-5)
    assert out.nfe == 1 and out.x.abs().max() <= 1


@pytest.mark.parametrize("kernel", ["edm", "ve", "vp", "subvp"])
def test_the_decoder_decodes_the_bank_noise_of_the_start_on_every_kernel_and_refuses_other_sigmas(tmp_path, kernel):
    model = train(TrainConfig(arch="vae-mlp", arch_options=OPTIONS["vae-mlp"], **VAE | {"steps": 2}), tmp_path)
    net, _ = load_checkpoint(model)
    D = NoiseDecoder(net, kernel)
    eps = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    top = D.kernel.sigma_max
    expected = net.decode(eps.flatten(1)[:, :6].float()).double()
    # the start is eps * prior_scale / s(t_max): sigma_max eps on EDM / VE, sqrt(1 + sigma_max^2) eps on VP (not
    # sigma_max eps, which decoded a latent 2e-5 too large)
    torch.testing.assert_close(D(D.kernel.initial_state(eps), top), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="decodes only the start of sampling .*consistency sampler at NFE 1"):
        D(D.kernel.initial_state(eps), top / 2)
    with pytest.raises(ValueError, match="a VAE generator is unconditional"):
        D(eps, top, torch.tensor([0, 1]))


def test_a_generator_entry_takes_the_one_step_sampler_only(tmp_path):
    from models.zoo import read_zoo
    zoo = tmp_path / "zoo.toml"
    zoo.write_text('[models.g]\nsource = "g"\nformat = "samenoise-generator"\nprediction = "generator"\n'
                   'sampler = "dpm3"\nnfe = 20\n')
    with pytest.raises(ZooError, match="generator sampled at dpm3@20.*valid sampler consistency, nfe 1"):
        read_zoo(zoo)


def test_a_diffusion_checkpoint_under_the_generator_format_is_refused(tmp_path):
    model = train(TrainConfig(kernel="edm", prediction="edm", objective="edm", time_input="log-sigma", time_scale=1.0,
                              arch_options={"base_channels": 8}, image_size=8, dataset_size=8, batch_size=8, steps=1),
                  tmp_path)
    with pytest.raises(ZooError, match="format 'samenoise-generator' needs a VAE checkpoint"):
        load_denoiser(ZooEntry(name="g", source=str(model), format="samenoise-generator", kernel="edm",
                               prediction="edm", time_input="log-sigma", image_size=8))


@pytest.mark.parametrize("arch, objective", [("unet", "elbo"), ("vae-conv", "edm")])
def test_the_elbo_objective_goes_with_the_vae_architectures_only(arch, objective):
    with pytest.raises(ValueError, match="the 'elbo' objective trains exactly the VAE architectures"):
        TrainConfig(arch=arch, objective=objective)


def test_a_conditional_vae_is_refused():
    with pytest.raises(ValueError, match="the VAE architectures .* are unconditional; got conditional = true"):
        TrainConfig(arch="vae-mlp", objective="elbo", conditional=True)


def test_a_vae_run_has_no_denoising_floor(tmp_path):
    import math

    from models.convergence import convergence

    train(TrainConfig(arch="vae-mlp", arch_options=OPTIONS["vae-mlp"], **VAE | {"steps": 30}), tmp_path)
    c = convergence(tmp_path)
    assert c.steps == 30 and math.isnan(c.floor.value)  # an ELBO is not a denoising loss: no D* to compare with
