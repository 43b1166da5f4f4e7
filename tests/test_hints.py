"User-guided colorization (lesson 12b): the hint simulation's statistics, the shipped hint model, the editor's logic, and `colorize --hints`."
import io, json, math, subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from colorcourse.cli import main
from colorcourse.data import sample_images
from colorcourse.lab import rgb_to_lab
from colorcourse.hints import (PATCH_SIZES, HintColorizer, HintEditor, SimulatedHints, color_ab, colorize_hints, hint_count, hint_maps,
                               hint_model, hint_model_path, hint_points, load_hint_model, paint_hints, parse_color, simulate_hints)
from colorcourse.training import save_checkpoint
from colorcourse.unet import UnetGenerator

SPOT = dict(x=150, y=200)          # the coffee photo's wooden table, L = 60: a colour shows there at any hue
RED, BLUE = '#d02020', '#2040d0'


def lab_at(img: Image.Image, x: int, y: int) -> tuple:
    "(L, a, b) of one pixel of an RGB image."
    return tuple(rgb_to_lab(torch.from_numpy(np.array(img.convert('RGB'))).permute(2, 0, 1)[None].float() / 255)[0, :, y, x].tolist())


def hue_chroma(a: float, b: float) -> tuple:
    "The hue angle (degrees) and chroma of an ab pair in Lab units."
    return math.degrees(math.atan2(b, a)), math.hypot(a, b)


def turned(img: Image.Image, plain: Image.Image, color: str, x: int, y: int) -> bool:
    "Whether pixel (x, y) of `img` took the hue of `color` (within 15 degrees), with chroma 25 above `plain`'s and at least 40."
    want, _ = hue_chroma(*(color_ab(parse_color(color)) * 110).tolist())
    (hue, chroma), (_, before) = hue_chroma(*lab_at(img, x, y)[1:]), hue_chroma(*lab_at(plain, x, y)[1:])
    return abs((hue - want + 180) % 360 - 180) < 15 and chroma > max(40, before + 25)


@pytest.fixture(scope='module')
def coffee(tmp_path_factory):
    path = tmp_path_factory.mktemp('photos') / 'coffee.png'
    sample_images()[2].save(path)   # 600x400, never seen by the hint model (it trained on Tiny ImageNet)
    return path


# --- the hint simulation (Zhang et al. 2017) ---

def test_hint_counts_are_geometric_with_no_hints_one_time_in_eight():
    rng = np.random.default_rng(1)
    counts = np.array([hint_count(rng) for _ in range(40_000)])
    assert abs(counts.mean() - 7) < 0.15 and abs((counts == 0).mean() - 1 / 8) < 0.006
    assert abs((counts == 1).mean() - 7 / 64) < 0.006                     # P(1) = (1 - p) p
    assert np.mean([hint_count(rng, p=1 / 2) for _ in range(20_000)]) == pytest.approx(1, abs=0.05)


def test_patch_sides_are_uniform_from_1_to_9_and_centred():
    rng = np.random.default_rng(2)
    pts = hint_points(64, 64, 30_000, rng)
    sides = np.array([s for _, _, s in pts])
    assert set(sides.tolist()) == set(PATCH_SIZES) == set(range(1, 10))
    assert np.allclose(np.bincount(sides)[1:] / len(sides), 1 / 9, atol=0.01)
    rows = np.array([r + s / 2 for r, _, s in pts])
    assert abs(rows.mean() - 32) < 0.5 and 12 < rows.std() < 17           # a Gaussian of std ~ a quarter of the side, clipped
    assert all(0 <= r <= 64 - s and 0 <= c <= 64 - s for r, c, s in pts)


def test_a_patch_gets_its_mean_colour_and_the_mask_marks_it():
    ab = torch.rand(2, 16, 16) * 2 - 1
    hint, mask = paint_hints(ab, [(2, 3, 4), (10, 10, 1)])
    assert torch.allclose(hint[:, 2:6, 3:7], ab[:, 2:6, 3:7].mean((1, 2), keepdim=True).expand(2, 4, 4))
    assert torch.equal(hint[:, 10, 10], ab[:, 10, 10])
    assert mask.sum() == 17 and hint[:, mask[0] == 0].abs().sum() == 0


def test_simulated_batches_have_the_drawn_number_of_hints():
    rng = np.random.default_rng(3)
    ab = torch.rand(64, 2, 32, 32) * 2 - 1
    hint_ab, mask = simulate_hints(ab, rng, n=1, sizes=(3,))
    assert hint_ab.shape == (64, 2, 32, 32) and mask.shape == (64, 1, 32, 32)
    assert (mask.sum((1, 2, 3)) == 9).all()                               # one 3x3 patch each
    _, mask = simulate_hints(ab, np.random.default_rng(4))
    assert 0 < (mask.sum((1, 2, 3)) == 0).sum() < 24                      # some photos, not most, get no hints


