"""What a detector costs where it is deployed: latency measured at batch 1 (:mod:`raytrain.deploy.latency`), and
parameters and GFLOPs counted by torch (:mod:`raytrain.deploy.profile`). Nothing is imported here."""
