"The installed `colorcourse` command, run as a user runs it."
import re, subprocess

import colorcourse


def run(exe, *args):
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_version(console_script):
    r = run(console_script, '--version')
    assert r.returncode == 0 and r.stdout.strip() == f'colorcourse {colorcourse.__version__}'


def test_help_lists_the_subcommands(console_script):
    r = run(console_script, '--help')
    assert r.returncode == 0 and 'usage: colorcourse' in r.stdout and 'info' in r.stdout


def test_no_command_prints_help(console_script):
    r = run(console_script)
    assert r.returncode == 0 and 'usage: colorcourse' in r.stdout


def test_info_names_the_device_and_the_shipped_colorizer(console_script):
    r = run(console_script, 'info')
    assert r.returncode == 0, r.stderr
    assert f'colorcourse {colorcourse.__version__}' in r.stdout
    assert re.search(r'^device: (cpu: \d+ threads|cuda: .+|mps: .+)$', r.stdout, re.M), r.stdout
    assert re.search(r'^shipped colorizer: chroma gain [\d.]+, render size \d+, trained \d{4}-\d\d-\d\d ', r.stdout, re.M), r.stdout


def test_unknown_command_is_one_clear_error(console_script):
    r = run(console_script, 'paint')
    assert r.returncode == 2 and "invalid choice: 'paint'" in r.stderr and 'Traceback' not in r.stderr


# --- colorize, train and demo: what a user types, and every mistake a user makes -------------------------------------

import pytest
from PIL import Image


def one_line_error(r, *fragments):
    "A user's mistake: exit code 2, one line on stderr naming the problem, no traceback."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    for f in fragments: assert f in lines[0], (f, lines[0])


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    "Two photos, a colorizer checkpoint and a discriminator checkpoint (untrained, small)."
    from skimage import data
    from colorcourse.inference import save_checkpoint
    from colorcourse.pix2pix import pix2pix_generator, PatchDiscriminator
    root = tmp_path_factory.mktemp('cli')
    photos = root / 'photos'; photos.mkdir()
    Image.fromarray(data.coffee()).save(photos / 'coffee.jpg')
    Image.fromarray(data.astronaut()).convert('L').resize((300, 200)).save(photos / 'astronaut.png')
    save_checkpoint(root / 'g.safetensors', pix2pix_generator(32, nf=8), size=32)
    save_checkpoint(root / 'd.safetensors', PatchDiscriminator(3, 8), size=32)
    return root


def test_colorize_writes_each_photo_at_its_size(console_script, workspace, tmp_path):
    r = run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'out', '--checkpoint', workspace / 'g.safetensors')
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / 'out' / 'coffee_color.jpg').size == (600, 400)
    assert Image.open(tmp_path / 'out' / 'astronaut_color.png').size == (300, 200)


def test_colorize_never_overwrites_without_force(console_script, workspace, tmp_path):
    out = tmp_path / 'out'; out.mkdir()
    (out / 'coffee_color.jpg').write_bytes(b'my precious file')
    args = ('colorize', workspace / 'photos' / 'coffee.jpg', '-o', out, '--checkpoint', workspace / 'g.safetensors')
    one_line_error(run(console_script, *args), 'exist already', '--force'[2:])
    assert (out / 'coffee_color.jpg').read_bytes() == b'my precious file'
    assert run(console_script, *args, '--force').returncode == 0
    assert Image.open(out / 'coffee_color.jpg').size == (600, 400)


def test_colorize_never_overwrites_an_input(console_script, workspace):
    before = (workspace / 'photos' / 'coffee.jpg').read_bytes()
    r = run(console_script, 'colorize', workspace / 'photos' / 'coffee.jpg', '-o', workspace / 'photos', '--suffix', '',
            '--checkpoint', workspace / 'g.safetensors', '--force')
    one_line_error(r, 'would overwrite an input')
    assert (workspace / 'photos' / 'coffee.jpg').read_bytes() == before


