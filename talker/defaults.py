"""Generation defaults shared by the pipeline, the CLI and the demo (a light module: no torch)."""

DEFAULT_STEPS = 20  # denoising steps per frame (DAE-Talker: 100)
PRECISIONS = ("auto", "float32", "bfloat16")  # the decoder's compute type (talker.pipelines.ddim)
