"""Sphinx configuration of the course's website, built by ``make book`` (tools/book.py).

tools/book.py copies the notebooks and an index page made from README.md into a staging folder and runs Sphinx there
with this folder as the configuration; how the notebooks are executed (myst-nb's ``nb_execution_mode``, its cache)
is set on that command line, so this file holds only what every build shares.
"""

project = "kfc-lite"
author = "kfc-lite contributors"
copyright = "kfc-lite contributors"
html_title = "kfc-lite: a hands-on course on Koopman Q-learning"
html_short_title = "kfc-lite"

extensions = ["myst_nb"]
# the notebooks' prose writes maths between $...$ and $$...$$
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# only the index page and the notebooks: an executed notebook leaves run folders and data beside it
include_patterns = ["index.md", "*.ipynb"]
exclude_patterns = ["**/.ipynb_checkpoints"]

# a cell that raises stops the build: a page must show what the notebook does, not a traceback
nb_execution_raise_on_error = True
nb_execution_show_tb = True
# seconds a cell may run: tools/book.py sets it by mode (quick-mode cells take seconds, a full-mode training cell
# hours); this is the limit of a build started without it
nb_execution_timeout = 300
nb_merge_streams = True
# solution cells are tagged hide-input by tools/book.py: their code folds away under this label
nb_code_prompt_show = "Show the code"
nb_code_prompt_hide = "Hide the code"

html_theme = "alabaster"
html_theme_options = {
    "description": "Koopman operators, symmetries of dynamics and offline RL, one notebook at a time",
    "page_width": "1180px",
    "sidebar_width": "250px",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
html_show_sourcelink = False
