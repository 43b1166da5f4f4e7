"Lesson order: every module of the package imports only modules of earlier lessons, at the top or inside a function."
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'colorcourse'


def lesson_key(stem: str) -> tuple:
    "The order of a notebook: '12a_cli' -> (12, 'a'), '12_inference' -> (12, ''), so 12a comes after 12."
    m = re.match(r'(\d+)([a-z]*)_', stem)
    return (int(m.group(1)), m.group(2))


def module_lessons() -> dict:
    "Each exported module's name -> the (number, letter) of the notebook that writes it (`#| default_exp m`)."
    lessons = {}
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            for m in re.finditer(r'^#\|\s*default_exp[ \t]+([A-Za-z_][\w.]*)', ''.join(cell['source']), re.M):
                lessons[m.group(1)] = lesson_key(nb.stem)
    return lessons


def _package_modules(node) -> list:
    "The package modules one import statement names: `from .x`, `from . import x`, `from colorcourse.x`, `import colorcourse.x`."
    if isinstance(node, ast.ImportFrom):
        mod = node.module or ''
        if node.level == 1: names = [mod] if mod else [a.name for a in node.names]
        elif node.level == 0 and (mod == 'colorcourse' or mod.startswith('colorcourse.')):
            names = [mod[len('colorcourse.'):]] if mod != 'colorcourse' else [a.name for a in node.names]
        else: return []
        return [n.split('.')[0] for n in names]
    if isinstance(node, ast.Import): return [a.name.split('.')[1] for a in node.names if a.name.startswith('colorcourse.')]
    return []


def cell_imports(path: Path) -> list:
    "(notebook, module) for every package import in `path`, top level or inside functions; nbdev's `# %% ../nbs/NB.ipynb` line above says which notebook wrote it."
    text = path.read_text()
    starts = [(i + 1, m.group(1)) for i, line in enumerate(text.splitlines())
              for m in [re.match(r'# %% \.\./nbs/(\S+)\.ipynb', line)] if m]
    found = []
    for node in ast.walk(ast.parse(text)):
        for mod in _package_modules(node):
            nb = next((name for line, name in reversed(starts) if line <= node.lineno), None)
            found.append((nb, mod))
    return found


def imported_modules(path: Path) -> set:
    "The package modules `path` imports anywhere."
    return {mod for _, mod in cell_imports(path)}


def import_graph() -> dict:
    "Each package module -> the package modules it imports (only those a notebook exports; `__version__` and `_modidx` are no lesson)."
    lessons = module_lessons()
    return {p.stem: sorted(m for m in imported_modules(p) if m in lessons)
            for p in sorted(PKG.glob('*.py')) if p.stem in lessons}


def test_every_module_belongs_to_a_lesson():
    lessons = module_lessons()
    missing = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_') and p.stem not in lessons)
    assert not missing, f"modules no notebook exports: {missing}"
    assert lessons['cli'] > lessons['inference'] and lessons['core'] < lessons['lab']


def test_the_import_walk_sees_every_kind_of_import(tmp_path):
    src = tmp_path / 'm.py'
    src.write_text("from .a import x\nfrom colorcourse.b import y\nimport colorcourse.c\nfrom . import d\n"
                   "from colorcourse import e\ndef f():\n    from .g import z\n    import colorcourse.h as h\n"
                   "import os\nfrom fastai.learner import Learner\n")
    assert imported_modules(src) == set('abcdegh')
    src.write_text("# %% ../nbs/12a_cli.ipynb #1\nfrom .inference import x\n# %% ../nbs/13_speed.ipynb #2\ndef f():\n    from colorcourse.speed import y\n")
    assert cell_imports(src) == [('12a_cli', 'inference'), ('13_speed', 'speed')]


def test_no_lesson_imports_a_later_lesson():
    lessons, later = module_lessons(), []
    for p in sorted(PKG.glob('*.py')):
        if p.stem not in lessons: continue
        for nb, d in cell_imports(p):
            if d not in lessons: continue
            here = lesson_key(nb) if nb else lessons[p.stem]   # a cell is the lesson of the notebook that wrote it
            if lessons[d] > here: later.append(f"{p.name}, written by {nb}, imports {d} (from a later lesson)")
    assert not later, 'a lesson imports only earlier lessons:\n' + '\n'.join(later)


def test_no_import_cycles():
    graph, state, cycles = import_graph(), {}, []
    def visit(m, path):
        state[m] = 'open'
        for d in graph.get(m, []):
            if d == m: continue
            if state.get(d) == 'open': cycles.append(path[path.index(d):] + [d])
            elif d not in state: visit(d, path + [d])
        state[m] = 'done'
    for m in graph:
        if m not in state: visit(m, [m])
    assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)