def test_the_callback_gives_the_model_l_hints_and_mask():
    class FakeLearn: training, xb, yb = True, (torch.zeros(4, 1, 16, 16),), (torch.rand(4, 2, 16, 16),)
    cb = SimulatedHints(seed=0)
    cb.learn = FakeLearn()
    cb.before_fit(); cb.before_validate(); cb.before_batch()
    L, hint_ab, mask = cb.learn.xb
    assert L.shape == (4, 1, 16, 16) and hint_ab.shape == (4, 2, 16, 16) and mask.shape == (4, 1, 16, 16)
    FakeLearn.xb, FakeLearn.training = (L,), False
    cb.before_validate(); cb.before_batch(); first = cb.learn.xb[2].clone()
    cb.learn.xb = (L,); cb.before_validate(); cb.before_batch()
    assert torch.equal(first, cb.learn.xb[2])                             # validation hints repeat at every validation


# --- user hints: from points in a photo to the model's grid ---

def test_hints_land_on_the_model_grid_where_they_were_given():
    hint_ab, mask = hint_maps([(599, 399, (200, 30, 30))], (600, 400), (96, 64), patch=1)
    assert mask[0, 0].nonzero().tolist() == [[63, 95]] and hint_ab[0, 0, 63, 95] > 0.4
    _, mask = hint_maps([(300, 200, (0, 0, 0))], (600, 400), (96, 64), patch=3)
    assert mask[0, 0].nonzero().tolist() == [[r, c] for r in (31, 32, 33) for c in (47, 48, 49)]


# --- the shipped hint model ---

def test_the_shipped_hint_model_is_small_and_a_hint_colorizer():
    assert hint_model_path().is_file() and hint_model_path().stat().st_size < 10 * 2**20
    model = hint_model()
    assert isinstance(model, HintColorizer) and model.checkpoint['size'] == 64


def test_a_red_hint_turns_its_spot_red_and_a_blue_one_blue(coffee):
    plain = colorize_hints(coffee, [])
    red = colorize_hints(coffee, [dict(SPOT, color=RED)])
    blue = colorize_hints(coffee, [dict(SPOT, color=BLUE)])
    assert red.size == blue.size == plain.size == (600, 400)
    L0, L1, L2 = (lab_at(img, **SPOT)[0] for img in (plain, red, blue))
    assert abs(L1 - L0) < 2 and abs(L2 - L0) < 2                          # the photo's own lightness stays
    assert turned(red, plain, RED, **SPOT) and turned(blue, plain, BLUE, **SPOT)
    assert not turned(blue, plain, RED, **SPOT) and not turned(red, plain, BLUE, **SPOT)
    far = dict(x=560, y=30)                                               # a corner far from the hint barely changes
    assert max(abs(u - v) for u, v in zip(lab_at(blue, **far), lab_at(plain, **far))) < 5


def test_colorize_hints_refuses_a_model_without_hint_channels(coffee, tmp_path):
    with pytest.raises(ValueError, match='takes no hints'): colorize_hints(coffee, [], UnetGenerator(1, 2, 5, 4), size=32)
    auto = save_checkpoint(tmp_path / 'auto.safetensors', UnetGenerator(1, 2, 5, 4), size=32)
    with pytest.raises(ValueError, match='not a hint model'): load_hint_model(auto)


def test_the_editor_adds_undoes_and_recolorizes(coffee):
    ed = HintEditor(coffee, side=96)                                      # 96x64: hints in the preview's pixels
    plain = ed.result
    ed.add(24, 32, BLUE)
    assert ed.hints == [dict(x=24, y=32, color=BLUE)] and turned(ed.result, plain, BLUE, 24, 32)
    with pytest.raises(ValueError, match='outside the photo'): ed.add(96, 0, RED)
    with pytest.raises(ValueError, match='is not a colour'): ed.add(1, 1, 'blue')
    assert len(ed.hints) == 1                                             # a bad hint changes nothing
    ed.undo()
    assert ed.hints == [] and np.array_equal(np.array(ed.result), np.array(plain))
    ui = ed.widget()
    (x, y), (color, add, undo, clear) = ui.children[1].children, ui.children[2].children
    x.value, y.value, color.value = 5, 6, RED
    add.click(); add.click()
    assert ed.hints == [dict(x=5, y=6, color=RED)] * 2 and '2 hint(s)' in ui.children[3].value
    clear.click()
    assert ed.hints == [] and Image.open(io.BytesIO(ui.children[0].value)).size == (2 * 96 + 8, 64)


