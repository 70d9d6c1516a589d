"""Matplotlib figures and ipywidgets explorers the notebooks show.

Each explorer is a plain ``update(...)`` function that draws a figure (tests call it directly) plus a
thin ipywidgets layer, so CI needs no browser front end. One module per topic:
``toy`` (notebook 01), ``koopman_control`` (02), ``schematic``, ``symmetry`` and ``symmetry_explorer`` (03),
``rl`` (04, 05).
"""
