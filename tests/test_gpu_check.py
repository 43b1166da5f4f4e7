"tools/gpu_check.py: its dry run on the CPU (tiny sizes, the sample photos) writes a complete report; time budget, isolation, data folder."
import importlib.util, io, json, subprocess, sys, tarfile, time

import numpy as np
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location('gpu_check', ROOT / 'tools' / 'gpu_check.py')
gc_tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(gc_tool)

STATUSES = {'ok', 'failed', 'skipped', 'timed_out'}


@pytest.fixture(scope='module')
def report(tmp_path_factory) -> dict:
    "The dry run's report, run once as a user runs it."
    out = tmp_path_factory.mktemp('gpu_check') / 'report.json'
    r = subprocess.run([sys.executable, ROOT / 'tools' / 'gpu_check.py', '--dry-run', '--out', out], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def test_dry_run_report_has_every_part_in_order_and_none_failed(report):
    names = [p[0] for p in gc_tool.plan(dry_run=True)]
    assert list(report['parts']) == names
    assert report['dry_run'] is True and report['failed'] == [], {n: report['parts'][n].get('error') for n in report['failed']}
    for name, rec in report['parts'].items():
        assert rec['status'] in STATUSES, name
        assert ('reason' in rec) == (rec['status'] == 'skipped'), name
    skipped = {'bench_128', 'bench_256', 'cuda_tests', 'cuda_notebooks', 'bench_compile'}   # need a GPU; the bench runs once
    assert set(report['skipped']) == {n for n, r in report['parts'].items() if r['status'] == 'skipped'} == skipped


def test_environment_names_versions_and_date(report):
    env = report['environment']
    assert {'date', 'torch', 'cuda', 'fastai', 'colorcourse', 'python', 'cpus', 'cuda_available'} <= set(env)
    assert env['date'].endswith('+00:00') and env['cuda_available'] is False
    assert time.time() - time.mktime(time.strptime(env['date'][:19], '%Y-%m-%dT%H:%M:%S')) < 24 * 3600


def test_every_training_lesson_is_measured(report):
    from lesson_configs import training_lessons   # gpu_check put tools/ on the path
    lessons = training_lessons()
    assert set(gc_tool.LESSON_MODELS) == set(lessons), "LESSON_MODELS must name the models of every training lesson"
    for stem in lessons:
        rec = report['parts'][f'lesson_{stem}']
        assert rec['status'] == 'ok', rec.get('error') or rec['result'].get('failed_models')
        res = rec['result']
        assert res['run'] == 'smoke' and res['full_config'] == lessons[stem] and res['images'] > 0 and res['peak_ram_mib'] > 0
        assert list(res['models']) == list(gc_tool.LESSON_MODELS[stem])
        for name, m in res['models'].items():
            assert m['img_s'] > 0 and m['losses_finite'] and m['params_m'] > 0, (stem, name)
            assert m['peak_gpu_mib'] is None   # no GPU in a dry run


def test_amp_paths_and_precisions_train_with_finite_losses(report):
    paths = report['parts']['amp_paths']['result']['paths']
    assert set(paths) == {f'{net}, {how}' for net in ('unet', 'gan') for how in ('as built', 'to_fp16', 'to_bf16', 'fast=True')}
    for name, p in paths.items():
        assert p['status'] == 'ok' and p['losses_finite'] and len(p['losses']) == 3, name
    assert 'MixedPrecision' in paths['gan, to_fp16']['callbacks'] and 'MixedPrecision' not in paths['gan, as built']['callbacks']
    rows = report['parts']['bench_fp16_vs_bf16']['result']['rows']
    assert [r['precision'] for r in rows] == ['fp32', 'fp16', 'bf16'] and all(r['losses_finite'] and r['img_s'] > 0 for r in rows)


def test_bench_runs_through_the_cli_and_keeps_its_json(report):
    res = report['parts']['bench_64']['result']
    assert res['command'].startswith('colorcourse bench --sizes 32')
    bench = res['bench']
    assert bench['device_type'] == 'cpu' and {r['model'] for r in bench['train']} == {'pix2pix'}
    assert {'train', 'pipeline', 'lab', 'end_to_end', 'summary'} <= set(bench)


# --- the machinery, without the dry run ---

def test_time_budget_skips_what_does_not_fit_and_says_so(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(gc_tool, 'plan', lambda dry_run: [('environment', 0, 10, False), ('a', 0, 10, False), ('b', 5, 10, False),
                                                         ('gpu', 0, 10, True)])
    monkeypatch.setattr(gc_tool, 'run_part', lambda name, *a: ran.append(name) or ({'x': 1} if name != 'a' else {'failed': ['m']}))
    out = tmp_path / 'r.json'
    rep = gc_tool.check(None, True, out, budget=3)
    assert ran == ['environment', 'a'] and json.loads(out.read_text()) == json.loads(json.dumps(rep))
    assert [rep['parts'][n]['status'] for n in ('environment', 'a', 'b', 'gpu')] == ['ok', 'failed', 'skipped', 'skipped']
    assert 'time budget' in rep['parts']['b']['reason'] and 'needs a CUDA GPU' in rep['parts']['gpu']['reason']
    assert rep['failed'] == ['a'] and rep['skipped'] == ['b', 'gpu']
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['c'\]"): gc_tool.check(None, True, out, 3, parts=['c'])


def test_a_failing_part_keeps_its_traceback_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gc_tool, 'plan', lambda dry_run: [('environment', 0, 10, False), ('a', 0, 10, False), ('b', 0, 10, False)])
    def run_part(name, *a):
        if name == 'a': raise KeyError('renamed API')
        return {}
    monkeypatch.setattr(gc_tool, 'run_part', run_part)
    rep = gc_tool.check(None, True, tmp_path / 'r.json', budget=60)
    assert rep['parts']['a']['status'] == 'failed' and "KeyError: 'renamed API'" in rep['parts']['a']['error']
    assert 'raise KeyError' in rep['parts']['a']['traceback'] and rep['parts']['b']['status'] == 'ok'


def test_an_isolated_part_runs_in_a_child_and_a_hung_command_is_killed():
    rec = gc_tool.run_isolated('no_such_part', None, True, 60)
    assert rec['status'] == 'failed' and "unknown part 'no_such_part'" in rec['error'] and rec['peak_ram_mib'] > 0
    start = time.perf_counter()
    r = gc_tool.run_command([sys.executable, '-c', 'import time; time.sleep(60)'], timeout=1)
    assert r['timed_out'] and time.perf_counter() - start < 10


def test_refuses_to_overwrite_a_report_or_run_without_a_gpu(tmp_path, capsys):
    out = tmp_path / 'keep.json'; out.write_text('{"mine": 1}')
    assert gc_tool.main(['--dry-run', '--out', str(out)]) == 2
    assert out.read_text() == '{"mine": 1}' and 'pass --force' in capsys.readouterr().err
    import torch
    if not torch.cuda.is_available():
        assert gc_tool.main(['--out', str(tmp_path / 'new.json')]) == 2 and 'no CUDA GPU' in capsys.readouterr().err


def test_finds_the_tests_that_run_only_on_a_gpu():
    ids = gc_tool.cuda_test_ids()
    assert 'tests/test_gan.py::test_mixed_precision_on_a_gpu' in ids
    assert not any('cpu_only' in i or 'gpu_hint' in i for i in ids)   # the CPU fallback test is skipped *on* a GPU


def test_cuda_flag_finds_only_cuda_cells(tmp_path):
    cell = lambda s: dict(cell_type='code', source=s, metadata={}, outputs=[])
    for name, src in (('a', '#| cuda\nx = 1'), ('b', '#| cudagraphs\nx = 1'), ('c', 'x = 1  #| cuda')):
        (tmp_path / f'{name}.ipynb').write_text(json.dumps(dict(cells=[cell(src)])))
    assert [p.name for p in gc_tool.cuda_flagged_notebooks(tmp_path)] == ['a.ipynb']


def test_prepare_copies_a_seeded_subset_of_training_images_only(tmp_path):
    from PIL import Image
    shared = tmp_path / 'shared'
    (shared / 'imagenet-sample').mkdir(parents=True); (shared / 'cifar10').mkdir()
    photo = lambda: Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for i in range(5): photo().save(shared / 'imagenet-sample' / f'n{i:08d}_x.jpg')
    with tarfile.open(shared / 'cifar10' / 'cifar10-jpg.tar.gz', 'w:gz') as tar:
        for split, k in (('train', 6), ('test', 4)):
            for i in range(k):
                buf = io.BytesIO(); photo().save(buf, 'JPEG'); data = buf.getvalue()
                info = tarfile.TarInfo(f'cifar10/{split}/cat/{i:04d}.jpg'); info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    got = gc_tool.prepare(tmp_path / 'data', shared, n_imagenet=3, n_cifar=4)
    assert (got['imagenet'], got['cifar10']) == (3, 4)
    assert sorted(p.parent.name for p in (tmp_path / 'data' / 'cifar10').rglob('*.jpg')) == ['cat'] * 4
    again = gc_tool.prepare(tmp_path / 'again', shared, n_imagenet=3, n_cifar=4)
    assert sorted(p.name for p in (tmp_path / 'again').rglob('*.jpg')) == sorted(p.name for p in (tmp_path / 'data').rglob('*.jpg'))
    with pytest.raises(FileExistsError, match='not empty'): gc_tool.prepare(tmp_path / 'data', shared)