# --- `colorcourse colorize --hints` ---

def test_cli_colorize_with_hints_end_to_end(console_script, coffee, tmp_path):
    hints = tmp_path / 'hints.json'
    hints.write_text(json.dumps([dict(SPOT, color=RED), {'x': 450, 'y': 100, 'color': BLUE}]))
    r = subprocess.run([str(console_script), 'colorize', str(coffee), '-o', str(tmp_path / 'out'), '--hints', str(hints)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'with 2 hint(s)' in r.stdout and 'shipped hint model' in r.stdout
    out, plain = Image.open(tmp_path / 'out' / 'coffee_color.png'), colorize_hints(coffee, [])
    assert out.size == (600, 400)
    assert turned(out, plain, RED, **SPOT) and turned(out, plain, BLUE, 450, 100)


BAD_FILES = {
    'not JSON': ('[{"x": 1, "y": 2, "color": "#ff0000"', 'is not valid JSON'),
    'not a list': ('{"x": 1, "y": 2, "color": "#ff0000"}', 'expected a JSON list'),
    'outside the photo': ('[{"x": 600, "y": 10, "color": "#ff0000"}]', 'hint 1 at x=600, y=10 lies outside the photo, which is 600x400 pixels'),
    'negative point': ('[{"x": 3, "y": 4, "color": "#ff0000"}, {"x": 3, "y": -1, "color": "#ff0000"}]', 'hint 2 at x=3, y=-1 lies outside'),
    'bad colour': ('[{"x": 1, "y": 2, "color": "red"}]', 'hint 1: "red" is not a colour'),
    'short colour': ('[{"x": 1, "y": 2, "color": "#ff00"}]', 'is not a colour'),
    'wrong keys': ('[{"col": 1, "row": 2, "color": "#ff0000"}]', 'exactly the keys x, y and color; got the keys col, color, row'),
    'fractional point': ('[{"x": 1.5, "y": 2, "color": "#ff0000"}]', 'x must be a whole number of pixels; got 1.5'),
    'not text': (b'\xff\xfe\x00\x01', 'is not a text file'),
}


@pytest.mark.parametrize('case', list(BAD_FILES))
def test_a_bad_hints_file_is_one_clear_line_with_exit_2(case, coffee, tmp_path, capsys):
    content, message = BAD_FILES[case]
    hints = tmp_path / 'hints.json'
    hints.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = main(['colorize', str(coffee), '-o', str(tmp_path / 'out'), '--hints', str(hints)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith('colorcourse colorize: error: ') and err.count('\n') == 1 and 'Traceback' not in err
    assert not (tmp_path / 'out').exists()                                # nothing written, no empty folder left


def test_hints_need_one_photo_and_a_hint_model(coffee, tmp_path, capsys):
    hints = tmp_path / 'hints.json'
    hints.write_text('[]')
    Image.new('RGB', (8, 8)).save(coffee.with_name('other.png'))
    assert main(['colorize', str(coffee.parent), '-o', str(tmp_path / 'o'), '--hints', str(hints)]) == 2
    assert 'colorize one photo with it; got 2' in capsys.readouterr().err
    assert main(['colorize', str(coffee), '-o', str(tmp_path / 'o'), '--hints', str(hints), '--gain', '1.2']) == 2
    assert '--gain does not apply with --hints' in capsys.readouterr().err
    auto = save_checkpoint(tmp_path / 'auto.safetensors', UnetGenerator(1, 2, 5, 4), size=32)
    assert main(['colorize', str(coffee), '-o', str(tmp_path / 'o'), '--hints', str(hints), '--checkpoint', str(auto)]) == 2
    assert 'not a hint model' in capsys.readouterr().err
    assert main(['colorize', str(coffee), '-o', str(tmp_path / 'o'), '--hints', str(tmp_path / 'missing.json')]) == 2
    assert 'no such hints file' in capsys.readouterr().err


def test_colorize_without_hints_is_lesson_12as_command(coffee, tmp_path, capsys):
    with pytest.raises(SystemExit): main(['colorize', '--help'])
    assert '--hints FILE' in capsys.readouterr().out
    assert main(['colorize', str(coffee), '-o', str(tmp_path / 'o')]) == 0
    assert 'the shipped colorizer' in capsys.readouterr().out
