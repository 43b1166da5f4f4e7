"""The PatchGAN and PixelGAN discriminators against the pix2pix reference: the same layers in the same order, the
same bias placement and parameter count for every `norm`, `n_layers` and width; receptive fields and map sizes."""
import functools

import pytest
import torch
import torch.nn as nn

from pix2pix_reference import leaf_layers, n_params, ref_norm_layer, with_spectral
from colorcourse.unet import NORMS
from colorcourse.cnn import measured_receptive_field
from colorcourse.pix2pix import (PatchDiscriminator, PixelDiscriminator, conv_receptive_field,
                                 patch_map_size, receptive_field)


# --- Reference: a transcription of NLayerDiscriminator and PixelDiscriminator from
# junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py (BSD licence), kept here for comparison only;
# its get_norm_layer and the shared comparison helpers are in pix2pix_reference.py.
# 'spectral' is not a reference option: it is the reference's 'none' with spectral norm around every conv.

def ref_use_bias(norm_layer):
    # the reference: no bias before BatchNorm (its affine shift does the job), a bias before InstanceNorm
    if type(norm_layer) == functools.partial: return norm_layer.func == nn.InstanceNorm2d
    return norm_layer == nn.InstanceNorm2d


class RefNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = ref_use_bias(norm_layer)
        kw, padw = 4, 1
        sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult, nf_mult_prev = 1, 1
        for n in range(1, n_layers):  # gradually increase the number of filters
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                         norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
                     norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]  # 1-channel prediction map
        self.model = nn.Sequential(*sequence)

    def forward(self, input): return self.model(input)


class RefPixelDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = ref_use_bias(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, stride=1, padding=0, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, stride=1, padding=0, bias=use_bias))

    def forward(self, input): return self.net(input)

# --- end of the reference transcription


def ref_patch(in_ch, nf, n_layers, norm): return with_spectral(RefNLayerDiscriminator(in_ch, nf, n_layers, ref_norm_layer(norm)), norm)
def ref_pixel(in_ch, nf, norm): return with_spectral(RefPixelDiscriminator(in_ch, nf, ref_norm_layer(norm)), norm)


def layer_details(m):
    "A leaf layer's type, conv geometry, LeakyReLU slope and parameter shapes."
    geom = (m.kernel_size, m.stride, m.padding) if isinstance(m, nn.Conv2d) else None
    slope = m.negative_slope if isinstance(m, nn.LeakyReLU) else None
    return (type(m).__name__, geom, slope, [tuple(p.shape) for p in m.parameters()])


def leaf_details(net): return leaf_layers(net, layer_details)


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('nf', [8, 64])
@pytest.mark.parametrize('n_layers', [1, 2, 3, 4])
def test_patch_same_layers_as_reference(n_layers, nf, norm):
    ours, ref = PatchDiscriminator(3, nf, n_layers, norm), ref_patch(3, nf, n_layers, norm)
    assert leaf_details(ours) == leaf_details(ref)
    assert n_params(ours) == n_params(ref)


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('nf', [8, 64])
def test_pixel_same_layers_as_reference(nf, norm):
    ours, ref = PixelDiscriminator(3, nf, norm), ref_pixel(3, nf, norm)
    assert leaf_details(ours) == leaf_details(ref)
    assert n_params(ours) == n_params(ref)


@pytest.mark.parametrize('norm', NORMS)
def test_same_outputs_as_reference_with_copied_weights(norm):
    "Every parameter and buffer copied in order gives the same function (eval mode)."
    torch.manual_seed(0)
    for ours, ref in ((PatchDiscriminator(3, 8, 3, norm), ref_patch(3, 8, 3, norm)),
                      (PixelDiscriminator(3, 8, norm), ref_pixel(3, 8, norm))):
        ref_state = ref.state_dict()
        assert [v.shape for v in ours.state_dict().values()] == [v.shape for v in ref_state.values()]
        ours.load_state_dict(dict(zip(ours.state_dict().keys(), ref_state.values())))
        ours.eval(), ref.eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad(): torch.testing.assert_close(ours(x.clone()), ref(x.clone()))


def test_parameter_counts_computed_by_hand():
    "The 70x70 PatchGAN of pix2pix's facades setting (6 channels in: input and output RGB), counted layer by layer."
    def count(in_ch, nf=64):
        convs = in_ch * nf * 16 + nf                      # first conv, with bias
        convs += nf * 2 * nf * 16 + 2 * nf * 4 * nf * 16  # two stride-2 convs, no bias
        convs += 4 * nf * 8 * nf * 16                      # the stride-1 feature conv, no bias
        convs += 8 * nf * 16 + 1                           # the 1-channel output conv, with bias
        bn = 2 * (2 * nf + 4 * nf + 8 * nf)                # BatchNorm scale and shift
        return convs + bn
    assert count(6) == 2_768_705
    assert n_params(PatchDiscriminator(6, 64, 3)) == n_params(ref_patch(6, 64, 3, 'batch')) == count(6)
    assert n_params(PatchDiscriminator(3, 64, 3)) == count(3)
    assert n_params(PixelDiscriminator(6, 64)) == n_params(ref_pixel(6, 64, 'batch')) == 6 * 64 + 64 + 64 * 128 + 256 + 128


@pytest.mark.parametrize('n_layers,field', [(1, 16), (2, 34), (3, 70)])
def test_receptive_fields(n_layers, field):
    assert receptive_field(n_layers) == field
    assert measured_receptive_field(PatchDiscriminator(3, 4, n_layers), 256) == field
    ref = ref_patch(3, 4, n_layers, 'batch')
    ref.in_ch = 3  # what measured_receptive_field reads to make its input
    assert measured_receptive_field(ref, 256) == field


def test_receptive_field_arithmetic():
    assert conv_receptive_field([(4, 2), (4, 1), (4, 1)]) == 16
    assert conv_receptive_field([(3, 1)] * 2) == 5
    assert measured_receptive_field(PixelDiscriminator(3, 4), 32) == 1
    with pytest.raises(ValueError, match='at least 1'): receptive_field(0)


@pytest.mark.parametrize('size', [32, 64, 128, 256])
@pytest.mark.parametrize('n_layers', [1, 2, 3])
def test_map_sizes(size, n_layers):
    side = patch_map_size(size, n_layers)
    assert side == size // 2 ** n_layers - 2
    with torch.no_grad():
        assert PatchDiscriminator(3, 4, n_layers)(torch.zeros(1, 3, size, size)).shape == (1, 1, side, side)
        assert ref_patch(3, 4, n_layers, 'batch')(torch.zeros(1, 3, size, size)).shape == (1, 1, side, side)
        assert PixelDiscriminator(3, 4)(torch.zeros(1, 3, size, size)).shape == (1, 1, size, size)
    assert [patch_map_size(s, 3) for s in (64, 128, 256)] == [6, 14, 30]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'): PatchDiscriminator()(torch.zeros(1, 2, 64, 64))
    with pytest.raises(ValueError, match='at least 24'): PatchDiscriminator()(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'): PixelDiscriminator()(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="'batch', 'instance', 'spectral', 'none'"): PatchDiscriminator(norm='layer')
    with pytest.raises(ValueError, match="'batch', 'instance', 'spectral', 'none'"): PixelDiscriminator(norm='layer')
