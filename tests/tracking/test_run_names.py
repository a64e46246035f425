"""A run's name leads with what makes its numbers differ from a default run; settings that
change no number (where it ran, the cache) are tags, not part of the name."""

from __future__ import annotations

from helpers import compose_app

from ohlora_eval.pipeline import judge
from ohlora_eval.tracking.runs import run_name


def _name(*overrides: str, choices: dict | None = None) -> str:
    from omegaconf import OmegaConf

    cfg = compose_app("config", "/tmp/ohlora-names-unused", *overrides)  # composed, not run
    resolved = OmegaConf.to_container(cfg, resolve=True)
    cutoffs = judge.check_cutoffs(cfg.cutoff)
    return run_name(resolved, int(cfg.sampling.n_vectors), cutoffs, {}, choices)


def test_a_default_run_is_named_by_its_size_and_cutoffs():
    assert _name() == "2000 vectors | eyes0.92 mouth0.88 pose0.88"


def test_the_name_leads_with_what_differs():
    svm = _name("directions.method=svm", "layer=mapping_split2", "sampling.n_vectors=300")
    assert svm == "svm | mapping_split2 | 300 vectors | eyes0.92 mouth0.88 pose0.88"
    one = _name("directions.method=svm", "directions.grouped=false")
    assert one.startswith("svm | one group | 2000 vectors")
    real = _name("experiment=real_faces", choices={"experiment": "real_faces"})
    assert real.startswith("real_faces | dcgan_digiface | dlib_landmarks | ")
    published = _name("measure=as_published", choices={"measure": "as_published"})
    assert published.startswith("measure as_published | 2000 vectors")


def test_where_it_ran_and_the_cache_leave_the_name_alone():
    plain = _name()
    assert _name("cache.enabled=false") == plain
    assert _name("execution=ray") == plain
