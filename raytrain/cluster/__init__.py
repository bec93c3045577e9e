"""Ray at the edges: starting or joining Ray (``local``), storage (``storage``), run-folder sync (``sync``), and every
workaround around Ray's internals (``compat``). Nothing is imported until used."""
