"tools/t4_cost.py: each training lesson states what its full run costs on a Colab T4, and the statement follows the FLOP-counted estimate."
import importlib.util, json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('t4_cost', ROOT / 'tools' / 't4_cost.py')
t4_cost = importlib.util.module_from_spec(spec); spec.loader.exec_module(t4_cost)


@pytest.fixture(scope='module')
def costs():
    return {stem: t4_cost.lesson_cost(stem) for stem in t4_cost.RUNS}


def test_every_lesson_states_the_estimate(costs):
    problems = [d for stem, cost in costs.items() for d in t4_cost.drift(stem, cost)]
    assert not problems, '\n'.join(problems)


def test_a_drifted_statement_is_caught(costs, tmp_path, monkeypatch):
    stem, cost = '06_unet', costs['06_unet']
    nb = json.loads((t4_cost.ROOT / 'nbs' / f'{stem}.ipynb').read_text())
    wrong = {**cost, 'minutes': cost['minutes'] * 3 + 5, 'gpu_gb': cost['gpu_gb'] + 1}
    for c in nb['cells']:
        if c['cell_type'] == 'markdown': c['source'] = t4_cost.STATED.sub(t4_cost.statement(wrong), ''.join(c['source']))
    (tmp_path / f'{stem}.ipynb').write_text(json.dumps(nb))
    import lesson_configs
    monkeypatch.setattr(lesson_configs, 'NBS', tmp_path)
    problems = t4_cost.drift(stem, cost)
    assert any('minutes stated' in p for p in problems) and any('GPU memory' in p for p in problems)


def test_the_statement_reads_back():
    cost = dict(flops=2.5e15, sustained_tflops=16.25, minutes=1, gpu_gb=0.6, ram_gb=3.7)
    assert t4_cost.STATED.search(t4_cost.statement(cost)).groups() == ('1', '0.6', '3.7')
    assert t4_cost.STATED.search(t4_cost.statement({**cost, 'minutes': 1234})).groups()[0] == '1,234'


def test_the_estimate_counts_what_a_model_costs(costs):
    "More runs, bigger networks and more steps cost more: the FLOPs follow the configuration."
    unet = costs['06_unet']['models']
    assert unet['U-Net, L1']['runs'] == 2 * unet['no skips, L1']['runs']
    gan, l1 = costs['07_dcgan']['models']['U-Net + DCGAN'], costs['07_dcgan']['models']['U-Net, L1']
    assert gan['step_flops'] > 1.2 * l1['step_flops']          # the GAN step adds the discriminator's passes
    assert gan['forward_flops_per_image'] == pytest.approx(l1['forward_flops_per_image'])   # scoring runs the generator alone
    for cost in costs.values(): assert cost['minutes'] >= 1 and cost['gpu_gb'] > t4_cost.CUDA_CONTEXT_GB
