"""``dltrain-export``: a checkpoint's model as one file that reads raw inputs, with the fitted
preprocessing inside the graph (:mod:`dltrain.export.graph`), written in a format other runtimes
load (:mod:`dltrain.export.formats`), checked against dltrain's own outputs
(:mod:`dltrain.export.verify`) and described by ``model.json`` (:mod:`dltrain.export.card`)."""
