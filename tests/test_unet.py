"""The U-Net against the pix2pix reference: the same layers in the same order, the same bias placement and
parameter count for every `norm`, and (with the reference's weights copied in) the same outputs."""
import functools

import pytest
import torch
import torch.nn as nn

from pix2pix_reference import leaf_layers, n_params, ref_norm_layer, with_spectral
from colorcourse.unet import NORMS, UnetGenerator, conv_layer, max_n_down, norm_layer, uses_bias


# --- Reference: a transcription of UnetGenerator / UnetSkipConnectionBlock from
# junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py (BSD licence), kept here for comparison only;
# its get_norm_layer and the shared comparison helpers are in pix2pix_reference.py.
# 'spectral' is not a reference option: it is the reference's 'none' with spectral norm around every conv.

class RefUnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        if type(norm_layer) == functools.partial: use_bias = norm_layer.func == nn.InstanceNorm2d
        else: use_bias = norm_layer == nn.InstanceNorm2d
        if input_nc is None: input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), norm_layer(inner_nc)
        uprelu, upnorm = nn.ReLU(True), norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout: model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class RefUnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        Block = functools.partial(RefUnetSkipConnectionBlock, norm_layer=norm_layer)
        b = Block(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5): b = Block(ngf * 8, ngf * 8, submodule=b, use_dropout=use_dropout)
        b = Block(ngf * 4, ngf * 8, submodule=b)
        b = Block(ngf * 2, ngf * 4, submodule=b)
        b = Block(ngf, ngf * 2, submodule=b)
        self.model = Block(output_nc, ngf, input_nc=input_nc, submodule=b, outermost=True)

    def forward(self, x): return self.model(x)

# --- end of the reference transcription


def reference(in_ch, out_ch, n_down, nf, norm, dropout=True):
    "The reference U-Net for our options (for 'spectral': 'none' plus spectral norm on every conv)."
    return with_spectral(RefUnetGenerator(in_ch, out_ch, n_down, nf, ref_norm_layer(norm), dropout), norm)


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('nf', [8, 64])
@pytest.mark.parametrize('n_down', [5, 6, 7, 8])
def test_same_layers_as_reference(n_down, nf, norm):
    ours, ref = UnetGenerator(1, 2, n_down, nf, norm), reference(1, 2, n_down, nf, norm)
    assert leaf_layers(ours) == leaf_layers(ref)
    assert n_params(ours) == n_params(ref)


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('n_down', [5, 6, 8])
def test_same_outputs_as_reference_with_copied_weights(n_down, norm):
    "Every parameter and buffer (running stats, spectral-norm vectors) copied in order gives the same function."
    torch.manual_seed(0)
    ours, ref = UnetGenerator(1, 2, n_down, 8, norm), reference(1, 2, n_down, 8, norm)
    ref_state = ref.state_dict()
    assert [v.shape for v in ours.state_dict().values()] == [v.shape for v in ref_state.values()]
    ours.load_state_dict(dict(zip(ours.state_dict().keys(), ref_state.values())))
    ours.eval(), ref.eval()
    x = torch.randn(3, 1, 2 ** n_down, 2 ** n_down)
    with torch.no_grad(): torch.testing.assert_close(ours(x.clone()), ref(x.clone()))


def test_pix2pix_unet_256_parameter_counts():
    "The reference's unet_256 (8 downsamplings, ngf=64): 54,413,955 parameters for RGB -> RGB; ours for L -> ab."
    assert n_params(UnetGenerator(3, 3, 8, 64)) == n_params(reference(3, 3, 8, 64, 'batch')) == 54_413_955
    assert n_params(UnetGenerator(1, 2, 8, 64)) == n_params(reference(1, 2, 8, 64, 'batch')) == 54_409_858


def test_bias_placement():
    "Bias before InstanceNorm only (the reference's rule); the last transposed conv always has one."
    assert [uses_bias(n) for n in NORMS] == [False, True, False, False]
    for norm in NORMS:
        net = UnetGenerator(1, 2, 5, 8, norm)
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        assert [c.bias is not None for c in convs] == [uses_bias(norm)] * (len(convs) - 1) + [True]


def test_norm_helpers():
    assert isinstance(norm_layer('batch', 4), nn.BatchNorm2d)
    inorm = norm_layer('instance', 4)
    assert isinstance(inorm, nn.InstanceNorm2d) and not inorm.affine and not inorm.track_running_stats
    assert isinstance(norm_layer('none', 4), nn.Identity) and isinstance(norm_layer('spectral', 4), nn.Identity)
    assert hasattr(conv_layer(2, 4, 'spectral'), 'parametrizations')
    assert isinstance(conv_layer(2, 4, 'batch', transpose=True), nn.ConvTranspose2d)
    for bad in ('layer', 'Batch', None):
        with pytest.raises(ValueError, match="'batch', 'instance', 'spectral', 'none'"): norm_layer(bad, 4)
        with pytest.raises(ValueError, match='norm must be one of'): UnetGenerator(norm=bad)


def test_without_skips_the_up_convs_take_half_the_channels():
    with_skips, without = UnetGenerator(1, 2, 6, 8), UnetGenerator(1, 2, 6, 8, skips=False)
    ups = lambda net: [m.in_channels for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert ups(without)[0] == ups(with_skips)[0]  # the innermost up conv never had a skip
    assert ups(without)[1:] == [c // 2 for c in ups(with_skips)[1:]]
    assert [type(m) for m in with_skips.modules()] == [type(m) for m in without.modules()]
    assert without(torch.randn(2, 1, 64, 64)).shape == (2, 2, 64, 64)


def test_bad_inputs_name_the_problem():
    net = UnetGenerator(1, 2, 5, 8)
    with pytest.raises(ValueError, match=r'n_down=5.*multiples of 32.*got 48x48'): net(torch.randn(2, 1, 48, 48))
    with pytest.raises(ValueError, match=r'multiples of 32.*got 16x16'): net(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\).*\(2, 3, 32, 32\)'): net(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\)'): net(torch.randn(1, 32, 32))
    with pytest.raises(ValueError, match='n_down'): UnetGenerator(n_down=1)
    assert [max_n_down(s) for s in (32, 48, 64, 128, 256, 1)] == [5, 4, 6, 7, 8, 0]


def test_gradients_reach_every_parameter():
    for norm in NORMS:
        net = UnetGenerator(1, 2, 5, 4, norm)
        net(torch.randn(2, 1, 32, 32)).pow(2).mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), norm
