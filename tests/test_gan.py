"The conditional GAN Learner: bad discriminators, the two steps, mixed precision on the CPU, checkpoints, a run that learns."
import math, warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.tracker import SaveModelCallback
from fastai.callback.training import ShortEpochCallback

from colorcourse.core import seed_everything
from colorcourse.data import colorization_dls
from colorcourse.gan import DCGANDiscriminator, GAN_LOSSES, gan_learner
from colorcourse.training import ConstantColor, LossRecorder, ShowGrid, score_models, simple_colorizer, train_view


@pytest.fixture(scope='module')
def dls():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return colorization_dls('sample', size=32, bs=16, epoch_len=128, valid_pct=0.25, device='cpu')


def quiet(learn):
    "The learner without its progress bars and table."
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == 'ProgressCallback'])
    learn.logger = lambda *args: None
    return learn


def small_gan(dls, nf=8, **kwargs):
    return quiet(gan_learner(dls, simple_colorizer(nf), DCGANDiscriminator(3, 32, nf), **kwargs))


def snapshot(module): return [p.detach().clone() for p in module.parameters()]
def all_changed(before, module): return all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize('D, message', [
    (lambda: DCGANDiscriminator(2, 32, 8), r'1 \+ 2 = 3 channels \(use in_ch=3\)'),
    (lambda: DCGANDiscriminator(3, 64, 8), r'expects \(B, 3, 64, 64\); got \(2, 3, 32, 32\)'),
    (lambda: nn.Conv2d(4, 1, 4), r'\(2, 3, 32, 32\) \(L and ab concatenated, 1 \+ 2 channels\)'),
    (lambda: nn.Flatten(0), r'one output \(or one map\) per pair'),
], ids=['in_ch', 'size', 'plain conv', 'flattened'])
def test_a_discriminator_that_cannot_take_the_pairs_fails_before_training(dls, D, message):
    with pytest.raises(ValueError, match=message):
        gan_learner(dls, simple_colorizer(8), D())


def test_bad_settings_are_errors(dls):
    D = lambda: DCGANDiscriminator(3, 32, 8)
    with pytest.raises(ValueError, match='gan_loss must be one of'): gan_learner(dls, simple_colorizer(8), D(), gan_loss='wgan')
    with pytest.raises(ValueError, match='d_steps'): gan_learner(dls, simple_colorizer(8), D(), d_steps=0)
    with pytest.raises(ValueError, match='flip_prob'): gan_learner(dls, simple_colorizer(8), D(), flip_prob=1.5)
    with pytest.raises(ValueError, match='2 channels'): gan_learner(dls, nn.Conv2d(1, 3, 1), D())


def test_a_discriminator_swapped_after_creation_is_checked_at_fit(dls):
    learn = small_gan(dls)
    learn.model.discriminator = DCGANDiscriminator(2, 32, 8)
    with pytest.raises(ValueError, match='use in_ch=3'): learn.fit(1)


def test_d_step_trains_d_only_and_g_step_leaves_no_gradients_in_d(dls):
    seed_everything(0)
    learn = small_gan(dls)
    trainer, model = learn.conditional_gan_trainer, learn.model.train()
    L, ab = dls.one_batch()
    g0, d0 = snapshot(model.generator), snapshot(model.discriminator)
    trainer.create_d_opt()
    fake = model(L)
    trainer.d_step(torch.cat([L, ab], 1), torch.cat([L, fake.detach()], 1))
    assert all(torch.equal(a, b) for a, b in zip(g0, model.generator.parameters())), "D's step must not change G"
    assert all_changed(d0, model.discriminator)
    assert all(p.grad is None for p in model.generator.parameters())
    learn.fit(1, cbs=ShortEpochCallback(0.25))
    assert all(p.grad is None for p in model.discriminator.parameters()), "gradients must not be left in D"


@pytest.mark.parametrize('d_steps', [1, 3])
def test_d_steps_per_generator_step(dls, d_steps):
    learn = small_gan(dls, d_steps=d_steps, lr=1e-4, lr_d=3e-4)
    learn.fit(1)
    n_batches = len(dls.train)
    assert learn.conditional_gan_trainer.d_opt.state_dict()['state'][0]['step'] == d_steps * n_batches
    assert learn.opt.state_dict()['state'][0]['step'] == n_batches
    assert learn.opt.hypers[0]['lr'] == 1e-4 and learn.conditional_gan_trainer.d_opt.hypers[0]['lr'] == 3e-4


