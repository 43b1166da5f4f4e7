"The training Learner: shape errors before any training, learning on the sample photos, the callbacks' side effects."
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from fastai.callback.core import Callback
from fastai.callback.tracker import SaveModelCallback

from colorcourse.core import seed_everything
from colorcourse.data import colorization_dls
from colorcourse.training import (ConstantColor, LossRecorder, ShowGrid, colorization_learner, score_models,
                                  simple_colorizer, train_view)


@pytest.fixture(scope='module')
def dls():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return colorization_dls('sample', size=32, bs=16, epoch_len=128, valid_pct=0.3, device='cpu')


def quiet(learn):
    "The learner without its progress bars (fastai's `no_bar` is a context manager; these tests want it for good)."
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == 'ProgressCallback'])
    return learn


def test_wrong_output_shape_fails_before_training_with_both_shapes(dls):
    with pytest.raises(ValueError, match=r'to \(2, 3, 32, 32\).*\(2, 2, 32, 32\)'):
        colorization_learner(dls, nn.Conv2d(1, 3, 3, padding=1))


def test_a_model_swapped_after_creation_is_checked_at_fit(dls):
    learn = quiet(colorization_learner(dls, simple_colorizer(8)))
    learn.model = nn.Conv2d(1, 2, 3)            # no padding: 30x30 out
    with pytest.raises(ValueError, match=r'\(2, 2, 30, 30\)'):
        learn.fit(1)


def test_the_first_model_learns_on_the_sample_photos(dls, tmp_path):
    seed_everything(0)
    losses, grid = LossRecorder(), ShowGrid(n=2, show=False, save_dir=tmp_path / 'grids')
    learn = quiet(colorization_learner(dls, simple_colorizer(16), cbs=[losses, grid], path=tmp_path))
    learn.fit_one_cycle(4, lr_max=2e-3, cbs=SaveModelCallback(monitor='ab_l1', comp=np.less, fname='best'))
    curve = losses.series('loss')
    assert len(curve) == 4 * 8 and curve[-6:].mean() < 0.9 * curve[:6].mean(), "the training loss must fall"
    scores = score_models(dls, {'gray': ConstantColor(), 'model': learn.model}, dl=train_view(dls))
    assert scores.loc['model', 'ab_l1'] < scores.loc['gray', 'ab_l1'], "the model must fit its photos better than gray"
    assert scores.loc['model', 'colorfulness'] > 10 > scores.loc['gray', 'colorfulness']
    assert sorted(p.name for p in (tmp_path / 'grids').iterdir()) == [f'epoch_{e:03d}.png' for e in range(1, 5)]
    assert (tmp_path / 'models' / 'best.pth').exists()
    assert [e for e, _ in grid.history] == [1, 2, 3, 4]


def test_lr_find_suggests_a_learning_rate(dls):
    learn = quiet(colorization_learner(dls, simple_colorizer(8)))
    before = [p.detach().clone() for p in learn.model.parameters()]
    lr = learn.lr_find(num_it=20, show_plot=False).valley
    assert 1e-6 < lr < 1
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters())), "lr_find must restore the weights"


def test_constant_color_predicts_its_colour_everywhere():
    out = ConstantColor((0.25, -0.5))(torch.zeros(2, 1, 5, 7))
    assert out.shape == (2, 2, 5, 7) and torch.all(out[:, 0] == 0.25) and torch.all(out[:, 1] == -0.5)


def test_mixed_precision_picks_fp16_where_bf16_is_only_emulated(monkeypatch):
    "A T4 (Colab's free GPU) emulates bfloat16: `is_bf16_supported()` says yes, but only `including_emulation=False` tells the truth."
    import torch
    from colorcourse.training import native_bf16
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: including_emulation)   # a T4
    assert native_bf16() is False
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)                   # an H100
    assert native_bf16() is True


class AutocastSeen(Callback):
    "Records whether the CPU's bfloat16 autocast is open during each forward pass."
    order = 15
    def before_fit(self): self.states = set()
    def after_pred(self):
        self.states.add(torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16)


def _losses_on_the_cpu(dls, fast: bool, bf16: bool, steps: int = 3) -> tuple:
    "Train the same small model from the same seed on the same batches; its losses and the Learner's callbacks."
    seed_everything(0)
    dls.train.reseed(0)
    losses, seen = LossRecorder(), AutocastSeen()
    learn = quiet(colorization_learner(dls, simple_colorizer(16), cbs=[losses, seen], fast=fast, bf16=bf16))
    learn.fit(steps, lr=2e-3)
    assert seen.states == {bool(bf16 and fast)}, seen.states     # bfloat16 autocast open for every forward pass, or never
    assert not torch.is_autocast_enabled('cpu')                  # and closed after training
    return losses.series('loss'), [type(cb).__name__ for cb in learn.cbs]


def test_bf16_cpu_training_tracks_float32(dls):
    "The CPU fast path in bfloat16 follows float32's loss curve over a short run (3 epochs of 8 batches), within bfloat16's precision."
    fp32, cbs32 = _losses_on_the_cpu(dls, fast=False, bf16=False)
    bf16, cbs16 = _losses_on_the_cpu(dls, fast=True, bf16=True)
    assert 'CPUMixedPrecision' in cbs16 and 'ChannelsLast' in cbs16 and 'CPUMixedPrecision' not in cbs32
    assert len(bf16) == len(fp32) == 24
    assert np.abs(bf16 - fp32).max() < 0.05 * fp32.max(), (bf16, fp32)      # step for step, within 5% of the loss scale
    assert bf16[-8:].mean() < 0.9 * bf16[:8].mean(), "bfloat16 training must learn too"
    assert abs(bf16[-8:].mean() - fp32[-8:].mean()) < 0.05 * fp32[-8:].mean()


def test_fast_path_on_a_cpu_without_native_bf16_stays_float32(dls, monkeypatch):
    from colorcourse import training
    monkeypatch.setattr(training, 'native_bf16', lambda device='cuda': False)
    cbs = [type(cb).__name__ for cb in quiet(colorization_learner(dls, simple_colorizer(8), fast=True)).cbs]
    assert 'ChannelsLast' in cbs and 'CPUMixedPrecision' not in cbs and 'MixedPrecision' not in cbs
    monkeypatch.setattr(training, 'native_bf16', lambda device='cuda': True)
    assert 'CPUMixedPrecision' in [type(cb).__name__ for cb in quiet(colorization_learner(dls, simple_colorizer(8), fast=True)).cbs]


def test_compile_is_an_option_of_the_learner(dls):
    "`compile=` compiles the network in place (here with the light aot_eager backend), and it still trains and keeps its weight names."
    learn = quiet(colorization_learner(dls, simple_colorizer(8), compile='aot_eager'))
    assert getattr(learn.model, '_compiled_call_impl', None) is not None
    names = list(learn.model.state_dict())
    learn.fit(1, lr=1e-3)
    assert np.isfinite(learn.recorder.values[-1][0]) and list(learn.model.state_dict()) == names
    assert getattr(quiet(colorization_learner(dls, simple_colorizer(8))).model, '_compiled_call_impl', None) is None
