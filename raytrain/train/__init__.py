"""One training run: ``plan`` (driver side: resolve config, devices, data, run folder, once), ``fit`` (``raytrain.fit``
and ``raytrain fit``: the Ray Train trainer) and ``worker`` (the thin Ray Train adapter around the Ray-free loop in
:mod:`raytrain.engine.loop`). Nothing is imported until used."""
