"""Copy stored results to the course home: lesson 11's tables (Tiny ImageNet test photos; held-out ImageNet photos) and gallery, and the shipped colorizer's model card (lesson 12).

The home page (nbs/index.ipynb, and README.md rendered from it) shows the galleries and the tables
that nbs/11_evaluation.ipynb and nbs/12_inference.ipynb produced in their stored runs, never numbers
typed by hand.

    python tools/results.py     # write nbs/images/{gallery,shipped}.jpg and print the Markdown tables for index.ipynb
"""
import base64, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVALUATION_NB = ROOT / 'nbs' / '11_evaluation.ipynb'
GALLERY = ROOT / 'nbs' / 'images' / 'gallery.jpg'
INFERENCE_NB = ROOT / 'nbs' / '12_inference.ipynb'
SHIPPED_GALLERY = ROOT / 'nbs' / 'images' / 'shipped.jpg'


def _code_cells(nb_path=EVALUATION_NB) -> list:
    return [c for c in json.loads(Path(nb_path).read_text())['cells'] if c['cell_type'] == 'code']


def _cell(nb_path, needle: str) -> dict:
    "The one code cell of `nb_path` with a line that starts with `needle`."
    cells = [c for c in _code_cells(nb_path) if any(line.startswith(needle) for line in ''.join(c['source']).splitlines())]
    if len(cells) != 1: raise ValueError(f"{len(cells)} code cells of {nb_path} have a line starting {needle!r}; expected one")
    return cells[0]


def _jpeg(cell) -> bytes:
    "The JPEG figure a cell stored."
    return base64.b64decode(next(o for o in cell['outputs'] if 'image/jpeg' in o.get('data', {}))['data']['image/jpeg'])


def stored_table(nb_path=EVALUATION_NB, needle: str = 'per_image = evaluate_images(checkpoints, test_dls') -> dict:
    "The comparison table of the course's models on Tiny ImageNet's test photos in the stored outputs: {model: {metric: value}}."
    cell = _cell(nb_path, needle)
    text = ''.join(next(o for o in cell['outputs'] if o.get('output_type') == 'execute_result')['data']['text/plain'])
    header, *rows = text.strip().splitlines()
    cols = header.split()
    table = {}
    for row in rows:
        *name, values = row.rsplit(None, len(cols))[0], row.rsplit(None, len(cols))[1:]
        table[name[0].strip()] = dict(zip(cols, map(float, values)))
    return table


def table_markdown(table: dict) -> str:
    "The table as Markdown, with the metrics rounded as the lesson shows them."
    cols = list(next(iter(table.values())))
    fmt = lambda c, v: '' if v != v else f'{v:.1f}' if c in ('colorfulness', 'delta_cf') else f'{v:.2f}' if c == 'psnr' else f'{v:.3f}'
    lines = ['| model | ' + ' | '.join(cols) + ' |', '|---|' + '---:|' * len(cols)]
    lines += [f'| {name} | ' + ' | '.join(fmt(c, row[c]) for c in cols) + ' |' for name, row in table.items()]
    return '\n'.join(lines)


def photo_table(nb_path=EVALUATION_NB) -> dict:
    "The same models and the shipped colorizer on held-out ImageNet photos at 64 px, in lesson 11's stored outputs."
    return stored_table(nb_path, 'photo_scores = evaluate_images(photo_models, photo_dls)')


def stored_gallery(nb_path=EVALUATION_NB) -> bytes:
    "The JPEG of lesson 11's grid on held-out ImageNet photos (gray | each model | truth) in the stored outputs."
    return _jpeg(_cell(nb_path, 'fig = comparison_grid(photo_models'))


SHIPPED_TEST_SETS = ('Tiny ImageNet val', 'ImageNet sample, held out')   # the model card's test sets, as its tables name them


def grouped_table(text: str, groups=SHIPPED_TEST_SETS) -> dict:
    "`{group: {row: {column: text}}}` from the plain text of a DataFrame whose rows are (group, row) pairs (pandas names a group once)."
    header, *rows = text.strip().splitlines()
    cols, table, group = re.split(r'\s{2,}', header.strip()), {}, None
    for line in rows:
        line = line.strip()
        group = next((g for g in groups if line.startswith(g)), group)
        if line.startswith(group): line = line[len(group):].strip()
        name, *values = re.split(r'\s{2,}', line)
        if len(values) != len(cols): raise ValueError(f"cannot read the row {line!r} as {len(cols)} values")
        table.setdefault(group, {})[name] = dict(zip(cols, values))
    return table


def shipped_tables(nb_path=INFERENCE_NB) -> tuple:
    "The model card's two stored tables (lesson 12): the scores on each test set, and the differences from each baseline with their intervals."
    cell = _cell(nb_path, 'def truth_colourfulness')
    texts = [''.join(o['data']['text/plain']) for o in cell['outputs'] if o.get('output_type') == 'display_data' and 'text/plain' in o.get('data', {})]
    if len(texts) != 2: raise ValueError(f"the model card's scores cell stored {len(texts)} tables; expected 2 (run lesson 12)")
    scores = {g: {name: {c: float(v) for c, v in row.items()} for name, row in rows.items()} for g, rows in grouped_table(texts[0]).items()}
    return scores, grouped_table(texts[1])


def shipped_markdown(nb_path=INFERENCE_NB) -> str:
    "The model card's tables as Markdown for the home page: the scores on each test set, then the differences."
    scores, differences = shipped_tables(nb_path)
    parts = []
    for group, table in scores.items():
        parts.append(f'*{group}*:\n\n' + table_markdown(table))
    cols = list(next(iter(next(iter(differences.values())).values())))
    lines = ['| test set | difference | ' + ' | '.join(cols) + ' |', '|---|---|' + '---|' * len(cols)]
    lines += [f'| {group} | {name} | ' + ' | '.join(row[c] for c in cols) + ' |' for group, rows in differences.items() for name, row in rows.items()]
    return '\n\n'.join(parts + ['\n'.join(lines)])


def shipped_gallery(nb_path=INFERENCE_NB) -> bytes:
    "The JPEG of the model card's gallery (gray | shipped colorizer | original) of held-out photos."
    return _jpeg(_cell(nb_path, 'def held_out_photo'))


if __name__ == '__main__':
    GALLERY.parent.mkdir(exist_ok=True)
    GALLERY.write_bytes(stored_gallery())
    SHIPPED_GALLERY.write_bytes(shipped_gallery())
    print('The shipped colorizer (nbs/images/shipped.jpg):\n' + shipped_markdown())
    print('\nLesson 11, Tiny ImageNet test photos:\n' + table_markdown(stored_table()))
    print('\nLesson 11, held-out ImageNet photos (nbs/images/gallery.jpg):\n' + table_markdown(photo_table()))
    sys.exit(0)
