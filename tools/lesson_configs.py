"""Each lesson's run settings, read from its `course_config(full=..., smoke=...)` cell without running the notebook.

The settings are parsed with `ast` (the values are literals), so no notebook code runs and nothing is
downloaded. Used by `tools/gpu_check.py` (to train each lesson's full configuration briefly on a GPU) and
by the tests that check a full configuration fits a free Colab runtime.

    python tools/lesson_configs.py            # print every lesson's full settings as JSON
    python tools/lesson_configs.py --smoke    # the smoke settings
"""
import argparse, ast, json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'

# The image count of the folder `lesson_source(dataset)` returns, as lesson 02's table of datasets states it: `download`
# extracts every split (Tiny ImageNet's train, val and test; CIFAR-10's train and test), and colorization_dls reads them all.
DATASET_IMAGES = {'tiny-imagenet': 120_000, 'cifar10': 60_000, 'coco-sample': 22_000, 'imagenette': 13_394, 'imagenette-320': 13_394, 'imagenet-sample': 900}


def _literal_dict(node: ast.AST, where: str) -> dict:
    "The value of a `dict(k=literal, ...)` call or a `{'k': literal}` display."
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args:
        if any(k.arg is None for k in node.keywords): raise ValueError(f"{where}: `**` inside dict(...) is not a literal")
        return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    if isinstance(node, ast.Dict): return ast.literal_eval(node)
    raise ValueError(f"{where}: expected dict(...) of literals, got {ast.unparse(node)[:80]!r}")


def _config_calls(source: str):
    "Every `course_config(...)` call in a cell's source (IPython magics and shell lines blanked out)."
    lines = [l if not l.lstrip().startswith(('%', '!')) else '' for l in source.splitlines()]
    try: tree = ast.parse('\n'.join(lines))
    except SyntaxError: return []
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == 'course_config']


def _is_dict(node: ast.AST) -> bool:
    return isinstance(node, ast.Dict) or (isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict')


def notebook_configs(path) -> list:
    "Every `course_config(full=..., smoke=..., **shared)` call of a notebook, in order, each as `{'full':…, 'smoke':…, 'shared':…}` (and any other run size given as a dict)."
    path = Path(path)
    cells = json.loads(path.read_text(encoding='utf-8'))['cells']
    found = []
    for i, cell in enumerate(cells):
        if cell['cell_type'] != 'code': continue
        for call in _config_calls(''.join(cell['source'])):
            kw = {k.arg: k.value for k in call.keywords}
            if 'full' not in kw or 'smoke' not in kw: continue
            where = f"{path.name}, cell {i}"
            if None in kw: raise ValueError(f"{where}: `**` in course_config(...) cannot be read without running the notebook")
            sizes = {k: _literal_dict(v, where) for k, v in kw.items() if k in ('full', 'smoke') or _is_dict(v)}
            found.append(dict(**sizes, shared={k: ast.literal_eval(v) for k, v in kw.items() if k not in sizes}))
    return found


def notebook_config(path, index: int = 0) -> dict:
    "The `index`-th (default: the first) `course_config(...)` call of a notebook, as `notebook_configs` reads it; None if it has none."
    configs = notebook_configs(path)
    return configs[index] if index < len(configs) else None


def lesson_config(path, which: str = 'full', index: int = 0) -> dict:
    "A notebook's settings as its `index`-th `course_config` gives them in a `which` run ('full', 'smoke', or another size it names), before any overrides."
    cfg = notebook_config(path, index)
    if cfg is None: raise ValueError(f"{Path(path).name} has no course_config(full=..., smoke=...) cell" + (f" number {index + 1}" if index else ''))
    sizes = [k for k in cfg if k != 'shared']
    if which not in sizes: raise ValueError(f"which must be one of {sizes} for {Path(path).name}; got {which!r}")
    return {**cfg['shared'], **cfg[which]}


def lesson_notebooks(nbs=NBS) -> list:
    "The lesson notebooks in syllabus order: all but the home page and scratch notebooks (`_*.ipynb`)."
    return sorted(p for p in Path(nbs).glob('*.ipynb') if p.name != 'index.ipynb' and not p.name.startswith('_'))


def training_lessons(nbs=NBS, which: str = 'full') -> dict:
    "`{notebook stem: settings}` of every lesson that trains on a dataset: its config names a `dataset` and `epochs`."
    out = {}
    for p in lesson_notebooks(nbs):
        if notebook_config(p) is None: continue
        cfg = lesson_config(p, which)
        if 'dataset' in cfg and 'epochs' in cfg: out[p.stem] = cfg
    return out


def cache_bytes(size: int, n_images: int, side=None) -> int:
    "Bytes of the uint8 image cache that `colorization_dls` builds for `n_images` photos trained at `size` px (squares of `side`, default its own choice)."
    from colorcourse.data import default_cache_side
    return n_images * 3 * (side or default_cache_side(size, n_images)) ** 2


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--smoke', action='store_true', help='the smoke settings instead of the full ones')
    args = p.parse_args()
    print(json.dumps(training_lessons(which='smoke' if args.smoke else 'full'), indent=1))