@pytest.mark.parametrize('gan_loss', GAN_LOSSES)
def test_every_loss_and_trick_trains_with_patch_discriminators_too(dls, gan_loss):
    seed_everything(0)
    patch_D = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 4, 1, 1))   # a map of logits
    learn = quiet(gan_learner(dls, simple_colorizer(8), patch_D, gan_loss=gan_loss, label_smoothing=True,
                              noisy_labels=True, flip_prob=0.1, pool_size=20))
    g0, d0 = snapshot(learn.model.generator), snapshot(learn.model.discriminator)
    learn.fit(1, cbs=ShortEpochCallback(0.5))
    assert all_changed(g0, learn.model.generator) and all_changed(d0, learn.model.discriminator)
    assert all(math.isfinite(v) for v in learn.recorder.values[-1])
    assert len(learn.conditional_gan_trainer.pool.images) == 20


class CPUMixedPrecision(MixedPrecision):
    "fastai's MixedPrecision, on the CPU: float16 autocast and an enabled GradScaler, so the float16 path runs without a GPU."
    def before_fit(self):
        self.autocast = torch.autocast('cpu', dtype=torch.float16)
        self.learn.scaler, self.scales = torch.amp.GradScaler('cpu', init_scale=2. ** 12), []


def test_float16_mixed_precision_runs_d_in_float16_with_its_own_scaler(dls):
    seed_everything(0)
    learn = small_gan(dls, cbs=CPUMixedPrecision())
    dtypes = []
    learn.model.discriminator.layers[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    g0, d0 = snapshot(learn.model.generator), snapshot(learn.model.discriminator)
    learn.fit(1, cbs=ShortEpochCallback(0.25))       # float16 on a CPU is slow: three batches
    trainer = learn.conditional_gan_trainer
    assert trainer.amp == ('cpu', torch.float16)
    assert trainer.d_scaler.is_enabled() and trainer.d_scaler is not learn.scaler
    assert dtypes[0] == torch.float32 and set(dtypes[1:]) == {torch.float16}, "in training, D runs under G's autocast"
    assert all_changed(g0, learn.model.generator) and all_changed(d0, learn.model.discriminator)
    assert all(math.isfinite(v) for v in learn.recorder.values[-1])
    assert all(p.dtype == torch.float32 for p in learn.model.parameters()), "weights stay float32"


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only fallback')
def test_to_fp16_and_to_bf16_run_on_a_cpu_only_machine(dls):
    # fastai's MixedPrecision always asks for CUDA autocast; without a GPU, PyTorch disables it (with a warning), so
    # the learner trains in float32 and the discriminator's scaler stays off. The CPU float16 test above covers the logic.
    for to_mp in ('to_fp16', 'to_bf16'):
        learn = getattr(small_gan(dls), to_mp)()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            learn.fit(1, cbs=ShortEpochCallback(0.25))
        trainer = learn.conditional_gan_trainer
        assert trainer.amp is None and not trainer.d_scaler.is_enabled()
        assert all(math.isfinite(v) for v in learn.recorder.values[-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('to_mp', ['to_fp16', 'to_bf16'])
def test_mixed_precision_on_a_gpu(to_mp):
    if to_mp == 'to_bf16' and not torch.cuda.is_bf16_supported(): pytest.skip('this GPU has no bfloat16')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        gpu_dls = colorization_dls('sample', size=32, bs=16, epoch_len=64, valid_pct=0.25, device='cuda')
    seed_everything(0)
    learn = getattr(small_gan(gpu_dls), to_mp)()
    g0, d0 = snapshot(learn.model.generator), snapshot(learn.model.discriminator)
    learn.fit(2)
    trainer = learn.conditional_gan_trainer
    assert trainer.amp == ('cuda', torch.float16 if to_mp == 'to_fp16' else torch.bfloat16)
    assert trainer.d_scaler.is_enabled() == (to_mp == 'to_fp16')
    assert all_changed(g0, learn.model.generator) and all_changed(d0, learn.model.discriminator)
    assert all(math.isfinite(v) for v in learn.recorder.values[-1])


def test_save_and_load_restore_both_networks_and_both_optimizers(dls, tmp_path):
    seed_everything(0)
    learn = small_gan(dls, path=tmp_path)
    learn.fit(1, cbs=ShortEpochCallback(0.5))
    learn.save('gan')
    seed_everything(1)
    resumed = small_gan(dls, path=tmp_path)
    assert not torch.equal(resumed.model.discriminator.layers[0].weight, learn.model.discriminator.layers[0].weight)
    resumed.load('gan')
    for (k, a), b in zip(learn.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for get in (lambda l: l.opt, lambda l: l.conditional_gan_trainer.d_opt):
        saved, loaded = get(learn).state_dict(), get(resumed).state_dict()
        assert len(saved['state']) == len(loaded['state']) > 0
        for s, t in zip(saved['state'], loaded['state']):
            assert s['step'] == t['step'] and torch.equal(s['grad_avg'], t['grad_avg']) and torch.equal(s['sqr_avg'], t['sqr_avg'])
    resumed.fit(1, cbs=ShortEpochCallback(0.25))
    assert resumed.conditional_gan_trainer.d_opt.state_dict()['state'][0]['step'] > learn.conditional_gan_trainer.d_opt.state_dict()['state'][0]['step']
    weights_only = small_gan(dls, path=tmp_path).load('gan', with_opt=False)
    assert torch.equal(weights_only.model.generator[0][0].weight, learn.model.generator[0][0].weight)


def test_a_short_gan_run_learns_on_the_sample_photos(dls, tmp_path):
    seed_everything(0)
    grid, losses = ShowGrid(n=2, show=False), LossRecorder(('loss', 'g_adv', 'd_loss', 'd_acc_real'))
    learn = small_gan(dls, nf=16, cbs=[grid, losses], path=tmp_path)
    g0, d0 = snapshot(learn.model.generator), snapshot(learn.model.discriminator)
    learn.fit(4, cbs=SaveModelCallback(monitor='ab_l1', comp=np.less, fname='best'))
    assert all_changed(g0, learn.model.generator) and all_changed(d0, learn.model.discriminator)
    names = learn.recorder.metric_names
    assert names[1:7] == ['train_loss', 'valid_loss', 'g_adv', 'd_loss', 'd_acc_real', 'd_acc_fake'] and 'ab_l1' in names
    values = np.array(learn.recorder.values, dtype=float)
    assert np.isfinite(values).all() and ((values[:, 4:6] >= 0) & (values[:, 4:6] <= 1)).all()
    assert np.allclose(values[:, 1], values[:, names.index('ab_l1') - 1], atol=1e-5), "valid_loss is the L1 of ab"
    for name in losses.names: assert len(losses.series(name)) == 4 * len(dls.train) and np.isfinite(losses.series(name)).all()
    scores = score_models(dls, {'gray': ConstantColor(), 'gan': learn.model.generator}, dl=train_view(dls))
    assert scores.loc['gan', 'ab_l1'] < scores.loc['gray', 'ab_l1'], "the generator must beat gray on its photos"
    assert scores.loc['gan', 'colorfulness'] > 10
    assert [e for e, _ in grid.history] == [1, 2, 3, 4] and (tmp_path / 'models' / 'best.pth').exists()


def test_init_weights_retunes_spectral_norm():
    "New weights drawn under PyTorch's spectral norm get matching power-iteration vectors: every layer starts at norm 1."
    from colorcourse.gan import init_weights
    from colorcourse.unet import conv_layer
    layers = init_weights(nn.Sequential(conv_layer(3, 8, 'spectral'), conv_layer(8, 16, 'spectral', transpose=True)))
    for m in layers:
        W = m.weight.detach()
        W = (W.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else W).reshape(W.shape[1 if isinstance(m, nn.ConvTranspose2d) else 0], -1)
        assert abs(torch.linalg.matrix_norm(W, ord=2).item() - 1) < 1e-2
