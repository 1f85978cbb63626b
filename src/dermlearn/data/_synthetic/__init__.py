"""The drawing code behind :mod:`dermlearn.data.synthetic` (private; use that module).

* :mod:`.draw` -- colours, smooth noise and drawing primitives (dots, networks, furrows);
* :mod:`.shape` -- a lesion's outline and alpha mask, by class;
* :mod:`.painters` -- a lesion's colours and dermoscopic structures, one painter per class;
* :mod:`.photo` -- one photograph of a lesion: skin, placement, hairs, lighting, vignetting.
"""
