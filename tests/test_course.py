"The course's conventions: every notebook's first cell, titles, Colab metadata, sizes, the sidebar, the home page and README.md."
import importlib.util, json, re, tomllib

import pytest
import yaml

from conftest import NBS, ROOT, read_json

def _tool(name: str):
    "A script of tools/ as a module."
    spec = importlib.util.spec_from_file_location(f'{name}_tool', ROOT / 'tools' / f'{name}.py')
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    return tool


LESSONS_TOOL = _tool('lessons')
# The first cell of every notebook (kept in tools/lessons.py): hidden in the docs, installs colorcourse only in Colab (never torch), says whether a GPU is present.
SETUP_CELL = LESSONS_TOOL.SETUP_CELL

ALL_NBS = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))


def source(cell) -> str: return ''.join(cell['source'])


@pytest.mark.parametrize('nb_path', ALL_NBS, ids=lambda p: p.name)
def test_first_cell_is_the_setup_cell(nb_path):
    first = read_json(nb_path)['cells'][0]
    assert first['cell_type'] == 'code' and source(first) == SETUP_CELL, \
        f"{nb_path.name}: the first cell must be the course's setup cell (SETUP_CELL in tools/lessons.py)"


@pytest.mark.parametrize('nb_path', ALL_NBS, ids=lambda p: p.name)
def test_title_subtitle_and_gpu_hint(nb_path):
    nb = read_json(nb_path)
    md = next(source(c) for c in nb['cells'] if c['cell_type'] == 'markdown')
    lines = [l for l in md.splitlines() if l.strip()]
    assert lines[0].startswith('# ') and len(lines[0]) > 3, f"{nb_path.name}: first markdown cell must start with '# Title'"
    assert len(lines) > 1 and lines[1].startswith('> '), f"{nb_path.name}: the title must be followed by a '> subtitle' line"
    trains = LESSONS_TOOL.wants_gpu(nb_path.name)
    assert (nb['metadata'].get('accelerator') == 'GPU') == trains, \
        f"{nb_path.name}: only a lesson that trains asks Colab for a GPU runtime (TRAINING_LESSONS in tools/lessons.py)"


@pytest.mark.parametrize('nb_path', ALL_NBS, ids=lambda p: p.name)
def test_notebook_under_2MB(nb_path):
    assert nb_path.stat().st_size < 2 * 2**20, f"{nb_path.name} is over 2 MB: store fewer, smaller, JPEG figures"


def test_lessons_teach_with_summary_and_exercises(lessons):
    for nb_path in lessons:
        text = '\n'.join(source(c) for c in read_json(nb_path)['cells'] if c['cell_type'] == 'markdown')
        for heading in ('What you will learn', '## Summary', '## Exercises', '## References'):
            assert heading in text, f"{nb_path.name} lacks '{heading}'"
        assert text.index('## Exercises') < text.index('## References'), f"{nb_path.name}: References go after the Exercises"


def sidebar_notebooks(node) -> list:
    "Every notebook named in a sidebar structure, in order."
    if isinstance(node, str): return [node] if node.endswith('.ipynb') else []
    if isinstance(node, list): return [n for item in node for n in sidebar_notebooks(item)]
    if isinstance(node, dict): return [n for v in node.values() for n in sidebar_notebooks(v)]
    return []


def test_sidebar_lists_every_lesson_in_order(lessons):
    sidebar = yaml.safe_load((NBS / 'sidebar.yml').read_text())
    assert sidebar_notebooks(sidebar) == ['index.ipynb'] + [p.name for p in lessons]


def colab_url(pyproject, nb_name) -> str:
    repo = pyproject['project']['urls']['Repository'].removeprefix('https://github.com/')
    return f"https://colab.research.google.com/github/{repo}/blob/main/nbs/{nb_name}"


def index_markdown() -> str:
    return '\n'.join(source(c) for c in read_json(NBS / 'index.ipynb')['cells'] if c['cell_type'] == 'markdown')


def test_home_page_links_each_lesson_with_a_colab_badge(lessons, pyproject):
    rows = {m.group(1): m.group(0) for m in re.finditer(r'^\|[^\n]*\]\(((?:\d+\w*)_\w+\.ipynb)\)[^\n]*$', index_markdown(), re.M)}
    for nb_path in lessons:
        assert nb_path.name in rows, f"the syllabus table in index.ipynb has no link to {nb_path.name}"
        assert f"({colab_url(pyproject, nb_path.name)})" in rows[nb_path.name], f"{nb_path.name}'s row lacks its Colab badge"


def test_home_page_links_resolve():
    for target in re.findall(r'\]\(([^)#\s]+\.ipynb)\)', index_markdown()):
        if not target.startswith('http'): assert (NBS / target).exists(), f"index.ipynb links to missing {target}"


def test_sidebar_syllabus_and_readme_are_generated_from_the_lessons():
    "nbs/sidebar.yml, the syllabus of nbs/index.ipynb and README.md are what tools/lessons.py makes of the lessons' title cells."
    stale = [p.relative_to(ROOT).as_posix() for p in LESSONS_TOOL.stale(ROOT)]
    assert not stale, f"{stale} out of date with the lessons' front matter: run `python tools/lessons.py` and commit"