def test_colorize_missing_input(console_script, workspace, tmp_path):
    one_line_error(run(console_script, 'colorize', tmp_path / 'nope.jpg', '-o', tmp_path / 'out',
                       '--checkpoint', workspace / 'g.safetensors'), 'no such file or folder', 'nope.jpg')
    assert not (tmp_path / 'out').exists()


def test_colorize_folder_without_images(console_script, workspace, tmp_path):
    (tmp_path / 'docs').mkdir(); (tmp_path / 'docs' / 'notes.txt').write_text('no photos here')
    one_line_error(run(console_script, 'colorize', tmp_path / 'docs', '-o', tmp_path / 'out',
                       '--checkpoint', workspace / 'g.safetensors'), 'no images in the folder')


def test_colorize_corrupt_image(console_script, workspace, tmp_path):
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0' + b'garbage' * 10)
    one_line_error(run(console_script, 'colorize', tmp_path / 'broken.jpg', '-o', tmp_path / 'out',
                       '--checkpoint', workspace / 'g.safetensors'), 'cannot read image', 'broken.jpg')
    assert not list((tmp_path / 'out').glob('*'))


def test_colorize_unwritable_output_folder(console_script, workspace, tmp_path):
    (tmp_path / 'a_file').write_text('not a folder')     # even root cannot create a folder inside a file
    one_line_error(run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'a_file' / 'out',
                       '--checkpoint', workspace / 'g.safetensors'), 'cannot write to the folder')


def test_colorize_with_a_discriminator_checkpoint(console_script, workspace, tmp_path):
    one_line_error(run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'out',
                       '--checkpoint', workspace / 'd.safetensors'), 'PatchDiscriminator', 'not a colorizer')
    assert not (tmp_path / 'out').exists()


def test_colorize_with_a_missing_or_foreign_checkpoint(console_script, workspace, tmp_path):
    one_line_error(run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'out',
                       '--checkpoint', tmp_path / 'none.safetensors'), 'no checkpoint file')
    (tmp_path / 'photo.safetensors').write_bytes((workspace / 'photos' / 'coffee.jpg').read_bytes())
    one_line_error(run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'out',
                       '--checkpoint', tmp_path / 'photo.safetensors'), 'not a readable safetensors checkpoint')


def test_train_saves_a_checkpoint_that_colorizes(console_script, workspace, tmp_path):
    ckpt = tmp_path / 'unet.safetensors'
    r = run(console_script, 'train', '--model', 'unet', '--data', 'sample', '--size', '32', '--epochs', '1',
            '--epoch-len', '16', '--bs', '8', '--nf', '8', '--out', ckpt)
    assert r.returncode == 0, r.stderr
    assert '\ngray ' in r.stdout and 'mean colour' in r.stdout and ckpt.exists()
    from colorcourse.inference import load_colorizer
    assert load_colorizer(ckpt).checkpoint['size'] == 32
    r = run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'out', '--checkpoint', ckpt)
    assert r.returncode == 0, r.stderr


def test_train_refuses_an_existing_output_before_training(console_script, tmp_path):
    (tmp_path / 'model.safetensors').write_bytes(b'an earlier model')
    one_line_error(run(console_script, 'train', '--out', tmp_path / 'model.safetensors'), 'exists', '--force')
    assert (tmp_path / 'model.safetensors').read_bytes() == b'an earlier model'


def test_train_missing_data_folder(console_script, tmp_path):
    one_line_error(run(console_script, 'train', '--data', tmp_path / 'no_photos', '--out', tmp_path / 'm.safetensors'),
                   'no such folder')


