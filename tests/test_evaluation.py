"Evaluation: any colorizer form (module, Learner, GAN Learner, checkpoint file), the table, the grid, and the Turing test's logic and widget."
import math, warnings

import pytest
import torch
import torch.nn as nn

from colorcourse.core import seed_everything
from colorcourse.data import colorization_dls
from colorcourse.gan import DCGANDiscriminator, gan_learner
from colorcourse.lab import lab_decode
from colorcourse.metrics import ab_l1
from colorcourse.training import ConstantColor, colorization_learner, reference_batch, simple_colorizer, train_view
from colorcourse.unet import UnetGenerator
from colorcourse.evaluation import TuringTest, as_colorizer, comparison_grid, evaluate_models, image_png, predict_batch


@pytest.fixture(scope='module')
def dls():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return colorization_dls('sample', size=32, bs=16, epoch_len=32, valid_pct=0.3, device='cpu')


@pytest.fixture(scope='module')
def models(dls):
    "A module, a Learner and a GAN Learner, untrained but with fixed weights."
    seed_everything(0)
    net = simple_colorizer(4)
    return {'module': UnetGenerator(n_down=5, nf=4), 'learner': colorization_learner(dls, net),
            'gan': gan_learner(dls, UnetGenerator(n_down=5, nf=4), DCGANDiscriminator(3, 32, 4))}


def test_as_colorizer_unwraps_learners_and_gans(models):
    assert as_colorizer(models['module']) is models['module']
    assert as_colorizer(models['learner']) is models['learner'].model
    assert as_colorizer(models['gan']) is models['gan'].model.generator
    with pytest.raises(TypeError, match='got list'): as_colorizer([1, 2])


def test_predict_batch_keeps_the_mode_and_needs_no_grad(dls, models):
    net = as_colorizer(models['learner']).train()
    L, ab = reference_batch(dls, 2)
    pred = predict_batch(net, L)
    assert net.training and not pred.requires_grad and pred.shape == ab.shape
    assert torch.equal(pred, predict_batch(net, L))
    assert pred.min() >= -1 and pred.max() <= 1


def test_evaluate_models_rows_columns_and_baselines(dls, models):
    table = evaluate_models(models, dls, mean_colour=(0.1, 0.2))
    assert list(table.index) == ['gray', 'mean colour', 'module', 'learner', 'gan']
    assert list(table.columns) == ['ab_l1', 'psnr', 'ssim', 'colorfulness', 'delta_cf', 'ab_auc']
    L, ab = (torch.cat(t) for t in zip(*dls.valid))
    const = torch.tensor([0.1, 0.2]).view(1, 2, 1, 1).expand_as(ab)
    assert math.isclose(table.loc['mean colour', 'ab_l1'], float(ab_l1(const, ab)), rel_tol=1e-4)
    assert math.isclose(table.loc['gray', 'ab_l1'], float(ab.abs().mean()), rel_tol=1e-4)
    on_train = evaluate_models({'module': models['module']}, dls, dl=train_view(dls), mean_colour=(0., 0.))
    assert on_train.loc['gray', 'ab_l1'] != table.loc['gray', 'ab_l1']
    with pytest.raises(ValueError, match='baselines'): evaluate_models({'mean colour': models['module']}, dls)


def test_comparison_grid_has_gray_each_model_and_truth(dls, models):
    import matplotlib.pyplot as plt
    fig = comparison_grid(models, dls, n=2)
    assert len(fig.axes) == 2 * 5
    assert [ax.get_title() for ax in fig.axes[:5]] == ['gray', 'module', 'learner', 'gan', 'truth']
    plt.close(fig)


def test_checkpoint_files_are_colorizers_too(dls, models, tmp_path):
    inference = pytest.importorskip('colorcourse.inference')
    net = as_colorizer(models['module'])
    path = inference.save_checkpoint(tmp_path / 'unet.safetensors', net, size=32)
    L, _ = reference_batch(dls, 2)
    for p in (path, str(path)):
        loaded = as_colorizer(p)
        assert isinstance(loaded, UnetGenerator) and loaded is not net
        assert torch.allclose(predict_batch(loaded, L), predict_batch(net, L), atol=1e-5)
    table = evaluate_models({'file': path, 'module': net}, dls, mean_colour=(0., 0.))
    assert table.loc['file'].tolist() == pytest.approx(table.loc['module'].tolist(), rel=1e-4)
    with pytest.raises((FileNotFoundError, ValueError)): as_colorizer(tmp_path / 'missing.safetensors')


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_turing_test_order_is_seeded_and_complete():
    real, fakes = images(), {'A': images(seed=1), 'B': images(seed=2)}
    a, b, c = TuringTest(real, fakes, seed=3), TuringTest(real, fakes, seed=3), TuringTest(real, fakes, seed=4)
    assert (a.trials, a.real_side) == (b.trials, b.real_side)
    assert (a.trials, a.real_side) != (c.trials, c.real_side)
    assert sorted(a.trials) == [(m, i) for m in 'AB' for i in range(4)]
    big = TuringTest(images(200), {'A': images(200, 1)}, seed=0)
    assert 70 < big.real_side.count('left') < 130        # the real photo's side is random, not fixed


def test_turing_test_pairs_answers_and_fooling_rate():
    real, fake = images(), images(seed=1)
    tt = TuringTest(real, {'A': fake}, seed=0)
    assert tt.tally().loc['A', 'answered'] == 0 and math.isnan(tt.tally().loc['A', 'fooling_rate'])
    perfect = lambda left, right: 'left' if any(torch.equal(left, r) for r in real) else 'right'
    assert tt.run(perfect).loc['A', 'fooling_rate'] == 0
    fooled = TuringTest(real, {'A': fake}, seed=0)
    assert fooled.run(lambda l, r: 'right' if perfect(l, r) == 'left' else 'left').loc['A', 'fooling_rate'] == 1
    with pytest.raises(IndexError, match='answered'): tt.answer('left')
    with pytest.raises(IndexError, match='answered'): tt.pair()


def test_turing_test_rejects_bad_input():
    real = images()
    with pytest.raises(ValueError, match="'left' or 'right'"): TuringTest(real, {'A': real}).answer('up')
    with pytest.raises(ValueError, match='at least one model'): TuringTest(real, {})
    with pytest.raises(ValueError, match=r"fakes\['A'\]"): TuringTest(real, {'A': real[:, :1]})
    with pytest.raises(ValueError, match='real must be RGB'): TuringTest((real * 255).byte(), {'A': real})


def test_turing_test_from_models_and_widget(dls, models):
    tt = TuringTest.from_models({'gray': ConstantColor(), 'gan': models['gan']}, dls, n=2, seed=0)
    L, ab = reference_batch(dls, 2)
    assert torch.allclose(tt.real, lab_decode(L, ab).cpu())
    ui = tt.widget(px=48)
    (left, _), (left_btn, right_btn), status = ui.children[0].children, ui.children[1].children, ui.children[2]
    assert left.value == image_png(tt.pair()[0], 48) and 'Pair 1 of 4' in status.value
    for _ in range(2): left_btn.click(); right_btn.click()
    assert tt.done and left_btn.disabled and right_btn.disabled and 'fooling_rate' in status.value
    assert tt.choices == ['left', 'right'] * 2