def test_a_new_notebook_is_a_new_lesson(tmp_path):
    "One notebook is all a lesson needs: tools/lessons.py's `new` writes it, and the sidebar and syllabus generated then list it, in order, with its badge."
    tool = LESSONS_TOOL
    (tmp_path / 'nbs').mkdir()
    for f in ('pyproject.toml', 'nbs/index.ipynb'): (tmp_path / f).write_bytes((ROOT / f).read_bytes())
    for name in ('03_three', '10_ten'): tool.new_lesson(name, f'Lesson {name}', 'What it is.', 'things: a, b', root=tmp_path)
    path = tool.new_lesson('06a_extra', 'An inserted lesson', 'Between 06 and 07.', '`code`, then prose #1', root=tmp_path)
    with pytest.raises(FileExistsError): tool.new_lesson('06a_extra', 'Again', 'x', 'y', root=tmp_path)
    assert tool.setup_cell_problems(tmp_path) == []
    nb = read_json(path)   # the scaffold already follows the course's conventions checked above
    mds = [source(c) for c in nb['cells'] if c['cell_type'] == 'markdown']
    assert mds[0].startswith('# An inserted lesson\n\n> Between 06 and 07.')
    assert 'accelerator' not in nb['metadata']   # asks for a GPU once it trains (TRAINING_LESSONS)
    assert read_json(tmp_path / 'nbs' / '10_ten.ipynb')['metadata']['accelerator'] == 'GPU'
    assert f"(https://colab.research.google.com/assets/colab-badge.svg)]({tool.colab_url(path.name, tmp_path)})" in mds[1]
    assert sidebar_notebooks(yaml.safe_load(tool.sidebar_yaml(tmp_path))) == ['index.ipynb', '03_three.ipynb', '06a_extra.ipynb', '10_ten.ipynb']
    table = tool.syllabus_table(tmp_path)
    assert [r.split(' | ')[0] for r in table.splitlines()[2:]] == ['| 03', '| 06a', '| 10']
    assert '| 06a | [An inserted lesson](06a_extra.ipynb) | `code`, then prose #1 | [![Open In Colab]' in table
    assert f"({tool.colab_url('06a_extra.ipynb', tmp_path)})" in table and tool.colab_url('x.ipynb') == colab_url(
        tomllib.loads((ROOT / 'pyproject.toml').read_text()), 'x.ipynb')
    index = json.loads(tool.index_json(tmp_path))
    assert table in '\n'.join(''.join(c['source']) for c in index['cells'])
    # a lesson without its syllabus line is named, not left out of the table
    nb = read_json(path); nb['cells'][1]['source'] = ['# An inserted lesson\n', '\n', '> Between 06 and 07.']
    path.write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="06a_extra.ipynb: its title cell has no 'syllabus'"): tool.syllabus_table(tmp_path)


def test_readme_is_rendered_from_the_home_page():
    spec = importlib.util.spec_from_file_location('readme_tool', ROOT / 'tools' / 'readme.py')
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    assert (ROOT / 'README.md').read_text() == tool.render_readme(ROOT), \
        "README.md has drifted from nbs/index.ipynb: run `python tools/readme.py` and commit"


def test_home_page_results_are_lesson_11s_stored_results():
    "The gallery and the table on the home page are those of 11_evaluation's stored run (tools/results.py copies them)."
    spec = importlib.util.spec_from_file_location('results_tool', ROOT / 'tools' / 'results.py')
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    assert tool.table_markdown(tool.stored_table()) in index_markdown(), \
        "the results table in index.ipynb differs from 11_evaluation's stored output: run `python tools/results.py` and paste its table"
    assert tool.table_markdown(tool.photo_table()) in index_markdown(), \
        "the held-out ImageNet table in index.ipynb differs from 11_evaluation's stored output: run `python tools/results.py` and paste it"
    assert (NBS / 'images' / 'gallery.jpg').read_bytes() == tool.stored_gallery(), "run `python tools/results.py`"
    assert '](images/gallery.jpg)' in index_markdown()


def test_home_page_shows_the_shipped_colorizers_model_card_results():
    "The home page's table and gallery of the shipped colorizer are those of lesson 12's model card (tools/results.py copies them)."
    spec = importlib.util.spec_from_file_location('results_tool', ROOT / 'tools' / 'results.py')
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    scores, differences = tool.shipped_tables()
    assert set(scores) == set(differences) == set(tool.SHIPPED_TEST_SETS)
    assert all({'gray', 'mean colour', 'shipped colorizer', 'truth'} <= set(table) for table in scores.values())
    assert tool.shipped_markdown() in index_markdown(), "run `python tools/results.py` and paste the shipped colorizer's tables"
    assert (NBS / 'images' / 'shipped.jpg').read_bytes() == tool.shipped_gallery(), "run `python tools/results.py`"
    assert '](images/shipped.jpg)' in index_markdown()


def test_each_lesson_opens_in_colab_from_its_own_badge(lessons, pyproject):
    "Near its top, below the title, every lesson has the Colab badge that opens that very notebook."
    for nb_path in lessons:
        mds = [source(c) for c in read_json(nb_path)['cells'] if c['cell_type'] == 'markdown']
        assert f"(https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(pyproject, nb_path.name)})" in mds[1], \
            f"{nb_path.name}: the markdown cell after the title must start with its Colab badge"


BUILD_TALK = ('build machine', 'build folder', 'seed report', 'shared with other', 'shared/data',
              'site-packages', '/work/')   # the last two: a stored warning that shows where the run's Python lived

def test_lessons_do_not_speak_of_how_the_course_is_built():
    "A student does not know the machines or folders the course was built on: no lesson, README or CONTRIBUTING names them, in prose or in stored outputs."
    for path in ALL_NBS + [ROOT / 'README.md', ROOT / 'CONTRIBUTING.md']:
        text = path.read_text().lower()
        found = [phrase for phrase in BUILD_TALK if phrase in text]
        assert not found, f"{path.name} speaks of how the course is built: {found}"
