"Checkpoints and full-resolution colorization (colorcourse.inference): round trips for every architecture, bounded memory."
import subprocess, sys, textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from colorcourse.inference import (ARCHITECTURES, COLORIZERS, ChromaGain, arch_config, build_from_config, colorize, load_checkpoint,
                                   load_colorizer, save_checkpoint)
from colorcourse.training import simple_colorizer, ConstantColor
from colorcourse.cnn import plain_cnn, ColorCNN, ABQuantizer
from colorcourse.unet import UnetGenerator
from colorcourse.gan import DCGANDiscriminator
from colorcourse.pix2pix import PatchDiscriminator, PixelDiscriminator, pix2pix_generator, RGBColorizer
from colorcourse.resnet import ResnetGenerator, resnet_classifier, resnet_unet
from colorcourse.hints import HintColorizer   # every lesson's architectures registered, whatever ran before

# One small instance of every architecture a checkpoint can hold, with non-default arguments where it has them.
SMALL = {
    'simple_colorizer': lambda: simple_colorizer(8),
    'ConstantColor': lambda: ConstantColor((0.1, -0.2)),
    'plain_cnn': lambda: plain_cnn(8, 3),
    'ColorCNN': lambda: ColorCNN(8, n_mid=2, dropout=0.1, quantizer=ABQuantizer(grid=20)),
    'UnetGenerator': lambda: UnetGenerator(1, 2, 5, 8, norm='instance'),
    'pix2pix_generator': lambda: pix2pix_generator(32, nf=8, norm='spectral'),
    'RGBColorizer': lambda: RGBColorizer(UnetGenerator(1, 3, 5, 8)),
    'ResnetGenerator': lambda: ResnetGenerator(nf=8, n_blocks=2),
    'resnet_unet': lambda: resnet_unet('resnet18', pretrained=False, size=32),
    'resnet_classifier': lambda: resnet_classifier('resnet18', n_classes=5),   # lesson 09's pretraining: not a colorizer
    'ChromaGain': lambda: ChromaGain(pix2pix_generator(32, nf=8), 1.3),
    'DCGANDiscriminator': lambda: DCGANDiscriminator(3, 32, 8),
    'PatchDiscriminator': lambda: PatchDiscriminator(3, 8, 2, norm='spectral'),
    'PixelDiscriminator': lambda: PixelDiscriminator(3, 8),
    'HintColorizer': lambda: HintColorizer(UnetGenerator(4, 2, 5, 8)),
}


def test_every_architecture_is_covered():
    assert set(SMALL) == set(ARCHITECTURES) - {'ABQuantizer'}
    assert set(COLORIZERS) <= set(ARCHITECTURES)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = SMALL[name]().eval()
    with torch.no_grad():      # move BatchNorm statistics away from their defaults, so that buffers are checked too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d): m.running_mean.uniform_(-.5, .5); m.running_var.uniform_(.5, 2)
    path = save_checkpoint(tmp_path / f'{name}.safetensors', model, size=32)
    loaded = load_checkpoint(path)
    assert loaded.checkpoint['arch'] == name and loaded.checkpoint['size'] == 32 and not loaded.training
    x = torch.rand(2, 3 if 'Discriminator' in name else 1, 32, 32) * 2 - 1
    if name == 'resnet_unet': x = x.expand(-1, 1, -1, -1).contiguous()
    with torch.no_grad(): torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert arch_config(loaded) == arch_config(model)
    if name in COLORIZERS: assert type(load_colorizer(path)) is type(loaded)
    else:
        with pytest.raises(ValueError, match='not a colorizer'): load_colorizer(path)


def test_unknown_architecture_in_a_checkpoint():
    with pytest.raises(ValueError, match="unknown architecture 'Dalle'"): build_from_config({'arch': 'Dalle', 'args': {}})


def test_colorize_keeps_size_mode_and_lightness(tmp_path):
    from skimage import data
    from colorcourse.lab import rgb_to_lab
    photo = Image.fromarray(data.coffee())                  # 600x400
    model = pix2pix_generator(32, nf=8).eval()
    for img in (photo, photo.convert('L'), photo.convert('RGBA'), photo.convert('P'), photo.convert('CMYK'), photo.rotate(90, expand=True)):
        out = colorize(img, model, size=32)
        assert out.size == img.size and out.mode == ('RGBA' if img.mode == 'RGBA' else 'RGB')
    gray = photo.convert('L')
    out = colorize(gray, model, size=32, strip_rows=37)      # strips of an odd height must join seamlessly
    lum = lambda im: rgb_to_lab(torch.from_numpy(np.array(im.convert('RGB'))).permute(2, 0, 1).float() / 255)[0]
    assert (lum(out) - lum(gray)).abs().mean() < 1.0


def test_colorize_strips_match_one_pass():
    from skimage import data
    img = Image.fromarray(data.astronaut()).resize((300, 200))
    model = UnetGenerator(1, 2, 5, 8).eval()
    one = np.array(colorize(img, model, size=32, strip_rows=10_000)).astype(int)
    strips = np.array(colorize(img, model, size=32, strip_rows=7)).astype(int)
    assert np.abs(one - strips).max() <= 1


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    from PIL import Image
    from colorcourse.inference import colorize
    from colorcourse.pix2pix import pix2pix_generator
    torch.set_num_threads(2)
    model = pix2pix_generator(32, nf=8).eval()
    photo = Image.new('L', (6000, 4000), 128)
    colorize(photo.resize((60, 40)), model, size=32)            # warm up: imports and first-call allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    out = colorize(photo, model, size=32, strip_rows=int(sys.argv[1]))
    assert out.size == (6000, 4000)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10 - before)
""")


@pytest.mark.slow
def test_a_24_megapixel_photo_stays_within_bounded_memory():
    "Strips keep the extra peak memory of a 6000x4000 colorization far below that of the one-pass conversion."
    grow = lambda rows: float(subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, str(rows)], capture_output=True, text=True,
                                             check=True, timeout=600).stdout.split()[-1])
    strips, one_pass = grow(256), grow(4000)
    assert strips < 600, f'colorizing 6000x4000 in strips raised the peak memory by {strips:.0f} MB'
    assert one_pass > 2 * strips, (strips, one_pass)


def test_size_multiple_reads_the_halvings_of_any_unet_class():
    "A U-Net class defined elsewhere (a notebook's own copy, a user's) counts by its `n_down`, not by being the package's class."
    import torch.nn as nn
    from colorcourse.inference import size_multiple, model_input_size
    class OwnUnet(nn.Module):
        def __init__(self, n_down): super().__init__(); self.n_down = n_down
    assert size_multiple(nn.Sequential(OwnUnet(6))) == 64 and size_multiple(nn.Sequential(OwnUnet(8), OwnUnet(2))) == 256
    assert size_multiple(nn.Conv2d(1, 2, 3)) == 32
    assert model_input_size(480, 320, 64, size_multiple(OwnUnet(6))) == (128, 64)
