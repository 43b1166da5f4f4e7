"""Spectral normalization from scratch (colorcourse.spectral) against exact singular values and against PyTorch's
`torch.nn.utils.parametrizations.spectral_norm`: outputs, u/v updates, gradients, eval mode, state dicts."""
import copy

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrizations

from colorcourse.pix2pix import PixelDiscriminator, PatchDiscriminator
from colorcourse.spectral import (SpectralNormRecorder, copy_from_torch, effective_weight, eval_layer_norms, layer_spectral_norms,
                                  power_iteration, scale_free_layers, sn_dim, spectral_norm, weight_matrix)

LAYERS = {
    'linear': (lambda: nn.Linear(20, 10), (4, 20)),
    'conv': (lambda: nn.Conv2d(3, 8, 4, 2, 1), (2, 3, 16, 16)),
    'conv1x1': (lambda: nn.Conv2d(8, 16, 1, bias=False), (2, 8, 5, 5)),
    'convT': (lambda: nn.ConvTranspose2d(8, 4, 4, 2, 1), (2, 8, 8, 8)),
    'convT_wide': (lambda: nn.ConvTranspose2d(4, 12, 3), (2, 4, 6, 6)),
}


def exact_sigma(weight, dim=0): return torch.linalg.matrix_norm(weight_matrix(weight.detach(), dim), ord=2)


@pytest.mark.parametrize('name', LAYERS)
def test_power_iteration_converges(name):
    torch.manual_seed(0)
    m = LAYERS[name][0]()
    dim = sn_dim(m)
    torch.testing.assert_close(power_iteration(m.weight, 500, dim=dim), exact_sigma(m.weight, dim), rtol=1e-3, atol=1e-5)
    sigma, u, v = power_iteration(m.weight, 500, dim=dim, return_vectors=True)
    torch.testing.assert_close(weight_matrix(m.weight, dim) @ v, sigma * u, rtol=1e-2, atol=1e-3)


def test_power_iteration_is_a_lower_bound_and_differentiable():
    torch.manual_seed(1)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    u0 = torch.randn(16)
    for n in (1, 3, 10): assert power_iteration(w, n, u0) <= exact_sigma(w) + 1e-5
    power_iteration(w, 5, u0).backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_weight_matrix_dims():
    assert weight_matrix(torch.zeros(4, 3, 2, 2)).shape == (4, 12)
    assert weight_matrix(torch.zeros(4, 3, 2, 2), 1).shape == (3, 16)
    assert sn_dim(nn.ConvTranspose2d(2, 3, 3)) == 1 and sn_dim(nn.Conv2d(2, 3, 3)) == 0 and sn_dim(nn.Linear(2, 3)) == 0
    with pytest.raises(ValueError, match='at least 2'): weight_matrix(torch.zeros(3))


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('n_iter', [1, 3])
def test_matches_torch(name, n_iter):
    torch.manual_seed(2)
    make, shape = LAYERS[name]
    x = torch.randn(*shape)
    theirs = parametrizations.spectral_norm(make(), n_power_iterations=n_iter)
    ours = copy_from_torch(spectral_norm(make(), n_power_iterations=n_iter), theirs)
    sn = theirs.parametrizations.weight[0]
    assert sn.dim == sn_dim(ours)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.05)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.05)
    for _ in range(4):                       # training steps: the vectors and the weights move together
        yo, yt = ours(x), theirs(x)
        torch.testing.assert_close(yo, yt, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours._u, sn._u, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours._v, sn._v, rtol=1e-4, atol=1e-6)
        opt_o.zero_grad(); opt_t.zero_grad()
        yo.pow(2).mean().backward(); yt.pow(2).mean().backward()
        torch.testing.assert_close(ours.weight_orig.grad, theirs.parametrizations.weight.original.grad, rtol=1e-4, atol=1e-6)
        opt_o.step(); opt_t.step()
    ours.eval(); theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', LAYERS)
def test_normalized_sigma_is_one(name):
    torch.manual_seed(3)
    make, shape = LAYERS[name]
    m = spectral_norm(make())
    x = torch.randn(*shape)
    for _ in range(300): m(x)
    torch.testing.assert_close(exact_sigma(m.weight, sn_dim(m)), torch.tensor(1.), atol=1e-3, rtol=0)
    assert abs(layer_spectral_norms(nn.Sequential(m))['0'] - 1) < 1e-3


