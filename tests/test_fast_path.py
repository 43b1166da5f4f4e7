"Colorizing is light: the inference path imports no fastai (lesson 12), and `render_size` sets the short side the colours are painted at."
import json, subprocess, sys, textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from colorcourse.inference import ChromaGain, colorize, default_render_size, load_colorizer, save_checkpoint
from colorcourse.unet import UnetGenerator, period2_energy

HEAVY = ('fastai', 'pandas', 'sklearn', 'matplotlib')   # the training stack, and what it pulls in


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    "A small colorizer of the shipped kind (a U-Net with the resizing decoder, behind a chroma gain), saved with a chosen render size."
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('fast') / 'light.safetensors'
    save_checkpoint(path, ChromaGain(UnetGenerator(n_down=5, nf=4, up='resize'), 1.1), size=32, render_size=64)
    return path


def run_fresh(code: str, *args) -> str:
    "Run `code` in a new Python process (nothing imported yet) and return its stdout; fail with its stderr."
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(code), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_colorizing_imports_no_training_stack(ckpt, tmp_path):
    "Import the inference path, load a checkpoint and colorize a photo, in a fresh process: no fastai, pandas or matplotlib is loaded."
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / 'photo.png')
    out = run_fresh(f'''
        import sys, json
        from colorcourse.inference import colorize, load_colorizer
        img = colorize(sys.argv[2], load_colorizer(sys.argv[1]))
        print(json.dumps({{'size': img.size, 'heavy': sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})}}))
        ''', ckpt, tmp_path / 'photo.png')
    result = json.loads(out)
    assert result['size'] == [56, 40]
    assert result['heavy'] == [], f"colorizing imported {result['heavy'][:5]}"


def test_the_colorize_command_imports_no_training_stack(ckpt, tmp_path):
    "`colorcourse colorize` with a checkpoint, run in-process in a fresh interpreter: the photo is written, and no fastai was imported."
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(tmp_path / 'gray.jpg')
    out = run_fresh(f'''
        import sys
        from colorcourse.cli import main
        rc = main(['colorize', sys.argv[2], '-o', sys.argv[3], '--checkpoint', sys.argv[1]])
        print(rc, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})[:5])
        ''', ckpt, tmp_path / 'gray.jpg', tmp_path / 'out')
    assert out.strip().splitlines()[-1] == '0 []', out
    assert (tmp_path / 'out' / 'gray_color.jpg').is_file()


def test_render_size_sets_the_short_side_the_model_sees(ckpt):
    "The network sees the photo at `render_size` on its short side (rounded to its multiple), the checkpoint's own by default; the output keeps the photo's size."
    net = load_colorizer(ckpt)
    seen = []
    net.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 450, 3), dtype=np.uint8))
    assert default_render_size(net) == 64                      # the checkpoint's chosen render size, not its training size (32)
    for render_size, expected in ((None, (64, 96)), (32, (32, 64)), (128, (128, 192))):
        assert colorize(photo, net, render_size=render_size).size == photo.size
        assert seen.pop() == expected
    assert colorize(photo, net, size=32).size == photo.size and seen.pop() == (32, 64)   # size=: the former name
    with pytest.raises(TypeError, match='not both'): colorize(photo, net, render_size=64, size=32)
    with pytest.raises(ValueError, match='render_size must be a whole number'): colorize(photo, net, render_size=8)


def test_period2_energy_finds_stripes_and_checkerboards_only():
    "The measure is zero on flat images, small on smooth ones, and large on every pattern of period 2: checkerboard and stripes both ways."
    i, j = torch.meshgrid(torch.arange(16.), torch.arange(16.), indexing='ij')
    smooth = torch.sin(i / 10)[None, None] + torch.cos(j / 14)[None, None]   # gentle waves: little detail at period 2
    patterns = {'checkerboard': (i + j) % 2, 'vertical stripes': j % 2, 'horizontal stripes': i % 2}
    assert period2_energy(torch.full((2, 3, 16, 16), 0.7)).abs().max() == 0
    assert period2_energy(smooth).item() < 0.01
    for name, p in patterns.items(): assert period2_energy(p[None, None]).item() == pytest.approx(1 / 3), name   # one of the three details is ±1
