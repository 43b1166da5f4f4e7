"""The ResNet generator against the pix2pix/CycleGAN reference: the same layers in the same order, the same
parameter count for every `norm`, and (with the reference's weights copied in) the same outputs; the
initializations; and the ResNet-encoder U-Net without touching the network."""
import functools
from urllib.error import URLError

import pytest
import torch
import torch.nn as nn

from pix2pix_reference import leaf_layers, n_params, ref_norm_layer, with_spectral
from colorcourse.resnet import ResnetBlock, ResnetGenerator, init_weights, resnet_encoder, resnet_unet
from colorcourse.unet import NORMS


# --- Reference: a transcription of ResnetGenerator / ResnetBlock from
# junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py (BSD licence), kept here for comparison only
# (padding_type='reflect', the default; get_norm_layer and the comparison helpers are in pix2pix_reference.py).
# 'spectral' is not a reference option: it is the reference's
# 'none' with spectral norm around every conv, the last one included.

class RefResnetBlock(nn.Module):
    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        self.conv_block = self.build_conv_block(dim, padding_type, norm_layer, use_dropout, use_bias)

    def build_conv_block(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        conv_block = []
        p = 0
        if padding_type == 'reflect': conv_block += [nn.ReflectionPad2d(1)]          # (replicate / zero omitted)
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout: conv_block += [nn.Dropout(0.5)]
        if padding_type == 'reflect': conv_block += [nn.ReflectionPad2d(1)]
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
        return nn.Sequential(*conv_block)

    def forward(self, x): return x + self.conv_block(x)  # add skip connections


class RefResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6,
                 padding_type='reflect'):
        assert n_blocks >= 0
        super().__init__()
        if type(norm_layer) == functools.partial: use_bias = norm_layer.func == nn.InstanceNorm2d
        else: use_bias = norm_layer == nn.InstanceNorm2d
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                 norm_layer(ngf), nn.ReLU(True)]
        n_downsampling = 2
        for i in range(n_downsampling):  # add downsampling layers
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        mult = 2 ** n_downsampling
        for i in range(n_blocks):  # add ResNet blocks
            model += [RefResnetBlock(ngf * mult, padding_type=padding_type, norm_layer=norm_layer,
                                     use_dropout=use_dropout, use_bias=use_bias)]
        for i in range(n_downsampling):  # add upsampling layers
            mult = 2 ** (n_downsampling - i)
            model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1,
                                         output_padding=1, bias=use_bias),
                      norm_layer(int(ngf * mult / 2)), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3)]
        model += [nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
        model += [nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, input): return self.model(input)

# --- end of the reference transcription


def reference(in_ch, out_ch, nf, n_blocks, norm, dropout=False):
    "The reference ResNet generator for our options (for 'spectral': 'none' plus spectral norm on every conv)."
    return with_spectral(RefResnetGenerator(in_ch, out_ch, nf, ref_norm_layer(norm), dropout, n_blocks), norm)


def conv_settings(net):
    "Kernel, stride, padding, output padding and bias of every conv, in order."
    return [(type(m).__name__, m.kernel_size, m.stride, m.padding, getattr(m, 'output_padding', None), m.bias is not None)
            for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('nf', [8, 64])
@pytest.mark.parametrize('n_blocks', [6, 9])
@pytest.mark.parametrize('dropout', [False, True])
def test_same_layers_as_reference(n_blocks, nf, norm, dropout):
    ours, ref = ResnetGenerator(1, 2, nf, n_blocks, norm, dropout), reference(1, 2, nf, n_blocks, norm, dropout)
    assert leaf_layers(ours) == leaf_layers(ref)
    assert conv_settings(ours) == conv_settings(ref)
    assert n_params(ours) == n_params(ref)


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('n_blocks', [6, 9])
def test_same_outputs_as_reference_with_copied_weights(n_blocks, norm):
    "Every parameter and buffer (running stats, spectral-norm vectors) copied in order gives the same function."
    torch.manual_seed(0)
    ours, ref = ResnetGenerator(1, 2, 8, n_blocks, norm), reference(1, 2, 8, n_blocks, norm)
    ref_state = ref.state_dict()
    assert [v.shape for v in ours.state_dict().values()] == [v.shape for v in ref_state.values()]
    ours.load_state_dict(dict(zip(ours.state_dict().keys(), ref_state.values())))
    if norm == 'batch':  # non-trivial running statistics, so that eval mode really uses them
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d): m.running_mean.uniform_(-0.1, 0.1); m.running_var.uniform_(0.5, 1.5)
        ours.load_state_dict(dict(zip(ours.state_dict().keys(), ref.state_dict().values())))
    ours.eval(), ref.eval()
    x = torch.randn(3, 1, 32, 24)
    with torch.no_grad(): torch.testing.assert_close(ours(x.clone()), ref(x.clone()))


def test_reference_parameter_counts():
    "resnet_9blocks RGB -> RGB ngf=64: 11,378,179 with InstanceNorm (CycleGAN's default, printed '11.378 M'), 11,383,427 with BatchNorm."
    assert n_params(ResnetGenerator(3, 3, 64, 9, 'instance')) == n_params(reference(3, 3, 64, 9, 'instance')) == 11_378_179
    assert n_params(ResnetGenerator(3, 3, 64, 9, 'batch')) == n_params(reference(3, 3, 64, 9, 'batch')) == 11_383_427
    assert n_params(ResnetGenerator(3, 3, 64, 6, 'batch')) == n_params(reference(3, 3, 64, 6, 'batch'))
    assert n_params(ResnetGenerator(1, 2, 64, 9)) == n_params(reference(1, 2, 64, 9, 'batch'))


def test_shapes_and_bad_inputs():
    net = ResnetGenerator(1, 2, 4, 2)
    for h, w in ((8, 8), (32, 32), (32, 48)):
        out = net(torch.randn(2, 1, h, w) * 3)
        assert out.shape == (2, 2, h, w) and out.abs().max() <= 1
    with pytest.raises(ValueError, match='multiples of 4, at least 8; got 30x32'): net(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match='at least 8; got 4x4'): net(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\).*\(1, 3, 32, 32\)'): net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='norm must be one of'): ResnetGenerator(norm='group')
    with pytest.raises(ValueError, match='n_blocks'): ResnetGenerator(n_blocks=-1)


def test_residual_block_is_identity_when_last_conv_is_zero():
    blk = ResnetBlock(4, 'none')
    nn.init.zeros_(blk.conv_block[-2].weight)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(blk(x), x)


def test_gradients_reach_every_parameter():
    for norm in NORMS:
        net = ResnetGenerator(1, 2, 4, 2, norm)
        net(torch.randn(2, 1, 16, 16)).pow(2).mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), norm