def test_eval_does_not_update():
    torch.manual_seed(4)
    m = spectral_norm(nn.Conv2d(3, 8, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    u, v, y = m._u.clone(), m._v.clone(), m(x)
    for _ in range(3): assert torch.equal(m(x), y)
    assert torch.equal(m._u, u) and torch.equal(m._v, v)
    m.train()
    with torch.no_grad(): m.weight_orig.mul_(torch.rand_like(m.weight_orig))
    m(x)
    assert not torch.equal(m._u, u)


@pytest.mark.parametrize('name', LAYERS)
def test_state_dict_round_trip(name, tmp_path):
    torch.manual_seed(5)
    make, shape = LAYERS[name]
    x = torch.randn(*shape)
    m = spectral_norm(make())
    for _ in range(3): m(x)
    keys = {'weight_orig', '_u', '_v'} | ({'bias'} if getattr(m, 'bias', None) is not None else set())
    assert set(m.state_dict()) == keys
    torch.save(m.state_dict(), tmp_path / 'sn.pt')
    fresh = spectral_norm(make())
    fresh.load_state_dict(torch.load(tmp_path / 'sn.pt'))
    for mode in (False, True):
        m.train(mode); fresh.train(mode)
        torch.testing.assert_close(fresh(x), m(x))
    torch.testing.assert_close(copy.deepcopy(m)(x), m(x))


def test_errors():
    m = spectral_norm(nn.Linear(3, 2))
    with pytest.raises(ValueError, match='already'): spectral_norm(m)
    with pytest.raises(ValueError, match='weight matrix'): spectral_norm(nn.ReLU())
    with pytest.raises(ValueError, match='at least 1'): spectral_norm(nn.Linear(3, 2), 0)


def test_effective_weight_has_no_side_effects():
    torch.manual_seed(6)
    for norm in ('spectral', 'batch'):
        D = PatchDiscriminator(3, 8, 1, norm=norm).train()
        before = copy.deepcopy(D.state_dict())
        norms = layer_spectral_norms(D)
        assert len(norms) == 3 and all(s > 0 for s in norms.values())
        for k, v in D.state_dict().items(): assert torch.equal(v, before[k]), k
    D = PixelDiscriminator(3, 8, norm='spectral')
    for _ in range(60): D(torch.randn(2, 3, 4, 4))
    D.eval()   # reading torch's parametrized weight in training mode would run a power-iteration round
    for m in D.modules():
        if isinstance(m, nn.Conv2d): torch.testing.assert_close(effective_weight(m), m.weight)


def test_recorder_standalone():
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    torch.manual_seed(7)
    xs = torch.randn(64, 3)
    ds = list(zip(xs, xs.sum(1, keepdim=True)))
    dls = DataLoaders(DataLoader(ds, bs=8, shuffle=True), DataLoader(ds, bs=8))
    model = nn.Sequential(spectral_norm(nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 1))
    rec = SpectralNormRecorder(every=2)
    learn = Learner(dls, model, loss_func=nn.MSELoss(), cbs=rec)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    frame = rec.frame()
    assert list(frame.columns) == ['0', '2'] and list(frame.index) == [0, 2, 4, 6]
    assert abs(frame['0'].iloc[-1] - 1) < 0.05


def trained_batchnorm_patchgan(norm='batch'):
    "A small PatchGAN whose BatchNorm layers hold running statistics and scales of their own."
    torch.manual_seed(0)
    D = PatchDiscriminator(3, 8, 2, norm=norm)
    with torch.no_grad():
        for m in D.modules():
            if isinstance(m, nn.BatchNorm2d): m.weight.uniform_(0.5, 2.)
        D.train()
        for _ in range(3): D(torch.randn(8, 3, 32, 32) * 2)
    return D.eval()


def test_scale_free_layers_are_the_convolutions_a_norm_follows():
    assert scale_free_layers(PatchDiscriminator(3, 8, 3, norm='batch')) == ['layers.2', 'layers.5', 'layers.8']
    assert scale_free_layers(PatchDiscriminator(3, 8, 2, norm='instance')) == ['layers.2', 'layers.5']
    assert scale_free_layers(PatchDiscriminator(3, 8, 2, norm='spectral')) == []
    assert scale_free_layers(PixelDiscriminator(3, 8, norm='batch')) == ['layers.2']


def test_eval_layer_norms_match_the_fused_convolution():
    "A convolution followed by BatchNorm, fused into one convolution by PyTorch's own helper, has the norm eval_layer_norms gives."
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    D = trained_batchnorm_patchgan()
    norms = eval_layer_norms(D)
    for conv, bn in ((D.layers[2], D.layers[3]), (D.layers[5], D.layers[6])):
        fused = fuse_conv_bn_eval(conv, bn)
        name = next(n for n, m in D.named_modules() if m is conv)
        assert norms[name] == pytest.approx(exact_sigma(fused.weight).item(), rel=1e-4)
    assert norms['layers.0'] == pytest.approx(exact_sigma(D.layers[0].weight).item(), rel=1e-5)   # no norm after it


def test_eval_layer_norms_ignore_the_scale_batchnorm_divides_out():
    D = trained_batchnorm_patchgan()
    before, raw = eval_layer_norms(D), layer_spectral_norms(D)
    with torch.no_grad(): D.layers[2].weight.mul_(7.); D.layers[3].running_var.mul_(49.)
    assert eval_layer_norms(D)['layers.2'] == pytest.approx(before['layers.2'], rel=1e-3)
    assert layer_spectral_norms(D)['layers.2'] == pytest.approx(7 * raw['layers.2'], rel=1e-4)


def test_eval_layer_norms_of_a_spectrally_normalized_discriminator_are_one():
    D = PatchDiscriminator(3, 8, 2, norm='spectral').eval()
    assert all(v == pytest.approx(1., abs=0.05) for v in eval_layer_norms(D).values())