@pytest.mark.slow
def test_demo_scores_models_only_on_photos_they_did_not_train_on(console_script, tmp_path):
    "The README's first command: the shipped colorizer beats gray on photos it never saw; the small model it trains is scored on held-out photos."
    r = subprocess.run([str(console_script), 'demo'], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    part1, part2 = r.stdout.split('\n2. ')
    assert 'none of which it trained on' in part1 and 'scored on the 2 photos it did not train on' in part2, r.stdout
    assert 'training photos (' not in r.stdout and 'scores on the 7 training photos' not in r.stdout
    first_ab_l1 = lambda text, row: float(next(l for l in text.splitlines() if l.startswith(row))[len(row):].split()[0])
    assert first_ab_l1(part1, 'shipped colorizer') < first_ab_l1(part1, 'gray'), part1
    for row in ('gray', 'mean colour', 'shipped colorizer', 'small pix2pix'): first_ab_l1(part2, row)   # every row is there
    assert (tmp_path / 'colorcourse-demo' / 'demo.safetensors').exists()
    assert Image.open(tmp_path / 'colorcourse-demo' / 'demo_grid.png').size[0] > 200
    again = subprocess.run([str(console_script), 'demo'], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    one_line_error(again, 'exists', '--force')


def test_colorize_without_a_checkpoint_uses_the_shipped_colorizer(console_script, workspace, tmp_path):
    r = run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'out')
    assert r.returncode == 0 and 'colorized 2 photo(s)' in r.stdout and 'with the shipped colorizer' in r.stdout, (r.stdout, r.stderr)
    for src in (workspace / 'photos').iterdir():
        out = tmp_path / 'out' / f"{src.stem}_color{'.jpg' if src.suffix == '.jpg' else '.png'}"
        assert Image.open(out).size == Image.open(src).size


def test_train_runs_the_lessons_recipe_objects(tmp_path, monkeypatch):
    "`colorcourse train --model dcgan` trains lesson 07's recipe (a plain U-Net against a DCGAN discriminator, constant rate), from RECIPES."
    from colorcourse import cli
    from colorcourse.core import _import_lessons
    _import_lessons()   # every lesson registers its recipes
    from colorcourse.data import colorization_dls
    from colorcourse.training import RECIPES, constant_rate
    recipe = RECIPES['dcgan']
    assert (recipe.lesson, recipe.fit_schedule, recipe.lr) == ('07_dcgan', constant_rate, 2e-4)
    assert set(cli.MODELS) <= set(RECIPES)
    seen = []
    monkeypatch.setattr(recipe, 'fit_schedule', lambda learn, epochs, lr: seen.append(
        (learn.model.generator.arch_name, learn.model.discriminator.arch_name, epochs, lr)))
    dls = colorization_dls('sample', size=32, bs=4, epoch_len=8, valid_pct=0.3, progress=False)
    cli.train_and_save('dcgan', dls, 2, tmp_path / 'd.safetensors', nf=4, quiet=True)
    assert seen == [('UnetGenerator', 'DCGANDiscriminator', 2, 2e-4)]


def test_colorize_gain_sets_how_much_colour_the_shipped_colorizer_paints(console_script, workspace, tmp_path):
    "--gain 0 gives the gray photo back, and a larger gain (2) paints more colour than the shipped colorizer's own."
    import numpy as np, torch
    from colorcourse.lab import rgb_to_lab
    chroma = lambda p: rgb_to_lab(torch.from_numpy(np.array(Image.open(p).convert('RGB'))).permute(2, 0, 1).float() / 255)[1:].abs().mean().item()
    outs = {}
    for gain in (None, '0', '2'):
        out = tmp_path / f'gain{gain}'
        r = run(console_script, 'colorize', workspace / 'photos' / 'astronaut.png', '-o', out, *(['--gain', gain] if gain else []))
        assert r.returncode == 0, r.stderr
        outs[gain] = chroma(out / 'astronaut_color.png')
    assert outs['0'] < 1.0 < outs[None] < outs['2'], outs   # ab in Lab units: gray (up to 8-bit rounding), shipped, bolder


@pytest.mark.parametrize('gain', ['-0.5', '4.5', 'nan'])
def test_colorize_gain_out_of_range(console_script, workspace, tmp_path, gain):
    r = run(console_script, 'colorize', workspace / 'photos', '-o', tmp_path / 'out', f'--gain={gain}')
    one_line_error(r, '--gain must be at least 0 and at most 4')
    assert not (tmp_path / 'out').exists()
