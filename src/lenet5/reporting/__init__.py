"""Stage 4, reporting: figures (:mod:`.viz`), the HTML report and the layer summary."""
