"""Speed runs of architectures the speaker has no trained weights for: a speaker's components
re-initialised from their configurations, and its refiner at another scale. How long a network
takes does not depend on its weights, so ``bench/speed.py`` and ``bench/live.py`` time, e.g., a
512² refiner (×8) that was never trained, or a checkpoint copied without some of its weights;
their JSON names what was re-initialised."""

from __future__ import annotations

import argparse


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--random-weights", default="",
                        help="components to time with random weights of their configuration, comma-separated "
                             "(e.g. speech_to_latent,unet); speed only")
    parser.add_argument("--untrained-refiner-scale", type=int,
                        help="time a refiner of the speaker's configuration at this scale (8: 64² → 512²) with "
                             "random weights; speed only")


def reinitialise(pipe, random_weights: str = "", refiner_scale: int | None = None) -> dict:
    """Replace ``pipe``'s components named in ``random_weights`` (comma-separated) by freshly
    initialised ones of the same configuration, and with ``refiner_scale`` its refiner (and live
    refiner) by one at that scale; returns what was replaced, for the results JSON (empty when nothing was)."""
    names = [n for n in random_weights.split(",") if n]
    for name in names:
        part = getattr(pipe, name, None)
        if part is None:
            raise SystemExit(f"--random-weights: the speaker has no {name!r} component")
        pipe.register_modules(**{name: type(part).from_config(part.config)})
    replaced = {"random_weights": names} if names else {}
    if refiner_scale:
        if pipe.refiner is None:
            raise SystemExit("--untrained-refiner-scale: the speaker has no refiner to take the configuration of")
        pipe.register_modules(refiner=type(pipe.refiner).from_config(pipe.refiner.config, scale=refiner_scale))
        replaced["untrained_refiner"] = {"scale": refiner_scale, "resolution": pipe.refiner.out_resolution}
        if getattr(pipe, "live_refiner", None) is not None:  # it renders the refiner's size
            pipe.register_modules(live_refiner=type(pipe.live_refiner).from_config(pipe.live_refiner.config,
                                                                                   scale=refiner_scale))
            replaced["untrained_refiner"]["live_refiner_too"] = True
    return replaced