@pytest.mark.parametrize('norm', NORMS)
def test_init_weights(norm):
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(1, 2, 16, 2, norm), 'normal', 0.02)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    raw = lambda c: c.parametrizations.weight.original if hasattr(c, 'parametrizations') else c.weight
    assert all(abs(raw(c).std().item() - 0.02) < 0.01 for c in convs)
    assert all(c.bias is None or c.bias.abs().sum() == 0 for c in convs)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]   # BatchNorm scales N(1, gain), shifts 0
    assert all(abs(b.weight.mean().item() - 1) < 0.02 and b.bias.abs().sum() == 0 for b in bns)
    init_weights(net, 'xavier', gain=1.)
    for c in convs:
        w = raw(c)
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        expected = (2 / (fan_in + fan_out)) ** 0.5          # Xavier-normal: the reference's xavier_normal_
        assert abs(w.std().item() - expected) < 0.2 * expected and w.abs().max() > (6 / (fan_in + fan_out)) ** 0.5
    with pytest.raises(ValueError, match="'normal', 'xavier'"): init_weights(net, 'orthogonal')


def test_resnet_unet_random_weights():
    net = resnet_unet('resnet18', pretrained=False, size=32)
    assert net.pretrained is False and net[0][0].in_channels == 1
    out = net(torch.randn(2, 1, 32, 32) * 3)
    assert out.shape == (2, 2, 32, 32) and out.abs().max() < 1
    with pytest.raises(ValueError, match="'resnet18', 'resnet34'"): resnet_encoder('vgg16', pretrained=False)


def test_resnet_unet_falls_back_when_the_download_fails(monkeypatch):
    "No network: the weight loader is replaced by one that fails as a missing connection does."
    import torchvision.models as tvm
    calls = []
    def no_internet(self, *args, **kwargs):
        calls.append(self); raise URLError('no internet (simulated)')
    monkeypatch.setattr(tvm.WeightsEnum, 'get_state_dict', no_internet)
    with pytest.warns(UserWarning, match='randomly initialized resnet34 encoder'):
        net = resnet_unet('resnet34', pretrained=True, size=32, n_out=2)
    assert calls and net.pretrained is False
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


def test_resnet_unet_uses_loaded_weights(monkeypatch):
    "When the loader works (here it hands back a random ResNet-18's weights), they are used and the first conv sums RGB."
    import torchvision.models as tvm
    fake = tvm.resnet18(weights=None).state_dict()
    monkeypatch.setattr(tvm.WeightsEnum, 'get_state_dict', lambda self, *a, **k: fake)
    net = resnet_unet('resnet18', pretrained=True, size=32)
    assert net.pretrained is True
    torch.testing.assert_close(net[0][0].weight, fake['conv1.weight'].sum(1, keepdim=True))
    torch.testing.assert_close(net[0][4][0].conv1.weight, fake['layer1.0.conv1.weight'])
