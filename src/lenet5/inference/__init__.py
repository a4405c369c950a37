"""Stage 3, inference: one front door for models (:mod:`.load`), evaluation, prediction on
users' images, ONNX export and bundling."""
